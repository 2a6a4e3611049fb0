"""IBSI image processing: interpolation with grid alignment, rounding, mask re-sampling, re-segmentation,
and intensity discretisation, batched over volumes of interest (VOIs).

Conventions: volumes are ``(B, Z, Y, X)`` tensors (B VOIs sharing one voxel grid), spacings are
``(z, y, x)`` in mm, intensities are Hounsfield units (HU) for CT. Everything runs on the device of the
input tensors; intensities are processed in float64 because IBSI tolerances on large-volume features
(energy, integrated intensity) are tighter than float32 sums allow.

References: IBSI reference manual (Zwanenburg et al., arXiv:1612.07003), chapter 2 "Image processing":
interpolation grid alignment ("align grid centers"), rounding of interpolated CT intensities, partial-volume
threshold 0.5 for interpolated masks, re-segmentation (range, outliers ±3σ), discretisation (fixed bin
number ``floor(N_g (X - X_min) / (X_max - X_min)) + 1``; fixed bin size ``floor((X - X_gl,min) / w_b) + 1``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

import torch

from radiomics.exceptions import (
    EmptyMaskError,
    GeometryMismatchError,
    MaskOutsideImageError,
    NonCTIntensityError,
    SettingsError,
)
from radiomics.interpolation import resample

log = logging.getLogger(__name__)

Spacing = tuple[float, float, float]
Interpolation = Literal["linear", "cubic"]
Discretisation = Literal["none", "fbs", "fbn"]

# Plausible CT intensities (HU). Below PADDING_HU is scanner padding (outside the reconstructed field of
# view: -2000, -3024, ...); between PADDING_HU and CT_MIN_HU or above CT_MAX_HU the data are not CT in HU.
PADDING_HU = -1500.0
CT_MIN_HU = -1100.0
CT_MAX_HU = 4095.0


@dataclass(frozen=True)
class IbsiSettings:
    """One IBSI processing configuration.

    Attributes
    ----------
    name : str
        Configuration label (``"dig"``, ``"A"`` ... ``"E"`` for the IBSI-1 reference configurations).
    texture_dims : tuple of {"2D", "3D"}
        Texture aggregations to compute: ``"2D"`` gives the IBSI 2D and 2.5D features, ``"3D"`` the 3D ones.
    new_spacing : tuple of (float or None), optional
        Target spacing ``(z, y, x)`` in mm; ``None`` entries keep that axis (in-plane interpolation);
        ``None`` as a whole means no interpolation.
    interpolation : {"linear", "cubic"}
        Image interpolation (trilinear, or tricubic B-spline). Masks are always interpolated linearly
        and thresholded at ``mask_threshold``.
    mask_threshold : float
        Partial-volume threshold for interpolated masks (IBSI: 0.5).
    round_intensities : bool
        Round interpolated intensities to integers (IBSI: yes for CT).
    reseg_range : tuple of (float or None)
        Re-segmentation range ``(lower, upper)`` in HU; ``None`` bounds are open.
    reseg_sigma : float, optional
        Outlier re-segmentation: keep ``mean ± reseg_sigma · sd`` of the ROI (after the range, if any).
    discretisation : {"none", "fbs", "fbn"}
        Intensity discretisation for histogram and texture features; ``"none"`` uses the (integer)
        intensities as grey levels (digital phantom).
    bin_width : float, optional
        Bin width in HU for ``"fbs"``.
    n_bins : int, optional
        Number of bins for ``"fbn"``.
    ivh : tuple of (str, float or None)
        Discretisation for the intensity-volume histogram: ``("none", None)``, ``("fbs", width)`` or
        ``("fbn", n_bins)``.
    ct : bool
        Check that intensities are plausible CT values in HU.
    """

    name: str
    texture_dims: tuple[Literal["2D", "3D"], ...] = ("3D",)
    new_spacing: tuple[float | None, float | None, float | None] | None = None
    interpolation: Interpolation = "linear"
    mask_threshold: float = 0.5
    round_intensities: bool = True
    reseg_range: tuple[float | None, float | None] = (None, None)
    reseg_sigma: float | None = None
    discretisation: Discretisation = "fbn"
    bin_width: float | None = None
    n_bins: int | None = 32
    ivh: tuple[Discretisation, float | None] = ("none", None)
    ct: bool = True

    def __post_init__(self) -> None:
        if self.discretisation == "fbs" and not (self.bin_width and self.bin_width > 0):
            raise SettingsError(f"fixed bin size needs a positive bin_width, but was {self.bin_width!r}")
        if self.discretisation == "fbn" and not (self.n_bins and self.n_bins >= 1):
            raise SettingsError(f"fixed bin number needs n_bins >= 1, but was {self.n_bins!r}")
        if not self.texture_dims or set(self.texture_dims) - {"2D", "3D"}:
            raise SettingsError(f"texture_dims must be a non-empty tuple of '2D'/'3D', but was {self.texture_dims!r}")
        if not 0.0 < self.mask_threshold < 1.0:
            raise SettingsError(f"mask_threshold must lie in (0, 1), but was {self.mask_threshold!r}")
        low, high = self.reseg_range
        if low is not None and high is not None and low >= high:
            raise SettingsError(f"reseg_range lower bound must be below the upper one, but was {self.reseg_range!r}")

    @property
    def grey_level_floor(self) -> float | None:
        """``X_gl,min`` of fixed-bin-size discretisation: the lower re-segmentation bound when there is one."""
        return self.reseg_range[0]


#: The IBSI-1 reference configurations (digital phantom and CT phantom A–E, IBSI manual chapter 4).
IBSI_CONFIGS: dict[str, IbsiSettings] = {
    "dig": IbsiSettings(name="dig", texture_dims=("2D", "3D"), discretisation="none", n_bins=None, ct=False,
                        round_intensities=False),
    "A": IbsiSettings(name="A", texture_dims=("2D",), reseg_range=(-500.0, 400.0), discretisation="fbs",
                      bin_width=25.0, n_bins=None, ivh=("none", None)),
    "B": IbsiSettings(name="B", texture_dims=("2D",), new_spacing=(None, 2.0, 2.0), reseg_range=(-500.0, 400.0),
                      discretisation="fbn", n_bins=32, ivh=("none", None)),
    "C": IbsiSettings(name="C", texture_dims=("3D",), new_spacing=(2.0, 2.0, 2.0), reseg_range=(-1000.0, 400.0),
                      discretisation="fbs", bin_width=25.0, n_bins=None, ivh=("fbs", 2.5)),
    "D": IbsiSettings(name="D", texture_dims=("3D",), new_spacing=(2.0, 2.0, 2.0), reseg_sigma=3.0,
                      discretisation="fbn", n_bins=32, ivh=("none", None)),
    "E": IbsiSettings(name="E", texture_dims=("3D",), new_spacing=(2.0, 2.0, 2.0), interpolation="cubic",
                      reseg_range=(-1000.0, 400.0), reseg_sigma=3.0, discretisation="fbn", n_bins=32,
                      ivh=("fbn", 1000.0)),
}


@dataclass
class PreprocessedVoi:
    """A batch of VOIs after IBSI processing.

    Attributes
    ----------
    image : Tensor
        ``(B, Z, Y, X)`` float64 intensities on the (interpolated) grid, HU for CT.
    morph_mask : Tensor
        ``(B, Z, Y, X)`` bool morphological mask (re-sampled, not re-segmented).
    int_mask : Tensor
        ``(B, Z, Y, X)`` bool intensity mask (re-sampled and re-segmented).
    levels : Tensor
        ``(B, Z, Y, X)`` int64 grey levels ``1..n_levels`` inside ``int_mask``, 0 outside.
    n_levels : int
        Number of grey levels (largest level over the batch for fixed bin size).
    spacing : tuple of float
        Voxel spacing ``(z, y, x)`` in mm of the processed grid.
    settings : IbsiSettings
        The configuration that produced it.
    """

    image: torch.Tensor
    morph_mask: torch.Tensor
    int_mask: torch.Tensor
    levels: torch.Tensor
    n_levels: int
    spacing: Spacing
    settings: IbsiSettings


def resegment(image: torch.Tensor, mask: torch.Tensor, settings: IbsiSettings) -> torch.Tensor:
    """Intensity mask: ``mask`` restricted to the re-segmentation range, then to ``mean ± k·sd``.

    Returns
    -------
    Tensor
        ``(B, Z, Y, X)`` bool intensity mask.
    """
    out = mask.clone()
    low, high = settings.reseg_range
    if low is not None:
        out &= image >= low
    if high is not None:
        out &= image <= high
    if settings.reseg_sigma is not None:
        dims = (1, 2, 3)
        count = out.sum(dims, keepdim=True).clamp(min=1).double()
        mean = (image * out).sum(dims, keepdim=True) / count
        var = (((image - mean) ** 2) * out).sum(dims, keepdim=True) / count
        half = settings.reseg_sigma * var.sqrt()
        out &= (image >= mean - half) & (image <= mean + half)
    return out


def discretise(image: torch.Tensor, mask: torch.Tensor, settings: IbsiSettings) -> tuple[torch.Tensor, int]:
    """Grey levels ``1..N_g`` inside ``mask`` (0 outside) by the configured discretisation.

    Fixed bin number uses each VOI's own ROI minimum and maximum; fixed bin size starts at the lower
    re-segmentation bound (IBSI ``X_gl,min``), or at the batch's ROI minimum when there is none.

    Returns
    -------
    levels : Tensor
        ``(B, Z, Y, X)`` int64.
    n_levels : int
        Number of grey levels (the batch maximum for fixed bin size and no discretisation).
    """
    big = torch.finfo(torch.float64).max
    if settings.discretisation == "none":
        levels = torch.where(mask, image.round().long(), 0)
        return levels, int(levels.max().item()) if mask.any() else 1
    if settings.discretisation == "fbn":
        n_bins = int(settings.n_bins or 1)
        low = torch.where(mask, image, big).amin((1, 2, 3), keepdim=True)
        high = torch.where(mask, image, -big).amax((1, 2, 3), keepdim=True)
        width = (high - low).clamp(min=torch.finfo(torch.float64).tiny)
        raw = torch.floor(n_bins * (image - low) / width).long() + 1
        levels = raw.clamp(1, n_bins)
        return torch.where(mask, levels, 0), n_bins
    floor_value = settings.grey_level_floor
    if floor_value is None:
        floor_value = float(torch.where(mask, image, big).min().item())
    raw = torch.floor((image - floor_value) / float(settings.bin_width or 1.0)).long() + 1
    levels = torch.where(mask, raw.clamp(min=1), 0)
    return levels, max(1, int(levels.max().item()))


def validate(image: torch.Tensor, mask: torch.Tensor, spacing: Spacing, settings: IbsiSettings) -> None:
    """Raise a typed :class:`~radiomics.exceptions.RadiomicsError` for unusable input.

    Checks: matching ``(B, Z, Y, X)`` shapes, positive spacing, every VOI non-empty, no ROI voxel on
    padding/NaN (mask outside the imaged field), and plausible HU for CT.
    """
    if image.dim() != 4 or image.shape != mask.shape:
        raise GeometryMismatchError(
            f"image and mask must both be (B, Z, Y, X) with the same shape, but were {tuple(image.shape)} and "
            f"{tuple(mask.shape)}; resample the mask onto the image grid first")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise GeometryMismatchError(f"spacing must be three positive (z, y, x) sizes in mm, but was {spacing!r}")
    counts = mask.sum((1, 2, 3))
    if bool((counts == 0).any()):
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise EmptyMaskError(f"ROI mask(s) {empty} of the batch contain no voxel; drop them or fix the segmentation")
    roi = image[mask]
    if bool(torch.isnan(roi).any()):
        raise MaskOutsideImageError("the ROI covers voxels with no image value (NaN); crop the mask to the image")
    if not settings.ct:
        return
    low, high = float(roi.min()), float(roi.max())
    if low <= PADDING_HU:
        raise MaskOutsideImageError(
            f"the ROI covers voxels at {low:g} HU, the scanner's padding outside the reconstructed field of "
            f"view; crop the mask to the field of view")
    if low < CT_MIN_HU or high > CT_MAX_HU:
        raise NonCTIntensityError(
            f"ROI intensities span [{low:g}, {high:g}], outside plausible CT [{CT_MIN_HU:g}, {CT_MAX_HU:g}] HU; "
            f"apply RescaleSlope/RescaleIntercept, or use settings with ct=False for non-CT images")
    if high <= 1.0 and low >= 0.0 and bool((roi != roi.round()).any()):
        raise NonCTIntensityError(
            f"ROI intensities span [{low:g}, {high:g}]: this looks like a normalised image, not HU")


def preprocess(image: torch.Tensor, mask: torch.Tensor, spacing: Spacing, settings: IbsiSettings,
               margin_mm: float | None = None) -> PreprocessedVoi:
    """Run the IBSI processing chain on a batch of VOIs sharing one voxel grid.

    Parameters
    ----------
    image : Tensor
        ``(B, Z, Y, X)`` intensities (HU for CT), any float/int dtype, any device.
    mask : Tensor
        ``(B, Z, Y, X)`` ROI masks (bool or 0/1).
    spacing : tuple of float
        ``(z, y, x)`` voxel size in mm.
    settings : IbsiSettings
        Processing configuration, e.g. ``IBSI_CONFIGS["C"]``.
    margin_mm : float, optional
        Keep (and interpolate) only the grid within this margin around the ROIs; ``None`` keeps the whole
        image (needed only for whole-image diagnostics).

    Returns
    -------
    PreprocessedVoi

    Raises
    ------
    GeometryMismatchError, EmptyMaskError, MaskOutsideImageError, NonCTIntensityError
    """
    mask = mask.bool()
    validate(image, mask, spacing, settings)
    image_i, morph_mask, new_spacing = resample(image, mask, spacing, settings, margin_mm)
    if bool((morph_mask.sum((1, 2, 3)) == 0).any()):
        raise EmptyMaskError(f"a ROI vanished when re-sampled to {settings.new_spacing} mm (it is smaller than "
                             f"half a voxel of the new grid); use a finer spacing or drop the VOI")
    int_mask = resegment(image_i, morph_mask, settings)
    if bool((int_mask.sum((1, 2, 3)) == 0).any()):
        raise EmptyMaskError(f"re-segmentation (range {settings.reseg_range}, sigma {settings.reseg_sigma}) left "
                             f"a ROI with no voxel; widen the range or check the intensities")
    levels, n_levels = discretise(image_i, int_mask, settings)
    log.debug("preprocessed %d VOI(s) to %s at %s mm, %d grey levels", image.shape[0],
              tuple(image_i.shape[1:]), new_spacing, n_levels)
    return PreprocessedVoi(image=image_i, morph_mask=morph_mask, int_mask=int_mask, levels=levels,
                           n_levels=n_levels, spacing=new_spacing, settings=settings)


def with_overrides(settings: IbsiSettings, **changes: object) -> IbsiSettings:
    """A copy of ``settings`` with some fields changed (validated again)."""
    return replace(settings, **changes)  # type: ignore[arg-type]
