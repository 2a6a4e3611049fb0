"""Fusion network: output shapes per branch set and mode, early mode blind to T2, and the wide & deep sum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_records import make_records

from models.batching import densify
from models.config import InputDims, NetworkSettings, build_model
from models.exceptions import ModelConfigError
from models.fusion import FusionNet


def _randomize_deep_heads(model: FusionNet) -> FusionNet:
    """Wide & deep starts with zero deep heads; give them weights so gradients reach the deep branches."""
    torch.manual_seed(1)
    for head in (model.head_response, model.head_risk, model.head_pseudo):
        assert head is not None
        torch.nn.init.normal_(head.weight, std=0.5)
    return model


def _batch(t: int, n: int = 5) -> tuple[torch.Tensor, ...]:
    records = make_records(n, seed=3)
    dense = densify([r.graph for r in records], t, 12)
    globals_ = torch.stack([r.globals_[:t] for r in records])
    clinical = torch.stack([r.clinical for r in records])
    return dense.x, dense.adjacency, dense.node_valid, dense.days, globals_, clinical


@pytest.mark.parametrize(
    ("branches", "t"),
    [(("stgcn", "transformer", "clinical"), 2), (("stgcn", "transformer", "clinical"), 3), (("stgcn",), 3),
     (("transformer",), 2), (("clinical",), 3), (("wide",), 2), (("wide",), 3), (("stgcn", "wide"), 3)],
)
def test_heads_have_one_value_per_patient(branches: tuple[str, ...], t: int) -> None:
    model = FusionNet(6, 9, 5, t, branches=branches).eval()
    out = model(*_batch(t))
    for value in out:
        assert value.shape == (5,) and torch.isfinite(value).all()
    assert model.branches == tuple(b for b in ("stgcn", "transformer", "clinical", "wide") if b in branches)


def test_unknown_branch_is_rejected() -> None:
    with pytest.raises(ModelConfigError, match="'cnn'"):
        FusionNet(6, 9, 5, 3, branches=("cnn",))


def test_full_mode_uses_t2_and_early_mode_cannot() -> None:
    """Gradient of the outputs w.r.t. T2 inputs is nonzero in full mode; early inputs have no T2 slot."""
    x, adjacency, node_valid, days, globals_, clinical = _batch(3)
    x.requires_grad_(True)
    globals_.requires_grad_(True)
    model = _randomize_deep_heads(FusionNet(6, 9, 5, 3)).eval()
    out = model(x, adjacency, node_valid, days, globals_, clinical)
    (out.response.sum()).backward()
    assert x.grad is not None and globals_.grad is not None
    assert x.grad[:, 2].abs().sum() > 0 and globals_.grad[:, 2].abs().sum() > 0
    early = _batch(2)
    assert early[0].shape[1] == 2 and early[4].shape[1] == 2


def test_wide_and_deep_starts_as_its_linear_path() -> None:
    """Deep heads start at zero: the untrained fusion model's outputs are exactly the wide path's."""
    batch = _batch(2)
    model = FusionNet(6, 9, 5, 2).eval()
    assert model.wide is not None
    torch.nn.init.normal_(model.wide.linear.weight)  # (the wide path itself starts at zero too)
    out = model(*batch)
    wide = model.wide(batch[4], batch[3], batch[5], batch[0], batch[2])
    torch.testing.assert_close(torch.stack(list(out), dim=-1), wide)
    deep_only = FusionNet(6, 9, 5, 2, branches=("stgcn", "transformer", "clinical")).eval()
    assert deep_only.wide is None and deep_only(*batch).response.abs().sum() > 0  # plain init without a wide path


@pytest.mark.parametrize("t", [2, 3])
def test_wide_path_is_a_linear_model_of_level_slope_curvature_and_clinical(t: int) -> None:
    """Wide-only outputs = gain · (W [g(t0), slopes per 30 d, curvature of (globals, node means), clinical] + b)."""
    torch.manual_seed(0)
    model = FusionNet(6, 9, 5, t, branches=("wide",), wide_gain=2.5).eval()
    assert model.wide is not None
    torch.nn.init.normal_(model.wide.linear.weight)
    torch.nn.init.normal_(model.wide.linear.bias)
    x, adjacency, node_valid, days, globals_, clinical = _batch(t)
    valid = node_valid.double().numpy()[..., None]
    pooled = (x.double().numpy() * valid).sum(2) / np.maximum(valid.sum(2), 1.0)  # mean over valid sub-regions
    g, d = np.concatenate([globals_.double().numpy(), pooled], axis=-1), days.double().numpy()
    slopes = [(g[:, i + 1] - g[:, i]) / ((d[:, i + 1] - d[:, i]) / 30.0)[:, None] for i in range(t - 1)]
    features = [g[:, 0], *slopes]
    if t == 3:
        features.append(2 * (slopes[1] - slopes[0]) / ((d[:, 2] - d[:, 0]) / 30.0)[:, None])
    design = np.concatenate([*features, clinical.double().numpy()], axis=1)
    weight = model.wide.linear.weight.detach().double().numpy()
    bias = model.wide.linear.bias.detach().double().numpy()
    expected = (design @ weight.T + bias) * 2.5
    out = model(x, adjacency, node_valid, days, globals_, clinical)
    np.testing.assert_allclose(torch.stack(list(out), dim=-1).detach().numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("kind", "has_wide", "deep"), [("fusion", True, True), ("wide", True, False),
                                                        ("deep", False, True), ("stgcn", False, True)])
def test_build_model_kinds(kind: str, has_wide: bool, deep: bool) -> None:
    model = build_model(kind, 2, InputDims.from_group_names(6, ["a"] * 4 + ["b"] * 5, 5), NetworkSettings())
    assert (model.wide is not None) == has_wide and (model.trunk is not None) == deep
    with pytest.raises(ModelConfigError, match="'cnn'"):
        build_model("cnn", 2, InputDims.from_group_names(6, ["a"] * 9, 5), NetworkSettings())


def test_gains_scale_the_two_halves() -> None:
    """fusion = deep_gain · deep heads + wide path; deep_gain is ignored without a wide path (baselines)."""
    batch = _batch(2)
    torch.manual_seed(0)
    plain = _randomize_deep_heads(FusionNet(6, 9, 5, 2, dropout=0.0)).eval()
    assert plain.wide is not None
    torch.nn.init.normal_(plain.wide.linear.weight)
    braked = FusionNet(6, 9, 5, 2, dropout=0.0, deep_gain=0.25).eval()
    braked.load_state_dict(plain.state_dict())
    wide = plain.wide(batch[4], batch[3], batch[5], batch[0], batch[2])
    deep = torch.stack(list(plain(*batch)), dim=-1) - wide
    assert deep.abs().sum() > 0
    torch.testing.assert_close(torch.stack(list(braked(*batch)), dim=-1), 0.25 * deep + wide)
    assert FusionNet(6, 9, 5, 2, branches=("stgcn",), deep_gain=0.25).deep_gain == 1.0
    with pytest.raises(ValueError, match="greater than 0"):
        NetworkSettings(wide_gain=0.0)


@pytest.mark.parametrize(
    ("wide_groups", "expected"),
    [(None, [0, 1, 2, 3, 4, 5, 6, 7, 8]), (("b",), [4, 5, 6, 7, 8]), (("a", "zz"), [0, 1, 2, 3]),
     (("zz",), [0, 1, 2, 3, 4, 5, 6, 7, 8])],  # none present: every column (synthetic records), logged
)
def test_wide_groups_select_the_wide_columns(wide_groups: tuple[str, ...] | None, expected: list[int]) -> None:
    dims = InputDims.from_group_names(6, ["a"] * 4 + ["b"] * 5, 5)
    model = build_model("fusion", 2, dims, NetworkSettings(wide_groups=wide_groups, wide_nodes=False))
    assert model.wide is not None and model.wide.columns == expected and model.wide.node_features == 0
    assert model.wide.linear.in_features == 2 * len(expected) + 5
    torch.nn.init.normal_(model.wide.linear.weight)
    batch = list(_batch(2))
    out = model.wide(batch[4], batch[3], batch[5])
    unused = [c for c in range(9) if c not in expected]
    batch[4][..., unused] += 100.0  # columns outside the wide groups do not reach the wide path
    torch.testing.assert_close(model.wide(batch[4], batch[3], batch[5]), out)


@pytest.mark.parametrize(("columns", "t"), [([0, 4], 2), ([1, 2, 8], 3), (None, 3)])
def test_wide_path_with_pooled_nodes_reads_a_subset_of_global_columns(columns: list[int] | None, t: int) -> None:
    """``wide_nodes`` with chosen columns: the input width counts the chosen columns plus the pooled nodes
    (it used to concatenate every global column and crash on the shape)."""
    model = FusionNet(6, 9, 5, t, branches=("wide",), wide_columns=columns, wide_nodes=True).eval()
    assert model.wide is not None
    slots = 1 + (t - 1) + max(t - 2, 0)
    assert model.wide.linear.in_features == slots * (len(columns or range(9)) + 6) + 5
    torch.nn.init.normal_(model.wide.linear.weight, generator=torch.Generator().manual_seed(0))
    batch = _batch(t)
    out = model(*batch)
    assert out.response.shape == (5,) and torch.isfinite(out.response).all()
    if columns is not None:  # an unread global column cannot move the output
        unread = next(c for c in range(9) if c not in columns)
        shifted = batch[4].clone()
        shifted[..., unread] += 5.0
        again = model(*batch[:4], shifted, batch[5])
        assert torch.allclose(out.response, again.response)
