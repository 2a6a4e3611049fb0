"""Graph batching: partitions against hand-built cases, padding, and input errors."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Data

from models.batching import densify, partition_adjacency
from models.exceptions import ModelInputError


def _path_graph(t: int = 3, v: int = 3, pos: bool = True) -> Data:
    """Nodes 0–1–2 on a line; node 1 at the centroid."""
    data = Data(
        x=torch.arange(t * v * 2, dtype=torch.float32).reshape(t, v, 2),
        edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]),
        node_valid=torch.ones(t, v, dtype=torch.bool),
        days=torch.tensor([-7.0, 62.0, 104.0])[:t],
        num_nodes=v,
    )
    if pos:
        data.pos = torch.tensor([[-10.0, 0, 0], [0.0, 0, 0], [10.0, 0, 0]])
    return data


def test_spatial_configuration_partition_of_a_path() -> None:
    adj = torch.tensor([[[0.0, 1, 0], [1, 0, 1], [0, 1, 0]]])
    pos = torch.tensor([[[-10.0, 0, 0], [0.0, 0, 0], [10.0, 0, 0]]])
    parts = partition_adjacency(adj, pos, torch.ones(1, 3, dtype=torch.bool))[0]
    support = (parts > 0).int()
    # root: the diagonal; centripetal: an outer node's neighbour is the centre (0→1, 2→1);
    # centrifugal: the centre's neighbours lie farther out (1→0, 1→2)
    assert support[0].tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert support[1].tolist() == [[0, 1, 0], [0, 0, 0], [0, 1, 0]]
    assert support[2].tolist() == [[0, 0, 0], [1, 0, 1], [0, 0, 0]]
    # Λ^{-1/2} A Λ^{-1/2} with Λ = degree over all partitions (incl. self) + 0.001
    deg = torch.tensor([2.0, 3.0, 2.0]) + 1e-3
    assert parts[1, 0, 1].item() == pytest.approx(1 / (deg[0] * deg[1]).sqrt().item(), rel=1e-6)
    assert parts[0, 1, 1].item() == pytest.approx(1 / deg[1].item(), rel=1e-6)


def test_distance_partition_without_positions() -> None:
    dense = densify([_path_graph(pos=False)], 3, 4)
    assert torch.count_nonzero(dense.adjacency[0, 2]) == 0
    assert torch.count_nonzero(dense.adjacency[0, 1]) == 4


def test_densify_pads_and_keeps_node_order() -> None:
    small, big = _path_graph(), _path_graph()
    big.x = torch.randn(3, 5, 2)
    big.node_valid = torch.ones(3, 5, dtype=torch.bool)
    big.node_valid[2, 4] = False
    big.edge_index = torch.tensor([[3, 4], [4, 3]])
    big.pos = torch.randn(5, 3)
    big.num_nodes = 5
    dense = densify([small, big], 3, 6)
    assert dense.x.shape == (2, 3, 6, 2)
    assert dense.adjacency.shape == (2, 3, 6, 6)
    torch.testing.assert_close(dense.x[0, :, :3], small.x)
    torch.testing.assert_close(dense.x[1, :2, :5], big.x[:2])
    assert dense.x[1, 2, 4].abs().sum() == 0  # invalid node zeroed
    assert dense.node_valid[1, 2].tolist() == [1, 1, 1, 1, 0, 0]
    assert dense.adjacency[0, :, 3:].abs().sum() == 0  # padding has no edges
    assert dense.adjacency[1, 1:, 3, 4].sum() > 0 and dense.adjacency[1, 1:, 0, 1].sum() == 0


def test_early_mode_drops_t2_entirely() -> None:
    a, b = _path_graph(), _path_graph()
    b.x[2] = 1e6
    b.node_valid[2] = False
    b.days[2] = 500.0
    da, db = densify([a], 2, 4), densify([b], 2, 4)
    for field in ("x", "adjacency", "node_valid", "days"):
        torch.testing.assert_close(getattr(da, field), getattr(db, field))
    assert da.x.shape[1] == 2


def _bad(kind: str) -> Data:
    data = _path_graph()
    if kind == "x_rank":
        data.x = data.x[0]
    elif kind == "too_few_t":
        data.x, data.node_valid, data.days = data.x[:1], data.node_valid[:1], data.days[:1]
    elif kind == "valid_shape":
        data.node_valid = data.node_valid[:, :2]
    elif kind == "days_order":
        data.days = torch.tensor([62.0, -7.0, 104.0])
    elif kind == "nan":
        data.x[1, 0, 0] = float("nan")
    return data


@pytest.mark.parametrize(
    ("kind", "v_max", "message"),
    [
        ("x_rank", 4, "x must have shape"),
        ("too_few_t", 4, "needs 2 time points"),
        ("valid_shape", 4, "node_valid must have shape"),
        ("days_order", 4, "scan days must increase"),
        ("nan", 4, "NaN"),
        ("ok", 2, "raise model.v_max"),
    ],
)
def test_bad_graphs_are_rejected_with_the_value(kind: str, v_max: int, message: str) -> None:
    with pytest.raises(ModelInputError, match=message):
        densify([_bad(kind)], 2, v_max)


def test_nan_in_invalid_node_is_allowed() -> None:
    data = _path_graph()
    data.x[1, 2] = float("nan")
    data.node_valid[1, 2] = False
    assert torch.isfinite(densify([data], 3, 4).x).all()
