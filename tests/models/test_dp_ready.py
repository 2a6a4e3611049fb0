"""DP-readiness (DOMAIN.md §9): Opacus accepts the networks and its per-sample gradients are exact."""

from __future__ import annotations

import copy

import pytest
import torch
from opacus import GradSampleModule
from opacus.grad_sample.gsm_exp_weights import GradSampleModuleExpandedWeights
from opacus.validators import ModuleValidator

from models.decomposition import DecompositionTransformer
from models.exceptions import ModelConfigError
from models.fusion import BRANCHES, FusionNet
from models.stgcn import STGCN, TemporalConv

GROUPS = [[0, 1], [2, 3, 4]]


def _inputs(batch: int, t: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    v = 7
    x = torch.randn(batch, t, v, 4, generator=g)
    adjacency = torch.rand(batch, 3, v, v, generator=g)
    node_valid = (torch.rand(batch, t, v, generator=g) > 0.2).float()
    days = torch.tensor([-7.0, 62.0, 104.0])[:t].expand(batch, t) + torch.randint(0, 5, (batch, 1), generator=g)
    globals_ = torch.randn(batch, t, 5, generator=g)
    clinical = torch.randn(batch, 3, generator=g)
    return x, adjacency, node_valid, days, globals_, clinical


def _fusion(t: int, branches: tuple[str, ...] = BRANCHES) -> FusionNet:
    torch.manual_seed(0)
    model = FusionNet(4, 5, 3, t, branches=branches, groups=GROUPS, stgcn_channels=(8, 16), d_model=8, embed_dim=8,
                      hidden=8, dropout=0.0)
    heads = [model.head_response, model.head_risk, model.head_pseudo, model.wide.linear if model.wide else None]
    for head in heads:
        if head is not None:  # wide & deep zero-initialises the heads and the wide path: give them weights
            torch.nn.init.normal_(head.weight, std=0.5)  # so every parameter has a non-trivial per-sample gradient
    return model


def _objective(outputs: FusionNet | tuple[torch.Tensor, ...]) -> torch.Tensor:
    # a per-sample-decomposable function of all three heads
    response, risk, pseudo = outputs  # type: ignore[misc]
    return (response + 0.5 * risk**2 - torch.tanh(pseudo)).sum()


@pytest.mark.parametrize("t", [2, 3])
def test_opacus_validator_finds_nothing_to_fix(t: int) -> None:
    model = _fusion(t)
    assert ModuleValidator.validate(model, strict=False) == []
    assert list(model.buffers()) == []  # fixed adjacency is an input, never a buffer


#: Opacus' hooks (CUDA, under autocast) and PyTorch's expanded weights (fp32 steps): fl_client.dp_sgd.
ENGINES = {"hooks": GradSampleModule, "ew": GradSampleModuleExpandedWeights}


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize(("t", "branches"), [(2, BRANCHES), (3, BRANCHES), (2, ("wide",)), (3, ("wide",))])
def test_per_sample_gradients_equal_one_at_a_time(t: int, branches: tuple[str, ...], engine: str) -> None:
    model = _fusion(t, branches)
    reference = copy.deepcopy(model)
    inputs = _inputs(4, t)
    wrapped = ENGINES[engine](model, batch_first=True, loss_reduction="sum")
    wrapped.train()
    _objective(wrapped(*inputs)).backward()
    reference.train()
    for i in range(4):
        reference.zero_grad()
        _objective(reference(*[tensor[i : i + 1] for tensor in inputs])).backward()
        for (name, p_batch), p_ref in zip(model.named_parameters(), reference.parameters(), strict=True):
            assert p_batch.grad_sample is not None, name
            torch.testing.assert_close(p_batch.grad_sample[i], p_ref.grad, rtol=1e-4, atol=1e-5, msg=name)
    for name, p in model.named_parameters():  # every parameter, the wide path's included, was really tested
        assert p.grad_sample.abs().sum() > 0, name


def test_sample_gradients_do_not_depend_on_other_samples() -> None:
    """Changing patient 1 must not change patient 0's per-sample gradient (no cross-sample mixing)."""
    model = _fusion(3)
    inputs = _inputs(3, 3)
    grads = []
    for variant in range(2):
        changed = [tensor.clone() for tensor in inputs]
        if variant:
            changed[0][1] += 5.0
            changed[4][1] -= 3.0
        wrapped = GradSampleModule(copy.deepcopy(model), batch_first=True, loss_reduction="sum")
        wrapped.train()
        _objective(wrapped(*changed)).backward()
        grads.append([p.grad_sample[0].clone() for p in wrapped._module.parameters()])
        wrapped._close()
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: STGCN(4, 3, channels=(8,), embed_dim=4, dropout=0.0),
        lambda: DecompositionTransformer(5, 3, GROUPS, d_model=8, embed_dim=4, dropout=0.0),
    ],
)
def test_branches_have_no_batchnorm_or_buffers(factory) -> None:  # type: ignore[no-untyped-def]
    model = factory()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert not any(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules())
    assert list(model.buffers()) == []


@pytest.mark.parametrize("t", [1, 2, 3])
def test_temporal_conv_is_the_conv2d_it_replaces(t: int) -> None:
    """Same function as ``Conv2d(c, c', (3, 1), padding=(1, 0))`` on (B, C, T, V), and the same seeded start."""
    torch.manual_seed(5)
    conv = torch.nn.Conv2d(6, 4, kernel_size=(3, 1), padding=(1, 0))
    after_conv = torch.rand(3)
    torch.manual_seed(5)
    temporal = TemporalConv(6, 4)
    after_temporal = torch.rand(3)
    h = torch.randn(2, t, 7, 6)
    expected = conv(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(temporal(h), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(after_temporal, after_conv)  # the same random draws were consumed
    # by hand at t = 0: the zero-padded previous scan drops out
    w = conv.weight[..., 0]  # (C_out, C_in, 3)
    by_hand = conv.bias + h[:, 0] @ w[:, :, 1].T + (h[:, 1] @ w[:, :, 2].T if t > 1 else 0.0)
    torch.testing.assert_close(temporal(h)[:, 0], by_hand, rtol=1e-5, atol=1e-6)


def test_temporal_conv_wants_an_odd_kernel() -> None:
    with pytest.raises(ModelConfigError, match="kernel_t must be odd"):
        TemporalConv(4, 4, kernel_t=2)
