"""Tumour habitats: per-voxel local features clustered into sub-populations, and the ITH score.

Following the ITHscore of Li et al. (Eur Radiol 2022; 32:4161-4171): every tumour voxel gets a small
vector of local features, the voxels are clustered into habitats, and heterogeneity is the
fragmentation of the habitat map,

    ITH = 1 − (Σ_i a_i / n_i) / S,

with S the number of tumour voxels, n_i the number of connected regions of habitat i and a_i the size
of its largest region. A tumour made of a few compact habitats scores near 0; a salt-and-pepper mixture
scores near 1.

Our adaptation (documented in ``docs/dhi.md``): the tumour mask is first re-segmented to [-500, 400] HU;
two local features per voxel — the mean and the standard deviation of the tumour voxels in a
``window``³ neighbourhood (5³ by default; masked, so lung outside the tumour does not leak into the rim);
features standardised (the SD down-weighted) and clustered by k-means (k-means++ seeding from an
injected :class:`torch.Generator`, best of ``n_init`` runs) **at T0 only**. Later time points are assigned
to the nearest T0 centroid, so habitat ``i`` means the same tissue at T0, T1 and T2 and composition
changes are comparable. The score itself is the published 2-D one, computed on every axial slice and
pooled (:func:`ith_score`).

Feature computation, k-means, the mixing index and — for a CUDA label map — the connected-region count
of :func:`ith_score` (min-label propagation, :func:`_region_stats_torch`) run on the tensor's device; a
CPU label map uses :func:`scipy.ndimage.label` (a few ms per tumour).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as functional
from scipy import ndimage

from radiomics.exceptions import EmptyMaskError, GeometryMismatchError, SettingsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HabitatSettings:
    """How habitats are found.

    Attributes
    ----------
    n_habitats : int
        Number of k-means clusters K.
    window : int
        Edge of the local neighbourhood in voxels (odd). Resample to a common spacing upstream so that
        the window covers the same millimetres at every time point.
    n_init : int
        k-means restarts; the run with the lowest inertia is kept.
    max_iter : int
        Lloyd iterations per restart.
    connectivity : int
        1 = faces (6-neighbourhood), 2 = faces and edges (18), 3 = 26-neighbourhood.
    texture_weight : float
        Weight of the standardised local SD against the standardised local mean in the k-means distance.
        Interfaces between compartments have a high local SD; at full weight they become a habitat of
        their own and split the compartments less cleanly.
    min_region_voxels : int
        Smallest connected region counted by :func:`ith_score` (1 = the published definition).
    ith_mode : {"slices", "volume"}
        2-D score pooled over axial slices (default, as published but on every slice) or 3-D regions;
        see :func:`ith_score`.
    hu_range : (float, float) or None
        Intensity re-segmentation (IBSI 3.3) of the tumour mask before habitat analysis, in HU. The
        default [-500, 400] is IBSI configuration A's range: it drops partial-volume lung voxels at the
        border, whose share changes with every re-segmentation. ``None`` keeps the mask as drawn.
    max_fit_voxels : int
        k-means is fitted on at most this many T0 voxels drawn at random (then every voxel is assigned);
        bounds the cost for large tumours without changing the centroids materially.
    """

    n_habitats: int = 3
    window: int = 5
    n_init: int = 4
    max_iter: int = 50
    connectivity: int = 1
    max_fit_voxels: int = 4000
    texture_weight: float = 0.25
    min_region_voxels: int = 1
    ith_mode: Literal["slices", "volume"] = "slices"
    hu_range: tuple[float, float] | None = (-500.0, 400.0)

    def __post_init__(self) -> None:
        if self.n_habitats < 2:
            raise SettingsError(f"n_habitats must be at least 2, but was {self.n_habitats!r}")
        if self.window < 1 or self.window % 2 == 0:
            raise SettingsError(f"window must be an odd number of voxels, but was {self.window!r}")
        if not 0.0 <= self.texture_weight <= 10.0 or self.min_region_voxels < 1:
            raise SettingsError(
                f"texture_weight must lie in [0, 10] and min_region_voxels be ≥ 1, but was {self.texture_weight!r}, "
                f"{self.min_region_voxels!r}"
            )
        if self.ith_mode not in ("slices", "volume"):
            raise SettingsError(f"ith_mode must be 'slices' or 'volume', but was {self.ith_mode!r}")
        if self.hu_range is not None and not self.hu_range[0] < self.hu_range[1]:
            raise SettingsError(f"hu_range must be (low, high) with low < high, but was {self.hu_range!r}")
        if self.connectivity not in (1, 2, 3):
            raise SettingsError(f"connectivity must be 1, 2 or 3, but was {self.connectivity!r}")
        if self.n_init < 1 or self.max_iter < 1 or self.max_fit_voxels < self.n_habitats:
            raise SettingsError(
                f"n_init and max_iter must be positive and max_fit_voxels ≥ n_habitats, but were {self.n_init!r}, "
                f"{self.max_iter!r}, {self.max_fit_voxels!r}"
            )


def _check(ct: torch.Tensor, mask: torch.Tensor) -> None:
    if ct.ndim != 3 or ct.shape != mask.shape:
        raise GeometryMismatchError(
            f"CT {tuple(ct.shape)} and mask {tuple(mask.shape)} must be 3-D (Z, Y, X) arrays of the same shape"
        )


def _box_sum(v: torch.Tensor, window: int) -> torch.Tensor:
    """Sum over the ``window``³ neighbourhood (zero outside the array), by separable running sums; same shape."""
    half = window // 2
    for axis in range(3):
        pad = [0, 0] * 3
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = half
        padded = functional.pad(v, pad)
        cs = torch.cumsum(padded, dim=axis)
        cs = torch.cat([torch.zeros_like(cs.narrow(axis, 0, 1)), cs], dim=axis)
        n = v.shape[axis]
        v = cs.narrow(axis, window, n) - cs.narrow(axis, 0, n)
    return v


def local_features(ct: torch.Tensor, mask: torch.Tensor, window: int = 3) -> torch.Tensor:
    """Per-voxel local features of the tumour voxels.

    Parameters
    ----------
    ct : Tensor, shape (Z, Y, X)
        HU values.
    mask : Tensor of bool, shape (Z, Y, X)
        Tumour mask.
    window : int
        Odd neighbourhood edge in voxels.

    Returns
    -------
    Tensor, shape (S, 2), float32
        ``[local mean HU, local standard deviation HU]`` for the S tumour voxels in C order; the
        neighbourhood statistics use tumour voxels only. (The raw voxel value is left out on purpose: it
        is mostly image noise, and it breaks habitats into single-voxel specks.)
    """
    _check(ct, mask)
    m = mask.bool()
    if not bool(m.any()):
        return torch.zeros((0, 2), dtype=torch.float32, device=ct.device)
    idx = torch.nonzero(m)
    lo = (idx.min(0).values - window // 2).clamp(min=0)
    hi = torch.minimum(idx.max(0).values + window // 2 + 1, torch.tensor(m.shape, device=idx.device))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    c, mm = ct[box].double(), m[box].double()
    n = _box_sum(mm, window)
    mean = _box_sum(c * mm, window) / n.clamp(min=1.0)
    var = (_box_sum(c * c * mm, window) / n.clamp(min=1.0) - mean**2).clamp(min=0.0)
    sel = mm.bool()
    return torch.stack([mean[sel], var[sel].sqrt()], dim=1).float()


def _kmeans_pp(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) drawing from ``generator``."""
    first = torch.randint(x.shape[0], (1,), generator=generator, device="cpu").item()
    centres = [x[int(first)]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        weights = d2.double().cpu()
        if float(weights.sum()) <= 0:
            weights = torch.ones_like(weights)
        nxt = int(torch.multinomial(weights, 1, generator=generator).item())
        centres.append(x[nxt])
        d2 = torch.minimum(d2, ((x - x[nxt]) ** 2).sum(1))
    return torch.stack(centres)


def nearest(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre for each row of ``x`` (N, D) → (N,); ‖x‖² is common to all centres."""
    return (x @ centres.T * -2.0 + (centres * centres).sum(1)).argmin(1)


def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, n_init: int = 4, max_iter: int = 50) -> torch.Tensor:
    """Lloyd's k-means on the rows of ``x`` (N, D); returns the centroids (k, D) of the best restart.

    Empty clusters keep their previous centroid. Ties in assignment go to the lower cluster index.
    """
    best, best_inertia = None, float("inf")
    for _ in range(n_init):
        centres = _kmeans_pp(x, k, generator)
        for _ in range(max_iter):
            assign = nearest(x, centres)
            sums = torch.zeros_like(centres).index_add_(0, assign, x)
            counts = torch.bincount(assign, minlength=k).to(x.dtype)
            new = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
            if torch.allclose(new, centres):
                break
            centres = new
        inertia = float(((x - centres[nearest(x, centres)]) ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    assert best is not None
    return best


@dataclass
class HabitatModel:
    """Habitat clustering fitted on the T0 tumour and applied unchanged at later time points.

    ``fit`` learns ``scale_`` (feature mean and standard deviation at T0, shape (2, 2)) and ``centroids_``
    (K, 2) in standardised, weighted units; ``assign`` labels the voxels of any time point.
    """

    settings: HabitatSettings

    def _standardise(self, feats: torch.Tensor) -> torch.Tensor:
        weight = torch.tensor([1.0, self.settings.texture_weight], device=feats.device)
        return (feats - self.scale_[0].to(feats.device)) / self.scale_[1].to(feats.device) * weight

    def fit(self, ct: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> HabitatModel:
        """Fit on the reference (T0) tumour. Raises :class:`EmptyMaskError` if it has fewer voxels than K."""
        feats = local_features(ct, mask, self.settings.window)
        if feats.shape[0] < self.settings.n_habitats:
            raise EmptyMaskError(
                f"the T0 tumour has {feats.shape[0]} voxels, fewer than the {self.settings.n_habitats} habitats "
                "to fit; habitats (and the DHI) are not defined for this lesion"
            )
        self.scale_ = torch.stack([feats.mean(0), feats.std(0).clamp(min=1e-3)])
        z = self._standardise(feats)
        if z.shape[0] > self.settings.max_fit_voxels:
            pick = torch.randperm(z.shape[0], generator=generator)[: self.settings.max_fit_voxels]
            z = z[pick.to(z.device)]
        self.centroids_ = kmeans(z, self.settings.n_habitats, generator, self.settings.n_init, self.settings.max_iter)
        return self

    def assign(self, ct: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Habitat label per voxel, shape (Z, Y, X) int64: 0..K-1 inside the tumour, -1 outside."""
        return self.assign_features(local_features(ct, mask, self.settings.window), mask)

    def assign_features(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """:meth:`assign` from precomputed :func:`local_features` ``(S, 2)`` of ``mask`` (computed once, reused)."""
        if not hasattr(self, "centroids_"):
            raise RuntimeError("HabitatModel.assign called before fit; fit it on the T0 tumour first")
        labels = torch.full(mask.shape, -1, dtype=torch.long, device=mask.device)
        if feats.shape[0]:
            z = self._standardise(feats)
            labels[mask.bool()] = nearest(z, self.centroids_.to(feats.device))
        return labels


def _region_stats(mask: np.ndarray, structure: np.ndarray, min_region_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """Sizes and slice index (axis 0) of the connected regions of ``mask`` with at least ``min_region_voxels``."""
    regions, n = ndimage.label(mask, structure=structure)
    if n == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    sizes = np.bincount(regions.ravel(), minlength=n + 1)[1:]
    first = ndimage.find_objects(regions)
    z = np.array([sl[0].start for sl in first], dtype=np.int64)  # with in-plane structure: the region's slice
    keep = sizes >= min_region_voxels
    return sizes[keep].astype(np.float64), z[keep]


def _region_stats_torch(mask: torch.Tensor, structure: np.ndarray, min_region_voxels: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_region_stats` on the tensor's device: connected regions by min-label propagation with pointer
    jumping (each region ends labelled by its smallest linear index, which with an in-plane structure lies
    on the region's slice)."""
    shape = mask.shape
    n = mask.numel()
    big = n
    comp = torch.where(mask, torch.arange(n, device=mask.device).reshape(shape), big)
    offsets = [tuple(int(v) - 1 for v in o) for o in np.argwhere(structure) if tuple(o) != (1, 1, 1)]
    while True:
        padded = torch.full((shape[0] + 2, shape[1] + 2, shape[2] + 2), big, dtype=torch.long, device=mask.device)
        padded[1:-1, 1:-1, 1:-1] = comp
        best = comp
        for dz, dy, dx in offsets:
            best = torch.minimum(best, padded[1 + dz : 1 + dz + shape[0], 1 + dy : 1 + dy + shape[1],
                                              1 + dx : 1 + dx + shape[2]])
        best = torch.where(mask, best, big)
        flat = best.flatten()
        jumped = torch.where(mask.flatten(), flat[flat.clamp(max=n - 1)], big).reshape(shape)
        jumped = torch.minimum(jumped, best)
        if torch.equal(jumped, comp):
            break
        comp = jumped
    roots, sizes = torch.unique(comp[mask], return_counts=True)
    keep = sizes >= min_region_voxels
    z = (roots // (shape[1] * shape[2]))[keep]
    return sizes[keep].double().cpu().numpy(), z.cpu().numpy().astype(np.int64)


def ith_score(
    labels: torch.Tensor | np.ndarray,
    n_habitats: int,
    connectivity: int = 1,
    min_region_voxels: int = 1,
    mode: Literal["slices", "volume"] = "slices",
) -> float:
    """ITH = 1 − (Σ_i a_i / n_i) / S (Li et al. 2022) of a habitat label map (-1 = outside the tumour).

    Parameters
    ----------
    labels : array, shape (Z, Y, X)
        Habitat per voxel, -1 outside the tumour; axis 0 is the axial slice.
    n_habitats : int
        K.
    connectivity : int
        Neighbourhood of a connected region: 1 = edges (4 in-plane / 6 in 3-D), 2 or 3 = also corners.
    min_region_voxels : int
        Regions smaller than this are not counted in n_i (they stay in S); 1 = the published definition.
    mode : {"slices", "volume"}
        ``"slices"`` (default): the published 2-D score on every axial slice, pooled — Σ over slices and
        habitats of a_is / n_is, divided by all tumour pixels S (so each slice weighs by its area; the paper
        used only the largest slice, which makes the score depend on one slice). ``"volume"``: 3-D regions.
        In 3-D each habitat of a third of the volume percolates into one giant region, so the volume score
        stays near 0 and barely separates tumours; on the synthetic cohort its ICC under re-segmentation
        was 0.1–0.5 against 0.84–0.94 for ``"slices"`` (``docs/dhi.md``).

    Returns
    -------
    float
        In [0, 1); 0.0 for an empty map (no tumour, no heterogeneity) — callers flag that case themselves.
    """
    on_device = isinstance(labels, torch.Tensor) and labels.device.type != "cpu"
    lab = labels if on_device else (labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor)
                                    else np.asarray(labels))
    S = int((lab >= 0).sum())
    if S == 0:
        return 0.0
    if mode == "volume":
        structure = ndimage.generate_binary_structure(3, connectivity)
    elif mode == "slices":
        structure = np.zeros((3, 3, 3), dtype=bool)
        structure[1] = ndimage.generate_binary_structure(2, min(connectivity, 2))
    else:
        raise SettingsError(f"mode must be 'slices' or 'volume', but was {mode!r}")
    n_slices = lab.shape[0] if mode == "slices" else 1
    total = 0.0
    for i in range(n_habitats):
        if isinstance(lab, torch.Tensor):
            sizes, z = _region_stats_torch(lab == i, structure, min_region_voxels)
        else:
            sizes, z = _region_stats(lab == i, structure, min_region_voxels)
        if sizes.size == 0:
            continue
        z = z if mode == "slices" else np.zeros_like(z)
        largest = np.zeros(n_slices)
        np.maximum.at(largest, z, sizes)
        count = np.bincount(z, minlength=n_slices)
        total += float((largest[count > 0] / count[count > 0]).sum())
    return 1.0 - total / S


def proportions(labels: torch.Tensor, n_habitats: int) -> torch.Tensor:
    """Fraction of tumour voxels in each habitat, shape (K,), float64; zeros for an empty map."""
    inside = labels[labels >= 0]
    counts = torch.bincount(inside, minlength=n_habitats).double()
    return counts / counts.sum().clamp(min=1.0)


def interior(mask: torch.Tensor, depth: int = 2, min_voxels: int = 30) -> torch.Tensor:
    """The mask eroded by ``depth`` voxels (3 × 3 × 3 cube, repeated), on the mask's device.

    Voxels this deep have their whole 5³ local window inside the tumour, so neither their habitat nor
    their texture depends on where exactly the contour was drawn (a re-drawing moves the border by about
    a voxel). When fewer than ``min_voxels`` voxels survive, the erosion is shallower (down to the mask
    itself), so that a small tumour still has a core to measure.
    """
    m = mask.bool()
    if not bool(m.any()):
        return m
    idx = torch.nonzero(m)
    box = tuple(slice(int(a), int(b) + 1) for a, b in zip(idx.min(0).values, idx.max(0).values, strict=True))
    crop = m[box]
    for d in range(depth, 0, -1):
        outside = (~crop).float()[None, None]
        grown = functional.max_pool3d(functional.pad(outside, (d,) * 6, value=1.0), 2 * d + 1, stride=1)
        core = crop & (grown[0, 0] == 0)
        if int(core.sum()) >= min_voxels:
            out = torch.zeros_like(m)
            out[box] = core
            return out
    return m


def mixing_index(labels: torch.Tensor | np.ndarray, n_habitats: int, mode: Literal["slices", "volume"] = "slices"
                 ) -> float:
    """Spatial mixing of a habitat map against a permutation null on the same mask (a join-count statistic).

    ``D`` is the fraction of face-adjacent tumour voxel pairs (in-plane Y and X neighbours for ``"slices"``,
    also Z for ``"volume"``) whose habitats differ. Under the null of habitat labels randomly permuted over
    the same mask (composition and mask kept) its expectation is exactly
    ``D0 = 1 − Σ_i n_i (n_i − 1) / (S (S − 1))`` (n_i voxels of habitat i, S in all; Cliff & Ord 1981,
    join-count statistics). The index is ``D / D0``: 0 for habitats in compact blocks, ≈ 1 for a
    salt-and-pepper mixture, whatever the composition and however many voxels the tumour has (both are
    in the null). Runs on the tensor's device.

    Returns
    -------
    float
        ``D / D0``; 0.0 when undefined (no adjacent pair, or a single habitat: nothing can be mixed).
    """
    lab = torch.as_tensor(labels)
    if lab.ndim != 3:
        raise GeometryMismatchError(f"labels must be a (Z, Y, X) map, but had shape {tuple(lab.shape)}")
    if mode not in ("slices", "volume"):
        raise SettingsError(f"mode must be 'slices' or 'volume', but was {mode!r}")
    inside = lab[lab >= 0]
    S = inside.numel()
    if S < 2:
        return 0.0
    counts = torch.bincount(inside, minlength=n_habitats).double()
    d0 = 1.0 - float((counts * (counts - 1.0)).sum()) / (S * (S - 1.0))
    pairs = disagree = 0
    for axis in ((1, 2) if mode == "slices" else (0, 1, 2)):
        n = lab.shape[axis]
        if n < 2:
            continue
        a, b = lab.narrow(axis, 0, n - 1), lab.narrow(axis, 1, n - 1)
        both = (a >= 0) & (b >= 0)
        pairs += int(both.sum())
        disagree += int((both & (a != b)).sum())
    if pairs == 0 or d0 <= 1e-12:
        return 0.0
    return disagree / pairs / d0
