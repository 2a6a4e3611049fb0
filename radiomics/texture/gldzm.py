"""Grey level distance zone matrix (GLDZM) features, IBSI reference manual §3.9 (arXiv:1612.07003).

Zones as for the GLSZM (26-/8-connectivity of the intensity mask); each zone is counted at its
grey level and at the smallest distance of its voxels to the ROI border. The distance map is computed
on the *morphological* mask (IBSI: re-segmentation must not create new borders inside the tumour),
with taxicab distance (6-/4-connectivity), border voxels at distance 1 and the image edge a border.
"""

from __future__ import annotations

import torch

from radiomics.exceptions import GeometryMismatchError
from radiomics.texture._grid import RoiGrid, build_grid, checked_grid
from radiomics.texture._matrix import SINGLE_SCHEMES, FamilyCounts, level_counts, zone_family_features
from radiomics.texture._zones import border_distance, label_zones, zone_sizes

#: IBSI short name -> generic run/zone feature (see :func:`radiomics.texture._matrix.zone_features`).
NAMES = {
    "sde": "short", "lde": "long", "lgze": "low", "hgze": "high", "sdlge": "short_low", "sdhge": "short_high",
    "ldlge": "long_low", "ldhge": "long_high", "glnu": "glnu", "glnu_norm": "glnu_norm", "zdnu": "jnu",
    "zdnu_norm": "jnu_norm", "z_perc": "perc", "gl_var": "gl_var", "zd_var": "j_var", "zd_entr": "j_entr",
}  # fmt: skip


def voxel_border_distance(grid: RoiGrid, morph_grid: RoiGrid, dims: str) -> torch.Tensor:
    """``(N,)`` int64 distance to the morphological-ROI border of each intensity-ROI voxel of ``grid``."""
    where = morph_grid.lookup[grid.flat]
    if bool((where < 0).any()):
        outside = int((where < 0).sum())
        raise GeometryMismatchError(
            f"{outside} intensity-ROI voxel(s) lie outside morph_mask; the intensity mask must be the morphological "
            "mask after re-segmentation (a subset of it). Pass the mask before re-segmentation as morph_mask."
        )
    return border_distance(morph_grid, dims)[where]


def gldzm_counts(grid: RoiGrid, morph_grid: RoiGrid, n_levels: int, dims: str) -> FamilyCounts:
    """Zone counts (grey level x border distance) per group ``(b, z)`` or ``b``, voxel counts and layout."""
    labels = label_zones(grid, dims)
    roots, _ = zone_sizes(labels)
    distance = voxel_border_distance(grid, morph_grid, dims)
    zone_distance = distance.clone().scatter_reduce_(0, labels, distance, "amin")[roots]
    return level_counts(grid, n_levels, dims, zone_distance, voxels=roots)


def gldzm_from_grid(grid: RoiGrid, morph_grid: RoiGrid, n_levels: int, dims: str) -> dict[str, torch.Tensor]:
    """GLDZM features of prepared intensity and morphological :class:`RoiGrid` s; see :func:`gldzm_features`."""
    return zone_family_features(gldzm_counts(grid, morph_grid, n_levels, dims), SINGLE_SCHEMES[dims], "dzm", NAMES)


def gldzm_features(
    levels: torch.Tensor,
    mask: torch.Tensor,
    n_levels: int,
    *,
    dims: str,
    morph_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """IBSI GLDZM features of a batch of VOIs: ``dzm_<feature>_<aggregation>`` -> ``(B,)`` float64.

    The arguments are those of :func:`radiomics.texture.texture_features`, documented there once for all six
    families: ``mask`` is the intensity ROI (after re-segmentation) and ``morph_mask``, which must contain it
    and defaults to it, the morphological mask of the border-distance map. NaN for an empty VOI.
    """
    grid = checked_grid(levels, mask, n_levels, dims)
    return gldzm_from_grid(grid, morph_grid_for(grid, levels, morph_mask), n_levels, dims)


def morph_grid_for(grid: RoiGrid, levels: torch.Tensor, morph_mask: torch.Tensor | None) -> RoiGrid:
    """The :class:`RoiGrid` of the morphological mask (``grid`` itself when there is none)."""
    if morph_mask is None:
        return grid
    if morph_mask.shape != levels.shape or morph_mask.dtype != torch.bool or morph_mask.device != levels.device:
        raise GeometryMismatchError(
            f"morph_mask must be a bool tensor shaped like levels {tuple(levels.shape)} on {levels.device}, but "
            f"was {morph_mask.dtype} {tuple(morph_mask.shape)} on {morph_mask.device}; pass the mask before "
            "re-segmentation."
        )
    return build_grid(torch.ones_like(levels), morph_mask)
