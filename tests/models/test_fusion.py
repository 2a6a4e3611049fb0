"""Fusion network: output shapes per branch set and mode, and early mode blind to T2."""

from __future__ import annotations

import pytest
import torch
from model_records import make_records

from models.batching import densify
from models.exceptions import ModelConfigError
from models.fusion import FusionNet


def _batch(t: int, n: int = 5) -> tuple[torch.Tensor, ...]:
    records = make_records(n, seed=3)
    dense = densify([r.graph for r in records], t, 12)
    globals_ = torch.stack([r.globals_[:t] for r in records])
    clinical = torch.stack([r.clinical for r in records])
    return dense.x, dense.adjacency, dense.node_valid, dense.days, globals_, clinical


@pytest.mark.parametrize(
    ("branches", "t"),
    [(("stgcn", "transformer", "clinical"), 2), (("stgcn", "transformer", "clinical"), 3), (("stgcn",), 3),
     (("transformer",), 2), (("clinical",), 3)],
)
def test_heads_have_one_value_per_patient(branches: tuple[str, ...], t: int) -> None:
    model = FusionNet(6, 9, 5, t, branches=branches).eval()
    out = model(*_batch(t))
    for value in out:
        assert value.shape == (5,) and torch.isfinite(value).all()
    assert model.branches == tuple(b for b in ("stgcn", "transformer", "clinical") if b in branches)


def test_unknown_branch_is_rejected() -> None:
    with pytest.raises(ModelConfigError, match="'cnn'"):
        FusionNet(6, 9, 5, 3, branches=("cnn",))


def test_full_mode_uses_t2_and_early_mode_cannot() -> None:
    """Gradient of the outputs w.r.t. T2 inputs is nonzero in full mode; early inputs have no T2 slot."""
    x, adjacency, node_valid, days, globals_, clinical = _batch(3)
    x.requires_grad_(True)
    globals_.requires_grad_(True)
    model = FusionNet(6, 9, 5, 3).eval()
    out = model(x, adjacency, node_valid, days, globals_, clinical)
    (out.response.sum()).backward()
    assert x.grad is not None and globals_.grad is not None
    assert x.grad[:, 2].abs().sum() > 0 and globals_.grad[:, 2].abs().sum() > 0
    early = _batch(2)
    assert early[0].shape[1] == 2 and early[4].shape[1] == 2
