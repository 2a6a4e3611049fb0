"""The early + full wrapper trained under one DP-SGD run: exact per-sample gradients, NaN full labels masked."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from opacus import GradSampleModule, PrivacyEngine
from opacus.validators import ModuleValidator

from fl_client.train import FIELDS, N_INPUTS, Standardizer, fit, multitask_loss, to_dataset
from fl_client.two_mode import (
    PER_MODE,
    TWO_MODE_INPUTS,
    EarlyFullNet,
    mode_dataset,
    two_mode_dataset,
    two_mode_loss,
)
from models.config import InputDims, LossWeightSettings, TrainSettings, build_model, load_model_config
from models.fusion import FusionNet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from model_records import GLOBAL_GROUPS, N_CLINICAL, make_records

GROUPS = [[0, 1], [2, 3, 4]]
WEIGHTS = LossWeightSettings()


def _small(t: int) -> FusionNet:
    return FusionNet(4, 5, 3, t, groups=GROUPS, stgcn_channels=(8, 16), d_model=8, embed_dim=8, hidden=8, dropout=0.0)


def _net() -> EarlyFullNet:
    torch.manual_seed(0)
    net = EarlyFullNet(_small(2), _small(3))
    for model in (net.early, net.full):  # wide & deep zero-initialises the heads and the wide path: give them
        heads = [model.head_response, model.head_risk, model.head_pseudo, model.wide.linear if model.wide else None]
        for head in heads:  # weights, so every parameter has a non-trivial per-sample gradient to compare
            if head is not None:
                torch.nn.init.normal_(head.weight, std=0.5)
    return net


def _batch(n: int, seed: int = 0) -> list[torch.Tensor]:
    """A two-mode batch: early inputs (T = 2) and labels, then full inputs (T = 3) and labels."""
    g = torch.Generator().manual_seed(seed)
    v, tensors = 7, []
    for t in (2, 3):
        tensors += [torch.randn(n, t, v, 4, generator=g), torch.rand(n, 3, v, v, generator=g),
                    (torch.rand(n, t, v, generator=g) > 0.2).float(),
                    torch.tensor([-7.0, 62.0, 104.0])[:t].expand(n, t).clone(), torch.randn(n, t, 5, generator=g),
                    torch.randn(n, 3, generator=g)]
        tensors += [torch.randint(0, 2, (n,), generator=g).float(), torch.rand(n, generator=g) * 300,
                    torch.randint(0, 2, (n,), generator=g).float(), torch.zeros(n), torch.zeros(n, dtype=torch.bool)]
    return tensors


def _objective(outputs: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]) -> torch.Tensor:
    # a per-sample-decomposable function of both networks' heads (the Cox term couples samples by design)
    (r1, k1, p1), (r2, k2, p2) = outputs
    return (r1 - 0.5 * k1**2 + torch.tanh(p1) + 2.0 * r2 + k2 - p2**2).sum()


def test_opacus_accepts_the_wrapper() -> None:
    net = _net()
    assert ModuleValidator.validate(net, strict=False) == []
    assert list(net.buffers()) == []
    assert {name.split(".")[0] for name, _ in net.named_parameters()} == {"early", "full"}


def test_per_sample_gradients_equal_one_at_a_time() -> None:
    net = _net()
    reference = copy.deepcopy(net)
    batch = _batch(4)[:TWO_MODE_INPUTS]
    wrapped = GradSampleModule(net, batch_first=True, loss_reduction="sum")
    wrapped.train()
    _objective(wrapped(*batch)).backward()
    reference.train()
    for i in range(4):
        reference.zero_grad()
        _objective(reference(*[tensor[i : i + 1] for tensor in batch])).backward()
        for (name, p_batch), p_ref in zip(net.named_parameters(), reference.parameters(), strict=True):
            assert p_batch.grad_sample is not None, name
            torch.testing.assert_close(p_batch.grad_sample[i], p_ref.grad, rtol=1e-4, atol=1e-5, msg=name)
    nonzero = [n for n, p in net.named_parameters() if p.grad_sample is not None and p.grad_sample.abs().max() > 0]
    assert len(nonzero) == len(list(net.parameters())), "a parameter with all-zero per-sample gradients proves nothing"


def test_loss_is_both_modes_and_masks_unknown_full_labels() -> None:
    net = _net()
    batch = _batch(6, seed=3)
    outputs = net(*batch[:TWO_MODE_INPUTS])
    both = two_mode_loss(outputs, batch, WEIGHTS)
    separate = multitask_loss(outputs[0], batch[:PER_MODE], WEIGHTS) + multitask_loss(outputs[1], batch[PER_MODE:],
                                                                                     WEIGHTS)
    torch.testing.assert_close(both, separate)
    unknown = [t.clone() for t in batch]
    unknown[PER_MODE + N_INPUTS][:3] = float("nan")  # full responder label unknown for three patients
    masked = two_mode_loss(outputs, unknown, WEIGHTS)
    assert torch.isfinite(masked)
    kept = [t[3:] for t in batch]  # the responder term of the other three is averaged over them only
    response = torch.nn.functional.binary_cross_entropy_with_logits(outputs[1].response[3:], kept[PER_MODE + N_INPUTS])
    original = torch.nn.functional.binary_cross_entropy_with_logits(outputs[1].response, batch[PER_MODE + N_INPUTS])
    torch.testing.assert_close(masked - both, WEIGHTS.response * (response - original))
    masked.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    with pytest.raises(ValueError, match="takes 17 tensors"):
        net(*batch[:N_INPUTS])


@pytest.mark.slow
def test_one_dp_sgd_run_trains_both_networks() -> None:
    records = make_records(24, seed=2, sites=1)
    for r in records[:6]:
        r.responder["full"] = float("nan")
    config = load_model_config(Path(__file__).resolve().parents[2] / "configs" / "model.yaml")
    scalers = {mode: Standardizer.fit(records, mode) for mode in ("early", "full")}
    dataset = two_mode_dataset(records, 16, scalers)
    assert len(dataset.tensors) == 2 * len(FIELDS) and len(dataset) == 24
    assert torch.equal(mode_dataset(dataset, "full").tensors[0], to_dataset(records, "full", 16, scalers["full"])
                       .tensors[0])
    dims = InputDims.from_group_names(int(records[0].graph.x.shape[-1]), GLOBAL_GROUPS, N_CLINICAL)
    torch.manual_seed(0)
    net = EarlyFullNet(build_model("fusion", 2, dims, config.model), build_model("fusion", 3, dims, config.model))
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    engine = PrivacyEngine(accountant="prv")
    trained, losses = fit(net, dataset, TrainSettings(epochs=1, batch_size=8), torch.device("cpu"),
                          torch.Generator().manual_seed(1), engine, noise_multiplier=1.0, max_grad_norm=1.0,
                          loss_fn=two_mode_loss, n_inputs=TWO_MODE_INPUTS)
    assert len(losses) == 1 and torch.isfinite(torch.tensor(losses[0]))
    moved = {name.split(".")[0] for name, p in net.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert moved == {"early", "full"}
    assert len(engine.accountant.history) == 1  # one mechanism for both modes: the budget is spent once
    assert trained is not net


def test_a_patient_without_t2_teaches_the_full_network_nothing() -> None:
    records = make_records(4, seed=1)
    records[0].n_scans, records[0].responder["full"], records[0].pfs_event = 2, float("nan"), True
    records[0].pseudo = 1.0
    scalers = {m: Standardizer.fit(records, m) for m in ("early", "full")}
    data = two_mode_dataset(records, 12, scalers)
    full = data.tensors[PER_MODE:]
    assert full[FIELDS.index("pfs_event")][0] == 0 and not full[FIELDS.index("pseudo_mask")][0]
    assert data.tensors[FIELDS.index("pseudo_mask")][0]  # the early network still learns the T1 task
