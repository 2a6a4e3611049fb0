"""One batched entry point: IBSI processing plus every feature family, keyed by IBSI reference tags.

Usage::

    from radiomics.extractor import extract_features
    from radiomics.preprocess import IBSI_CONFIGS
    feats = extract_features(image, mask, spacing=(1.0, 0.7, 0.7), settings=IBSI_CONFIGS["C"])
    feats["stat_mean"]          # Tensor (B,), float64

``image`` and ``mask`` are ``(B, Z, Y, X)`` (or ``(Z, Y, X)`` for one VOI): VOIs of different patients
are padded/cropped by the caller to one common box; sub-regions of one tumour simply share the grid.
Everything after interpolation runs on the crop around the union of the ROIs (plus the 6.2 mm local
intensity margin), on ``image.device``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import torch

from radiomics.intensity_histogram import intensity_histogram
from radiomics.intensity_stats import intensity_statistics
from radiomics.ivh import intensity_volume_histogram
from radiomics.local_intensity import SPHERE_RADIUS_MM, local_intensity
from radiomics.morphology import morphology
from radiomics.preprocess import IbsiSettings, PreprocessedVoi, Spacing, preprocess

log = logging.getLogger(__name__)

#: Feature families in IBSI order; ``texture`` is helper B's :mod:`radiomics.texture`.
FAMILIES: tuple[str, ...] = ("morph", "loc", "stat", "ih", "ivh", "texture")

#: IBSI tag prefix → family name used in compliance tables.
TAG_FAMILY: dict[str, str] = {
    "morph": "morphology", "loc": "local intensity", "stat": "statistics", "ih": "intensity histogram",
    "ivh": "intensity-volume histogram", "cm": "GLCM", "rlm": "GLRLM", "szm": "GLSZM", "dzm": "GLDZM",
    "ngt": "NGTDM", "ngl": "NGLDM",
}


def family_of(tag: str) -> str:
    """Family name of an IBSI tag (``"cm_joint_max_3D_avg"`` → ``"GLCM"``); ``"diagnostics"`` otherwise."""
    return TAG_FAMILY.get(tag.split("_", 1)[0], "diagnostics")


def crop_to_roi(pre: PreprocessedVoi, margin_mm: float = SPHERE_RADIUS_MM) -> PreprocessedVoi:
    """Crop a processed batch to the union bounding box of its morphological masks plus ``margin_mm``."""
    any_roi = pre.morph_mask.any(0)
    slices = []
    for axis, spacing in enumerate(pre.spacing):
        other = tuple(a for a in range(3) if a != axis)
        hit = torch.nonzero(any_roi.any(dim=other)).flatten()
        margin = math.ceil(margin_mm / spacing) + 1
        start = max(0, int(hit.min()) - margin)
        stop = min(any_roi.shape[axis], int(hit.max()) + margin + 1)
        slices.append(slice(start, stop))
    zs, ys, xs = slices
    return PreprocessedVoi(
        image=pre.image[:, zs, ys, xs], morph_mask=pre.morph_mask[:, zs, ys, xs],
        int_mask=pre.int_mask[:, zs, ys, xs], levels=pre.levels[:, zs, ys, xs], n_levels=pre.n_levels,
        spacing=pre.spacing, settings=pre.settings)


def _texture(pre: PreprocessedVoi) -> dict[str, torch.Tensor]:
    """Texture families from :mod:`radiomics.texture` (helper B), if that module is present."""
    try:
        from radiomics.texture import texture_features  # type: ignore[attr-defined]
    except ImportError:
        log.warning("radiomics.texture.texture_features is not available; texture features skipped")
        return {}
    result: dict[str, torch.Tensor] = {}
    for dims in pre.settings.texture_dims:
        result.update(texture_features(pre.levels, pre.int_mask, pre.n_levels, dims=dims, spacing=pre.spacing))
    return result


def features_from_preprocessed(pre: PreprocessedVoi, families: Iterable[str] = FAMILIES
                               ) -> dict[str, torch.Tensor]:
    """Compute the requested families on an already processed (and preferably cropped) batch."""
    wanted = set(families)
    unknown = wanted - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown feature families {sorted(unknown)}; choose from {FAMILIES}")
    out: dict[str, torch.Tensor] = {}
    if "morph" in wanted:
        out.update(morphology(pre.image, pre.morph_mask, pre.int_mask, pre.spacing))
    if "loc" in wanted:
        out.update(local_intensity(pre.image, pre.int_mask, pre.spacing))
    if "stat" in wanted:
        out.update(intensity_statistics(pre.image, pre.int_mask))
    if "ih" in wanted:
        out.update(intensity_histogram(pre.levels, pre.int_mask, pre.n_levels))
    if "ivh" in wanted:
        out.update(intensity_volume_histogram(pre.image, pre.int_mask, pre.settings))
    if "texture" in wanted:
        out.update(_texture(pre))
    return out


def extract_features(image: torch.Tensor, mask: torch.Tensor, spacing: Spacing, settings: IbsiSettings, *,
                     families: Iterable[str] = FAMILIES, device: torch.device | str | None = None
                     ) -> dict[str, torch.Tensor]:
    """IBSI features of a batch of VOIs.

    Parameters
    ----------
    image : Tensor
        ``(B, Z, Y, X)`` or ``(Z, Y, X)`` intensities (HU for CT).
    mask : Tensor
        Same shape, ROI masks (bool or 0/1).
    spacing : tuple of float
        ``(z, y, x)`` voxel size in mm.
    settings : IbsiSettings
        Processing configuration (``radiomics.preprocess.IBSI_CONFIGS`` holds the IBSI ones).
    families : iterable of str
        Subset of :data:`FAMILIES`.
    device : torch.device or str, optional
        Where to compute (default: the image's device).

    Returns
    -------
    dict of str to Tensor
        IBSI tag (exactly as in the IBSI reference tables) → ``(B,)`` float64 values.

    Raises
    ------
    radiomics.exceptions.RadiomicsError
        Empty mask, mask outside the image, mismatched geometry or non-CT intensities.
    """
    if image.dim() == 3:
        image, mask = image[None], mask[None]
    if device is not None:
        image, mask = image.to(device), mask.to(device)
    pre = crop_to_roi(preprocess(image, mask, spacing, settings))
    return features_from_preprocessed(pre, families)
