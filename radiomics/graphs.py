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

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch_geometric.data import Data

from radiomics.exceptions import GeometryMismatchError, MaskOutsideImageError, NonCTIntensityError
from radiomics.preprocess import CT_MAX_HU, CT_MIN_HU, PADDING_HU
from radiomics.subregions import (
    Partition,
    SubregionError,
    SubregionSpec,
    TumourFrame,
    node_centroids_mm,
    partition_tumour,
    spatial_edges,
    tumour_frame,
)

log = logging.getLogger(__name__)

GRAPH_FORMAT = "fedresponse.subregion-graphs/1"

# Column order of x[..., f]. IBSI identifiers in brackets (IBSI reference manual, chapter 3).
NODE_FEATURES: tuple[str, ...] = (
    "node_empty",  # 1 when the node has < min_voxels voxels (all other features then 0)
    "node_volume_ratio_t0",  # node volume / tumour volume at T0
    "stat_mean",  # mean [Q4LO], HU
    "stat_median",  # median [Y12H], HU
    "stat_p10",  # 10th percentile [QG58], HU
    "stat_p90",  # 90th percentile [8DWT], HU
    "stat_iqr",  # interquartile range [SALO], HU
    "stat_rmad",  # robust mean absolute deviation [1128], HU
    "stat_skew",  # skewness [KE6F]
    "stat_kurt",  # excess kurtosis [IPH6]
    "ih_entropy",  # intensity histogram entropy [TLU2], fixed bin size 25 HU from -1000 HU, bits
    "ih_uniformity",  # intensity histogram uniformity [BJ5W]
)
N_FIRST_ORDER = len(NODE_FEATURES) - 2



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


@dataclass(frozen=True)
class TimePointImage:
    """One CT scan of the lesion.

    Attributes
    ----------
    ct : array, shape (Z, Y, X)
        Intensities in HU.
    mask : array, shape (Z, Y, X)
        Lesion mask (non-zero = lesion); may be empty when the lesion vanished.
    spacing : (3,) float
        Voxel size in mm along (Z, Y, X).
    day : float
        Study day of the scan (ADY).
    """

    ct: npt.ArrayLike | torch.Tensor
    mask: npt.ArrayLike | torch.Tensor
    spacing: tuple[float, float, float]
    day: float


def _quantile_sorted(sorted_vals: torch.Tensor, starts: torch.Tensor, counts: torch.Tensor, q: float) -> torch.Tensor:
    """Linear-interpolation quantile (numpy's default) of each contiguous sorted segment."""
    pos = (counts - 1).clamp(min=0).to(sorted_vals.dtype) * q
    lo = pos.floor().long()
    hi = torch.minimum(lo + 1, (counts - 1).clamp(min=0))
    frac = pos - lo.to(pos.dtype)
    n = sorted_vals.numel()
    a = sorted_vals[(starts + lo).clamp(max=max(n - 1, 0))]
    b = sorted_vals[(starts + hi).clamp(max=max(n - 1, 0))]
    return a + (b - a) * frac


def _segment_mean(vals: torch.Tensor, seg: torch.Tensor, n_seg: int, counts: torch.Tensor) -> torch.Tensor:
    total = torch.zeros(n_seg, dtype=vals.dtype, device=vals.device).index_add_(0, seg, vals)
    return total / counts.clamp(min=1).to(vals.dtype)


def first_order_features(
    values: torch.Tensor, segment: torch.Tensor, n_segments: int, bin_width: float = 25.0, bin_origin: float = -1000.0
) -> torch.Tensor:
    """IBSI first-order statistics of many voxel sets at once.

    Parameters
    ----------
    values : Tensor, shape (N,)
        Voxel intensities (HU), any float dtype, on any device.
    segment : Tensor of int64, shape (N,)
        Segment (node × time point) of each voxel, in ``[0, n_segments)``.
    n_segments : int
        Number of segments S.
    bin_width, bin_origin : float
        Fixed-bin-size discretisation of the intensity histogram (HU): bin ``floor((v - origin) / width)``,
        values below the origin fall in the first bin.

    Returns
    -------
    Tensor, shape (S, 10)
        Columns ``NODE_FEATURES[2:]``. Empty segments give zeros; a constant segment gives skewness and
        kurtosis 0 (IBSI convention for zero variance).
    """
    vals = values.to(torch.float64 if values.device.type == "cpu" else torch.float32)
    dev, dt = vals.device, vals.dtype
    seg = segment.to(dev)
    counts = torch.bincount(seg, minlength=n_segments)
    mean = _segment_mean(vals, seg, n_segments, counts)
    dev_v = vals - mean[seg]
    m2 = _segment_mean(dev_v**2, seg, n_segments, counts)
    m3 = _segment_mean(dev_v**3, seg, n_segments, counts)
    m4 = _segment_mean(dev_v**4, seg, n_segments, counts)
    flat = m2 <= 1e-12 * (1.0 + mean.abs()) ** 2
    skew = torch.where(flat, torch.zeros_like(m2), m3 / m2.clamp(min=1e-30) ** 1.5)
    kurt = torch.where(flat, torch.zeros_like(m2), m4 / m2.clamp(min=1e-30) ** 2 - 3.0)
    # Sort by value, then stably by segment: every segment is a contiguous run of ascending values.
    order = torch.argsort(vals, stable=True)
    order = order[torch.argsort(seg[order], stable=True)]
    sorted_vals = vals[order]
    starts = torch.cumsum(counts, 0) - counts
    p10, p25, p50, p75, p90 = (_quantile_sorted(sorted_vals, starts, counts, q) for q in (0.1, 0.25, 0.5, 0.75, 0.9))
    inside = (vals >= p10[seg]) & (vals <= p90[seg])
    n_in = torch.bincount(seg[inside], minlength=n_segments)
    mean_in = _segment_mean(vals[inside], seg[inside], n_segments, n_in)
    rmad = _segment_mean((vals[inside] - mean_in[seg[inside]]).abs(), seg[inside], n_segments, n_in)
    bins = ((vals - bin_origin) / bin_width).floor().clamp(min=0).long()
    n_bins = int(bins.max().item()) + 1 if bins.numel() else 1
    hist = torch.bincount(seg * n_bins + bins, minlength=n_segments * n_bins).reshape(n_segments, n_bins).to(dt)
    p = hist / counts.clamp(min=1).to(dt)[:, None]
    entropy = -(torch.where(p > 0, p * torch.log2(p.clamp(min=1e-300)), torch.zeros_like(p))).sum(dim=1)
    uniformity = (p**2).sum(dim=1)
    out = torch.stack([mean, p50, p10, p90, p75 - p25, rmad, skew, kurt, entropy, uniformity], dim=1)
    return torch.where((counts > 0)[:, None], out, torch.zeros_like(out)).to(torch.float32)


def _to_tensor(a: npt.ArrayLike | torch.Tensor, device: torch.device) -> torch.Tensor:
    return (a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))).to(device)


def _check_ct(values: torch.Tensor, where: str) -> None:
    if values.numel() == 0:
        return
    lo, hi = float(values.min()), float(values.max())
    if lo < CT_MIN_HU or hi > CT_MAX_HU:
        raise NonCTIntensityError(
            f"{where}: intensities {lo:.1f}..{hi:.1f} around the tumour lie outside plausible CT [{CT_MIN_HU:g}, "
            f"{CT_MAX_HU:g}] HU; pass the image in Hounsfield units (RescaleSlope/RescaleIntercept applied, "
            "padding values masked)"
        )
    if values.numel() > 50 and hi - lo < 10.0:
        raise NonCTIntensityError(
            f"{where}: intensities span only {lo:.3f}..{hi:.3f} around the tumour; this looks like a normalised "
            "image, not CT in HU — pass the unnormalised HU volume"
        )


def _gather(
    tp: TimePointImage, part: Partition, t: int, spec: SubregionSpec, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """HU values and segment ids (t·V + node) of the partitioned voxels of one scan.

    Peritumoral voxels at the scanner's padding value (outside the reconstructed field of view) are left
    out of their ring; a tumour voxel there is an error (the mask lies outside the image).
    """
    ct = _to_tensor(tp.ct, device)
    if tuple(ct.shape) != tuple(np.shape(tp.mask)) or ct.ndim != 3:
        raise GeometryMismatchError(
            f"time point {t}: CT shape {tuple(ct.shape)} differs from mask shape {tuple(np.shape(tp.mask))}; "
            "resample the mask onto the CT grid first"
        )
    if part.vanished:
        empty = torch.zeros(0, device=device)
        return empty, empty.long()
    labels = torch.as_tensor(part.labels, device=device)
    crop_vals = ct[part.crop]
    sel = labels >= 0
    vals, lab = crop_vals[sel].double() if device.type == "cpu" else crop_vals[sel].float(), labels[sel]
    padding = vals <= PADDING_HU
    if bool(padding.any()):
        tumour = lab < spec.n_shells * spec.n_sectors
        if bool((padding & tumour).any()):
            raise MaskOutsideImageError(
                f"time point {t}: {int((padding & tumour).sum())} tumour voxels lie on the scanner's padding "
                f"(≤ {PADDING_HU:g} HU), outside the reconstructed field of view; crop the mask to the image"
            )
        vals, lab = vals[~padding], lab[~padding]
    _check_ct(vals, f"time point {t}")
    return vals, lab + t * spec.n_nodes


def node_features(
    series: Sequence[TimePointImage], spec: SubregionSpec, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, list[Partition], TumourFrame]:
    """Partition every time point with the T0 frame and compute all node features in one batched pass.

    Parameters
    ----------
    series : sequence of TimePointImage, length T
        The scans in time order; the first is the reference (T0) and must contain the lesion.
    spec : SubregionSpec
        Node layout (V = ``spec.n_nodes``).
    device : torch.device or str
        Where the features are computed.

    Returns
    -------
    x : Tensor, shape (T, V, F), float32
        Features in :data:`NODE_FEATURES` order, zero rows (with ``node_empty`` = 1) for invalid nodes.
    node_valid : Tensor of bool, shape (T, V)
    partitions : list of Partition, length T
    frame : TumourFrame
        The sector frame fixed at T0.
    """
    device = torch.device(device)
    if not series:
        raise SubregionError("the series holds no time point; pass at least the T0 scan")
    frame = tumour_frame(series[0].mask, series[0].spacing, spec.frame)
    parts = [partition_tumour(tp.mask, tp.spacing, frame, spec) for tp in series]
    T, V = len(series), spec.n_nodes
    gathered = [_gather(tp, part, t, spec, device) for t, (tp, part) in enumerate(zip(series, parts, strict=True))]
    vals = torch.cat([g[0] for g in gathered])
    seg = torch.cat([g[1] for g in gathered])
    stats = first_order_features(vals, seg, T * V).reshape(T, V, N_FIRST_ORDER)
    counts = torch.bincount(seg, minlength=T * V).reshape(T, V)  # after dropping padding voxels
    vox = torch.as_tensor([p.voxel_volume_mm3 for p in parts], device=device, dtype=torch.float32)
    t0_volume = parts[0].tumour_voxels * parts[0].voxel_volume_mm3
    ratio = counts.float() * vox[:, None] / t0_volume
    valid = counts >= spec.min_voxels
    x = torch.cat([(~valid).float()[..., None], ratio[..., None], stats], dim=-1)
    x = torch.where(valid[..., None], x, torch.zeros_like(x))
    x[..., 0] = (~valid).float()
    return x, valid, parts, frame


def build_patient_graph(
    series: Sequence[TimePointImage],
    usubjid: str,
    spec: SubregionSpec | None = None,
    device: torch.device | str = "cpu",
) -> SubregionGraph:
    """Build one patient's :class:`SubregionGraph` (tensors returned on CPU, ready to save)."""
    spec = spec or SubregionSpec()
    x, valid, parts, frame = node_features(series, spec, device)
    pos = node_centroids_mm(parts[0], series[0].spacing, frame, spec)
    days = torch.as_tensor([float(tp.day) for tp in series], dtype=torch.float32)
    if torch.any(days[1:] <= days[:-1]):
        raise SubregionError(f"{usubjid}: scan days must increase over the series, but were {days.tolist()}")
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
