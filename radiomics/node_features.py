"""Node features of the sub-region graph, in one batched pass over all nodes × time points.

Columns (:data:`NODE_FEATURES`): an empty-node flag, the node volume relative to the T0 tumour, ten IBSI
first-order statistics computed here in torch (segment sums with ``index_add_``, percentiles from one
segment-wise sort), and three IBSI GLCM features (3-D, merged) from :mod:`radiomics.texture`, batched
over the V node masks of each scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from radiomics.exceptions import GeometryMismatchError, MaskOutsideImageError, NonCTIntensityError
from radiomics.preprocess import CT_MAX_HU, CT_MIN_HU, PADDING_HU
from radiomics.subregions import (
    Partition,
    SubregionError,
    SubregionSpec,
    TumourFrame,
    partition_tumour,
    tumour_frame,
)
from radiomics.texture.glcm import glcm_features

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
    "cm_joint_entr",  # GLCM joint entropy [TU9B], 3-D merged, bits
    "cm_contrast",  # GLCM contrast [ACUI], 3-D merged
    "cm_inv_diff_norm",  # GLCM normalised inverse difference [IB1Z], 3-D merged
)
N_FIRST_ORDER = 10
#: radiomics.texture tags of the texture columns (3-D, merged over the 13 directions: robust for small nodes).
TEXTURE_TAGS = ("cm_joint_entr_3D_comb", "cm_contrast_3D_comb", "cm_inv_diff_norm_3D_comb")
#: Texture discretisation: fixed bin size 25 HU from -1000 HU, intensities clipped to [-1000, 400] HU.
TEXTURE_RANGE_HU = (-1000.0, 400.0)
TEXTURE_BIN_HU = 25.0
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


def _node_boxes(labels: torch.Tensor, usable: torch.Tensor, n_nodes: int) -> tuple[list[tuple[slice, ...]], list[int]]:
    """Bounding box of every node's usable voxels (empty box for an empty node) and their common size."""
    idx = torch.nonzero(usable)
    lab = labels[usable]
    lo = torch.full((n_nodes, 3), 2**62, dtype=torch.long, device=labels.device)
    hi = torch.full((n_nodes, 3), -1, dtype=torch.long, device=labels.device)
    lo = lo.scatter_reduce(0, lab[:, None].expand(-1, 3), idx, "amin")
    hi = hi.scatter_reduce(0, lab[:, None].expand(-1, 3), idx, "amax")
    present = (hi >= 0).all(1)
    lo, hi = torch.where(present[:, None], lo, 0), torch.where(present[:, None], hi + 1, 0)
    size = (hi - lo).max(0).values.clamp(min=1).tolist()
    boxes = [tuple(slice(int(a), int(b)) for a, b in zip(lo_v, hi_v, strict=True))
             for lo_v, hi_v in zip(lo.tolist(), hi.tolist(), strict=True)]
    return boxes, [int(v) for v in size]


def _node_texture(crop: torch.Tensor, labels: torch.Tensor, usable: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """GLCM features (:data:`TEXTURE_TAGS`) of every node of one scan, shape (V, 3); 0 where undefined.

    Each node is cut to its own bounding box and the boxes are zero-padded to one size, so the batch of
    V dense volumes is a few times the crop rather than V times it.
    """
    lo, hi = TEXTURE_RANGE_HU
    levels = ((crop.clamp(lo, hi) - lo) / TEXTURE_BIN_HU).floor().long() + 1
    n_levels = int((hi - lo) // TEXTURE_BIN_HU) + 1
    boxes, size = _node_boxes(labels, usable, n_nodes)
    batch_levels = torch.ones((n_nodes, *size), dtype=torch.long, device=crop.device)
    batch_masks = torch.zeros((n_nodes, *size), dtype=torch.bool, device=crop.device)
    for v, box in enumerate(boxes):
        shape = tuple(b.stop - b.start for b in box)
        if 0 in shape:
            continue
        inner = tuple(slice(0, n) for n in shape)
        batch_levels[v][inner] = levels[box]
        batch_masks[v][inner] = (labels[box] == v) & usable[box]
    feats = glcm_features(batch_levels, batch_masks, n_levels, dims="3D")
    out = torch.stack([feats[tag].to(torch.float32) for tag in TEXTURE_TAGS], dim=1)
    return torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _gather(
    tp: TimePointImage, part: Partition, t: int, spec: SubregionSpec, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HU values and segment ids (t·V + node) of the partitioned voxels of one scan, and node texture (V, 3).

    Peritumoral voxels at the scanner's padding value (outside the reconstructed field of view) are left
    out of their ring; a tumour voxel there is an error (the mask lies outside the image).
    """
    ct = _to_tensor(tp.ct, device)
    if tuple(ct.shape) != tuple(np.shape(tp.mask)) or ct.ndim != 3:
        raise GeometryMismatchError(
            f"time point {t}: CT shape {tuple(ct.shape)} differs from mask shape {tuple(np.shape(tp.mask))}; "
            "resample the mask onto the CT grid first"
        )
    texture = torch.zeros((spec.n_nodes, len(TEXTURE_TAGS)), device=device)
    if part.vanished:
        empty = torch.zeros(0, device=device)
        return empty, empty.long(), texture
    labels = torch.as_tensor(part.labels, device=device)
    crop = ct[part.crop].double() if device.type == "cpu" else ct[part.crop].float()
    usable = (labels >= 0) & (crop > PADDING_HU)
    tumour_on_padding = (labels >= 0) & (labels < spec.n_shells * spec.n_sectors) & ~usable
    if bool(tumour_on_padding.any()):
        raise MaskOutsideImageError(
            f"time point {t}: {int(tumour_on_padding.sum())} tumour voxels lie on the scanner's padding "
            f"(≤ {PADDING_HU:g} HU), outside the reconstructed field of view; crop the mask to the image"
        )
    vals, lab = crop[usable], labels[usable]
    _check_ct(vals, f"time point {t}")
    if vals.numel():
        texture = _node_texture(crop, labels, usable, spec.n_nodes)
    return vals, lab + t * spec.n_nodes, texture


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
    texture = torch.stack([g[2] for g in gathered])  # (T, V, 3)
    counts = torch.bincount(seg, minlength=T * V).reshape(T, V)  # after dropping padding voxels
    vox = torch.as_tensor([p.voxel_volume_mm3 for p in parts], device=device, dtype=torch.float32)
    t0_volume = parts[0].tumour_voxels * parts[0].voxel_volume_mm3
    ratio = counts.float() * vox[:, None] / t0_volume
    valid = counts >= spec.min_voxels
    x = torch.cat([(~valid).float()[..., None], ratio[..., None], stats, texture], dim=-1)
    x = torch.where(valid[..., None], x, torch.zeros_like(x))
    x[..., 0] = (~valid).float()
    return x, valid, parts, frame

