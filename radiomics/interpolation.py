"""IBSI interpolation with grid alignment (IBSI manual 2.4), separable and batched.

Each axis gets an ``(n_new, n)`` matrix — linear weights, or the interpolating cubic B-spline (evaluation
matrix times the inverse of the B-spline sampling matrix, mirror boundaries) — applied with ``tensordot``
on any device. The new grid has ``ceil(n · s / s_new)`` voxels centred on the old grid; outside the old
grid intensities are extrapolated from the nearest voxel. CT intensities are rounded after interpolation
and masks, always interpolated linearly, are kept where the partial volume is at least the threshold.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import torch

Spacing = tuple[float, float, float]
Interpolation = Literal["linear", "cubic"]


class ResampleSettings(Protocol):
    """What :func:`resample` reads of a configuration (:class:`radiomics.preprocess.IbsiSettings` has it).

    A protocol rather than an import of ``IbsiSettings``, so that ``preprocess`` → ``interpolation`` is the
    only direction between the two modules (no import cycle).
    """

    @property
    def new_spacing(self) -> tuple[float | None, float | None, float | None] | None: ...

    @property
    def interpolation(self) -> Interpolation: ...

    @property
    def mask_threshold(self) -> float: ...

    @property
    def round_intensities(self) -> bool: ...


def aligned_grid(n: int, spacing: float, new_spacing: float) -> tuple[int, torch.Tensor]:
    """New grid size and its voxel centres in original voxel-index units (IBSI "align grid centers").

    Parameters
    ----------
    n : int
        Number of voxels along the axis.
    spacing, new_spacing : float
        Original and target voxel size in mm.

    Returns
    -------
    n_new : int
        ``ceil(n · spacing / new_spacing)`` (with a 1e-6 tolerance against floating-point noise).
    positions : Tensor
        ``(n_new,)`` float64 positions of the new voxel centres, in units of original voxels.
    """
    n_new = max(1, math.ceil(n * spacing / new_spacing - 1e-6))
    offset = ((n - 1) * spacing - (n_new - 1) * new_spacing) / 2.0
    positions = (torch.arange(n_new, dtype=torch.float64) * new_spacing + offset) / spacing
    return n_new, positions


def _linear_weights(n: int, positions: torch.Tensor) -> torch.Tensor:
    """``(n_new, n)`` linear interpolation matrix; positions outside the grid take the nearest voxel."""
    p = positions.clamp(0.0, n - 1.0)
    i0 = p.floor().long().clamp(max=n - 1)
    frac = p - i0
    i1 = (i0 + 1).clamp(max=n - 1)
    weights = torch.zeros(len(p), n, dtype=torch.float64)
    rows = torch.arange(len(p))
    weights.index_put_((rows, i0), 1.0 - frac, accumulate=True)
    weights.index_put_((rows, i1), frac, accumulate=True)
    return weights


def _bspline3(t: torch.Tensor) -> torch.Tensor:
    """Cubic B-spline kernel ``β3(t)``."""
    a = t.abs()
    inner = 2.0 / 3.0 - a**2 + a**3 / 2.0
    outer = (2.0 - a) ** 3 / 6.0
    return torch.where(a < 1.0, inner, torch.where(a < 2.0, outer, torch.zeros_like(a)))


def _mirror(index: torch.Tensor, n: int) -> torch.Tensor:
    """Mirror (whole-sample symmetric) boundary extension of integer indices into ``0..n-1``."""
    if n == 1:
        return torch.zeros_like(index)
    period = 2 * (n - 1)
    index = index.remainder(period)
    return torch.where(index >= n, period - index, index)


def _cubic_weights(n: int, positions: torch.Tensor) -> torch.Tensor:
    """``(n_new, n)`` cubic B-spline interpolation matrix (interpolating: includes the prefilter)."""
    p = positions.clamp(0.0, n - 1.0)
    base = p.floor().long()
    rows = torch.arange(len(p))
    evaluate = torch.zeros(len(p), n, dtype=torch.float64)
    for tap in range(-1, 3):
        k = base + tap
        evaluate.index_put_((rows, _mirror(k, n)), _bspline3(p - k.double()), accumulate=True)
    sample = torch.zeros(n, n, dtype=torch.float64)
    grid = torch.arange(n)
    for tap in (-1, 0, 1):
        value = _bspline3(torch.tensor(float(tap), dtype=torch.float64)).expand(n)
        sample.index_put_((grid, _mirror(grid + tap, n)), value, accumulate=True)
    # values = sample @ coefficients  =>  interpolated = evaluate @ sample^-1 @ values
    return torch.linalg.solve(sample.T, evaluate.T).T


def interpolation_matrices(shape: tuple[int, int, int], spacing: Spacing,
                           new_spacing: tuple[float | None, float | None, float | None],
                           method: Interpolation) -> tuple[list[torch.Tensor | None], Spacing]:
    """Per-axis ``(n_new, n)`` interpolation matrices (``None`` where an axis is kept) and the new spacing."""
    matrices: list[torch.Tensor | None] = []
    out_spacing: list[float] = []
    for n, s, s_new in zip(shape, spacing, new_spacing, strict=True):
        if s_new is None or abs(s_new - s) < 1e-9:
            matrices.append(None)
            out_spacing.append(float(s))
            continue
        _, positions = aligned_grid(n, s, s_new)
        matrices.append(_linear_weights(n, positions) if method == "linear" else _cubic_weights(n, positions))
        out_spacing.append(float(s_new))
    return matrices, (out_spacing[0], out_spacing[1], out_spacing[2])


def apply_separable(volume: torch.Tensor, matrices: list[torch.Tensor | None]) -> torch.Tensor:
    """Apply per-axis matrices to a ``(B, Z, Y, X)`` volume (separable interpolation)."""
    out = volume.double()
    for axis, matrix in zip((1, 2, 3), matrices, strict=True):
        if matrix is None:
            continue
        out = torch.movedim(torch.tensordot(out, matrix.to(out.device).T, dims=([axis], [0])), -1, axis)
    return out


def _row_windows(mask: torch.Tensor, spacing: Spacing, new_spacing: tuple[float | None, float | None, float | None],
                 margin_mm: float) -> list[slice]:
    """Per axis, the new-grid voxels within ``margin_mm`` (+1 voxel) of the union ROI bounding box."""
    any_roi = mask.any(0)
    windows = []
    for axis in range(3):
        n = any_roi.shape[axis]
        other = tuple(a for a in range(3) if a != axis)
        hit = torch.nonzero(any_roi.any(dim=other)).flatten()
        margin = margin_mm / spacing[axis] + 1.0
        lo, hi = float(hit.min()) - margin, float(hit.max()) + margin
        s_new = new_spacing[axis]
        if s_new is None or abs(s_new - spacing[axis]) < 1e-9:
            windows.append(slice(max(0, math.floor(lo)), min(n, math.ceil(hi) + 1)))
            continue
        _, positions = aligned_grid(n, spacing[axis], s_new)
        keep = torch.nonzero((positions >= lo) & (positions <= hi)).flatten()
        windows.append(slice(int(keep.min()), int(keep.max()) + 1))
    return windows


def _apply_windowed(volume: torch.Tensor, matrices: list[torch.Tensor | None], rows: list[slice]) -> torch.Tensor:
    """Separable interpolation evaluated only on the ``rows`` window of the new grid.

    Input voxels that no kept output voxel depends on (zero columns: exact for linear weights; the cubic
    prefilter is dense, so it keeps them all) are cropped away first.
    """
    index: list[slice] = []
    mats: list[torch.Tensor | None] = []
    for matrix, window in zip(matrices, rows, strict=True):
        if matrix is None:
            index.append(window)
            mats.append(None)
            continue
        sub = matrix[window]
        used = torch.nonzero(sub.abs().sum(0) > 0).flatten()
        cols = slice(int(used.min()), int(used.max()) + 1)
        index.append(cols)
        mats.append(sub[:, cols])
    return apply_separable(volume[:, index[0], index[1], index[2]], mats)


def resample(image: torch.Tensor, mask: torch.Tensor, spacing: Spacing, settings: ResampleSettings,
             margin_mm: float | None = None) -> tuple[torch.Tensor, torch.Tensor, Spacing]:
    """Interpolate image and mask onto the IBSI-aligned grid of ``settings.new_spacing``.

    Parameters
    ----------
    image : Tensor
        ``(B, Z, Y, X)`` intensities.
    mask : Tensor
        ``(B, Z, Y, X)`` bool ROI mask.
    spacing : tuple of float
        ``(z, y, x)`` voxel size in mm.
    settings : ResampleSettings
        An :class:`~radiomics.preprocess.IbsiSettings`; gives target spacing, image interpolation, rounding and
        the mask partial-volume threshold.
    margin_mm : float, optional
        Evaluate only the part of the new grid within this margin of the ROIs (the grid itself, and hence
        every value, stays that of the whole image). ``None`` interpolates the whole image.

    Returns
    -------
    image, mask, spacing
        Interpolated float64 image (rounded to integers when ``settings.round_intensities``), bool mask
        (linear interpolation, ``>= mask_threshold``), and the new spacing.
    """
    if settings.new_spacing is None:
        if margin_mm is None:
            return image.double(), mask.bool(), spacing
        zs, ys, xs = _row_windows(mask, spacing, (None, None, None), margin_mm)
        return image[:, zs, ys, xs].double(), mask[:, zs, ys, xs].bool(), spacing
    shape = (image.shape[1], image.shape[2], image.shape[3])
    img_mats, new_spacing = interpolation_matrices(shape, spacing, settings.new_spacing, settings.interpolation)
    mask_mats = img_mats if settings.interpolation == "linear" else \
        interpolation_matrices(shape, spacing, settings.new_spacing, "linear")[0]
    if margin_mm is None:
        out_image = apply_separable(image, img_mats)
        mask_values = apply_separable(mask.double(), mask_mats)
    else:
        rows = _row_windows(mask, spacing, settings.new_spacing, margin_mm)
        out_image = _apply_windowed(image, img_mats, rows)
        mask_values = _apply_windowed(mask.double(), mask_mats, rows)
    if settings.round_intensities:
        out_image = torch.round(out_image)
    # Small tolerance: a voxel centre exactly halfway between two mask voxels must reach 0.5.
    return out_image, mask_values >= settings.mask_threshold - 1e-9, new_spacing
