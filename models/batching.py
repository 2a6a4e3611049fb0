"""Graph batching: per-patient sub-region graphs (torch-geometric ``Data``) → dense, padded model inputs.

Input contract (one ``Data`` per patient, written by :mod:`radiomics.graphs`):

- ``x`` : (T, V, F) float — node (sub-region) features per time point,
- ``edge_index`` : (2, E) long — spatial edges over the V nodes (undirected: both directions listed),
- ``node_valid`` : (T, V) bool — False where a sub-region is absent at that time point,
- ``days`` : (T,) float — study day (ADY) of each scan,
- ``pos`` : (V, 3) float, optional — sub-region centroids in mm (enables the spatial partition below).

Why dense and padded: DP-SGD (Opacus) needs the first dimension of every layer input to be the
patient, so that per-sample gradients are per *patient*. torch-geometric's usual batching concatenates
the nodes of all graphs along one axis, which would make every node a "sample". We therefore use
torch-geometric to batch and then densify (:func:`torch_geometric.utils.to_dense_batch`,
:func:`torch_geometric.utils.to_dense_adj`) to ``(N, T, V_max, F)`` with a validity mask, and the
partitioned adjacency to ``(N, K, V_max, V_max)``. The adjacency is *an input*, never a registered
buffer (Opacus' functorch fallback fails on modules with buffers; DOMAIN.md §9).

Partitioned adjacency (Yan et al., AAAI 2018, "spatial configuration partitioning"), K = 3 subsets:
root (the node itself), centripetal neighbours (closer to the tumour centroid than the root) and
centrifugal neighbours (farther away). Without ``pos`` the last two collapse to "distance
partitioning" (all neighbours in subset 1, subset 2 empty). Each subset is normalised as in the paper,
``Λ^{-1/2} A_k Λ^{-1/2}`` with ``Λ_ii = Σ_k Σ_j A_k[i, j] + α``, α = 0.001.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_dense_adj, to_dense_batch

from models.exceptions import ModelInputError

N_PARTITIONS = 3
_ALPHA = 1e-3


@dataclass(frozen=True)
class DenseGraphs:
    """A padded batch of patient graphs.

    Attributes
    ----------
    x : Tensor, shape (N, T, V, F)
        Node features, zero where ``node_valid`` is False or the node is padding.
    adjacency : Tensor, shape (N, K, V, V)
        Normalised partitioned adjacency (K = :data:`N_PARTITIONS`); zero rows/columns for padding.
    node_valid : Tensor, shape (N, T, V), float 0/1
    days : Tensor, shape (N, T)
        Study day (ADY) of each scan.
    """

    x: Tensor
    adjacency: Tensor
    node_valid: Tensor
    days: Tensor


def _check_graph(index: int, data: Data, n_timepoints: int, v_max: int) -> None:
    x = data.x
    if x is None or x.dim() != 3:
        shape = None if x is None else tuple(x.shape)
        raise ModelInputError(f"graph {index}: x must have shape (T, V, F), but had {shape}; see models/batching.py")
    t, v, _ = x.shape
    if t < n_timepoints:
        raise ModelInputError(
            f"graph {index}: needs {n_timepoints} time points, but x has {t}; drop the patient or use early mode"
        )
    if v > v_max:
        raise ModelInputError(f"graph {index}: has {v} nodes, more than v_max={v_max}; raise model.v_max")
    valid = getattr(data, "node_valid", None)
    if valid is None or tuple(valid.shape) != (t, v):
        shape = None if valid is None else tuple(valid.shape)
        raise ModelInputError(f"graph {index}: node_valid must have shape {(t, v)}, but had {shape}")
    days = getattr(data, "days", None)
    if days is None or tuple(days.shape) != (t,):
        raise ModelInputError(f"graph {index}: days must have shape ({t},), but was {days!r}")
    time_valid = getattr(data, "time_valid", None)
    if time_valid is not None and not bool(time_valid[:n_timepoints].all()):
        raise ModelInputError(
            f"graph {index}: time points {time_valid.tolist()} were imaged, but this mode needs the first "
            f"{n_timepoints}; leave the patient out of this mode"
        )
    used_days = days[:n_timepoints]
    if not bool(torch.all(used_days[1:] > used_days[:-1])):
        raise ModelInputError(f"graph {index}: scan days must increase, but were {days.tolist()}; check the visits")
    used = x[:n_timepoints][valid[:n_timepoints].bool()]
    if not bool(torch.isfinite(used).all()):
        raise ModelInputError(f"graph {index}: valid node features contain NaN/inf; fix the featurizer output")


def partition_adjacency(adjacency: Tensor, pos: Tensor | None, present: Tensor) -> Tensor:
    """Split and normalise a dense adjacency into root / centripetal / centrifugal subsets.

    Parameters
    ----------
    adjacency : Tensor, shape (N, V, V)
        0/1 spatial edges (padding rows are zero).
    pos : Tensor, shape (N, V, 3) or None
        Node centroids in mm; None selects distance partitioning (subset 2 empty).
    present : Tensor, shape (N, V), bool
        True for real (non-padding) nodes.

    Returns
    -------
    Tensor, shape (N, 3, V, V)
    """
    adj = (adjacency > 0).float()
    adj = adj * (1.0 - torch.eye(adj.shape[-1], device=adj.device))
    root = torch.diag_embed(present.float())
    if pos is None:
        inward, outward = adj, torch.zeros_like(adj)
    else:
        weights = present.float().unsqueeze(-1)
        centre = (pos * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1.0)
        radius = torch.linalg.vector_norm(pos - centre, dim=-1)  # (N, V)
        closer = (radius.unsqueeze(1) < radius.unsqueeze(2)).float()  # [n, i, j]: r_j < r_i
        inward = adj * closer
        outward = adj - inward
    parts = torch.stack([root, inward, outward], dim=1)  # (N, 3, V, V)
    degree = parts.sum(dim=(1, 3)) + _ALPHA  # (N, V)
    scale = degree.rsqrt()
    return scale[:, None, :, None] * parts * scale[:, None, None, :]


def densify(graphs: list[Data], n_timepoints: int, v_max: int) -> DenseGraphs:
    """Batch patient graphs with torch-geometric and return padded dense tensors.

    Parameters
    ----------
    graphs : list of Data
        One graph per patient (contract in the module docstring).
    n_timepoints : int
        Time points to keep: 2 for early mode (T0, T1), 3 for full mode. Later time points are
        dropped *here*, so nothing downstream can see them (no leakage).
    v_max : int
        Padding size for the node axis.

    Returns
    -------
    DenseGraphs
    """
    if not graphs:
        raise ModelInputError("densify needs at least one graph, but got an empty list")
    for index, data in enumerate(graphs):
        _check_graph(index, data, n_timepoints, v_max)
        if data.x.shape[-1] != graphs[0].x.shape[-1]:
            raise ModelInputError(
                f"graph {index}: has {data.x.shape[-1]} node features, graph 0 has {graphs[0].x.shape[-1]}; "
                "featurize every patient with the same radiomics configuration"
            )
    with_pos = all(getattr(d, "pos", None) is not None for d in graphs)
    node_major = []
    for data in graphs:
        x = data.x[:n_timepoints]
        valid = data.node_valid[:n_timepoints].bool()
        x = torch.where(valid.unsqueeze(-1), x, torch.zeros_like(x)).float()
        t, v, f = x.shape
        flat = torch.cat([x.permute(1, 0, 2).reshape(v, t * f), valid.T.float()], dim=1)
        item = Data(x=flat, edge_index=data.edge_index, num_nodes=v)
        if with_pos:
            item.pos = data.pos.float()
        node_major.append(item)
    batch = Batch.from_data_list(node_major)
    dense, present = to_dense_batch(batch.x, batch.batch, max_num_nodes=v_max)
    adjacency = to_dense_adj(batch.edge_index, batch.batch, max_num_nodes=v_max)
    pos = to_dense_batch(batch.pos, batch.batch, max_num_nodes=v_max)[0] if with_pos else None
    n, f = len(graphs), graphs[0].x.shape[-1]
    features = dense[..., : n_timepoints * f].reshape(n, v_max, n_timepoints, f).permute(0, 2, 1, 3)
    node_valid = dense[..., n_timepoints * f :].permute(0, 2, 1).contiguous()
    days = torch.stack([d.days[:n_timepoints].float() for d in graphs])
    return DenseGraphs(
        x=features.contiguous(),
        adjacency=partition_adjacency(adjacency, pos, present),
        node_valid=node_valid,
        days=days,
    )
