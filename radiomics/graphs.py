"""Sub-region graphs over time: torch-geometric data for the ST-GCN.

One :class:`SubregionGraph` per patient (one lesion, usually the largest target lesion):

=================  =============  ===========================================================
attribute          shape / type   meaning
=================  =============  ===========================================================
``x``              (T, V, F) f32  node features per time point (see :data:`NODE_FEATURES`)
``edge_index``     (2, E) int64   spatial edges, identical for every patient and time point
``days``           (T,) f32       study day of each scan (CDISC ADY, day 1 = first dose)
``node_valid``     (T, V) bool    node has ≥ ``min_voxels`` voxels; invalid rows of ``x`` are 0
``pos``            (V, 3) f32     node centroid at T0, mm from the tumour centroid along the frame axes
``time_valid``     (T,) bool      the time point was imaged (``False`` only for padded slots)
``tumour_volume``  (T,) f32       tumour volume in mL (0 when it vanished)
``touches_edge``   (T,) bool      tumour cut by the field of view at that time point
``usubjid``        str            pseudonymous subject id
=================  =============  ===========================================================

Temporal edges join every node to itself at the next time point; they are implicit in the T axis of
``x`` (the ST-GCN convolves along it), and :func:`spatiotemporal_edge_index` spells them out for a
model that wants one flat graph of T·V nodes.

Batching with :class:`torch_geometric.loader.DataLoader` *stacks* every tensor attribute along a new
batch axis (``x`` → (B, T, V, F), ``edge_index`` → (B, 2, E)), so every patient in a batch needs the
same T; :func:`pad_time` pads a short series with invalid slots.

Node features are computed in one batched pass over all nodes × time points, on ``device``
(:func:`node_features`). They are the first-order IBSI statistics computed here in torch; the IBSI
extractor of this package can replace :func:`first_order_features` without changing the graph format.
"""

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import Data

from radiomics.node_features import (
    NODE_FEATURES,
    TimePointImage,
    first_order_features,
    node_features,
)
from radiomics.subregions import (
    SubregionError,
    SubregionSpec,
    node_centroids_mm,
    spatial_edges,
)

__all__ = [
    "GRAPH_FORMAT",
    "NODE_FEATURES",
    "SubregionGraph",
    "TimePointImage",
    "build_patient_graph",
    "first_order_features",
    "load_graphs",
    "node_features",
    "pad_time",
    "save_graphs",
    "spatiotemporal_edge_index",
]

log = logging.getLogger(__name__)

GRAPH_FORMAT = "fedresponse.subregion-graphs/1"


class SubregionGraph(Data):  # type: ignore[misc]
    """A patient's sub-region graph; tensor attributes stack along a new batch axis when collated."""

    def __cat_dim__(self, key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return None
        return super().__cat_dim__(key, value, *args, **kwargs)

    def __inc__(self, key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        if key == "edge_index":
            return 0  # the spatial graph is shared, not a disjoint union
        return super().__inc__(key, value, *args, **kwargs)


def build_patient_graph(
    series: Sequence[TimePointImage],
    usubjid: str,
    spec: SubregionSpec | None = None,
    device: torch.device | str = "cpu",
) -> SubregionGraph:
    """Build one patient's :class:`SubregionGraph` (tensors returned on CPU, ready to save)."""
    spec = spec or SubregionSpec()
    days = torch.as_tensor([float(tp.day) for tp in series], dtype=torch.float32)
    if torch.any(days[1:] <= days[:-1]):
        raise SubregionError(f"{usubjid}: scan days must increase over the series, but were {days.tolist()}")
    x, valid, parts, frame = node_features(series, spec, device)
    pos = node_centroids_mm(parts[0], series[0].spacing, frame, spec)
    return SubregionGraph(
        x=x.cpu(),
        edge_index=torch.as_tensor(spatial_edges(spec)),
        days=days,
        node_valid=valid.cpu(),
        pos=torch.as_tensor(pos, dtype=torch.float32),
        time_valid=torch.ones(len(series), dtype=torch.bool),
        tumour_volume=torch.as_tensor([p.tumour_voxels * p.voxel_volume_mm3 / 1000.0 for p in parts]).float(),
        touches_edge=torch.as_tensor([p.touches_edge for p in parts]),
        usubjid=usubjid,
        num_nodes=spec.n_nodes,
    )


def pad_time(graph: SubregionGraph, n_time: int) -> SubregionGraph:
    """Pad a graph to ``n_time`` time points with invalid slots (zeros, ``time_valid`` False, day = last day)."""
    T = int(graph.x.shape[0])
    if T > n_time:
        raise ValueError(f"cannot pad {graph.usubjid} with T={T} to fewer time points ({n_time})")
    extra = n_time - T

    def pad(t: torch.Tensor, value: float | bool) -> torch.Tensor:
        return torch.cat([t, torch.full((extra, *t.shape[1:]), value, dtype=t.dtype)])

    out = graph.clone()
    out.x = pad(graph.x, 0.0)
    out.x[T:, :, 0] = 1.0
    out.days = pad(graph.days, float(graph.days[-1]))
    out.node_valid = pad(graph.node_valid, False)
    out.time_valid = pad(graph.time_valid, False)
    out.tumour_volume = pad(graph.tumour_volume, 0.0)
    out.touches_edge = pad(graph.touches_edge, False)
    return out


def spatiotemporal_edge_index(edge_index: torch.Tensor, n_nodes: int, n_time: int) -> torch.Tensor:
    """Flat graph over T·V nodes (node ``t * V + v``): spatial edges at each t plus v(t) ↔ v(t+1), shape (2, E')."""
    spatial = torch.cat([edge_index + t * n_nodes for t in range(n_time)], dim=1)
    v = torch.arange(n_nodes)
    temporal = [torch.stack([v + t * n_nodes, v + (t + 1) * n_nodes]) for t in range(n_time - 1)]
    if not temporal:
        return spatial
    fwd = torch.cat(temporal, dim=1)
    return torch.cat([spatial, fwd, fwd.flip(0)], dim=1)


_TENSOR_KEYS = ("x", "days", "node_valid", "pos", "time_valid", "tumour_volume", "touches_edge")


def save_graphs(graphs: Sequence[SubregionGraph], path: Path, spec: SubregionSpec) -> None:
    """Write a site's graphs to one file atomically (temporary file in the same folder, then rename).

    The file holds only tensors, strings and numbers, so :func:`load_graphs` reads it with
    ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    payload = {
        "format": GRAPH_FORMAT,
        "feature_names": list(NODE_FEATURES),
        "node_names": spec.node_names(),
        "spec": {"n_shells": spec.n_shells, "ring_edges_mm": list(spec.ring_edges_mm), "n_sectors": spec.n_sectors,
                 "frame": spec.frame, "min_voxels": spec.min_voxels},
        "edge_index": torch.as_tensor(spatial_edges(spec)),
        "patients": [{"usubjid": g.usubjid, **{k: getattr(g, k) for k in _TENSOR_KEYS}} for g in graphs],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("wrote %d sub-region graphs to %s", len(graphs), path)


def load_graphs(path: Path) -> list[SubregionGraph]:
    """Read graphs written by :func:`save_graphs`; raises ``ValueError`` for any other file."""
    payload = torch.load(Path(path), weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != GRAPH_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a sub-region graph file (format {found!r}, expected {GRAPH_FORMAT!r})")
    edge_index = payload["edge_index"]
    n_nodes = len(payload["node_names"])
    return [
        SubregionGraph(edge_index=edge_index.clone(), num_nodes=n_nodes, usubjid=p["usubjid"],
                       **{k: p[k] for k in _TENSOR_KEYS})
        for p in payload["patients"]
    ]
