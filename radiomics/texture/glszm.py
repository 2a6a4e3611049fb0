"""Grey level size zone matrix (GLSZM) features, IBSI reference manual §3.8 (arXiv:1612.07003).

A zone is a maximal group of same-level ROI voxels connected at Chebyshev distance 1 (26-connectivity
in 3D, 8-connectivity in-plane for 2D). Tags ``szm_<feature>_2D`` (features per slice, averaged),
``szm_<feature>_2_5D`` (slice matrices merged) or ``szm_<feature>_3D``.
"""

from __future__ import annotations

import torch

from radiomics.texture._grid import RoiGrid, checked_grid
from radiomics.texture._matrix import SINGLE_SCHEMES, FamilyCounts, level_counts, zone_family_features
from radiomics.texture._zones import label_zones, zone_sizes

#: IBSI short name -> generic run/zone feature (see :func:`radiomics.texture._matrix.zone_features`).
NAMES = {
    "sze": "short", "lze": "long", "lgze": "low", "hgze": "high", "szlge": "short_low", "szhge": "short_high",
    "lzlge": "long_low", "lzhge": "long_high", "glnu": "glnu", "glnu_norm": "glnu_norm", "zsnu": "jnu",
    "zsnu_norm": "jnu_norm", "z_perc": "perc", "gl_var": "gl_var", "zs_var": "j_var", "zs_entr": "j_entr",
}  # fmt: skip


def glszm_counts(grid: RoiGrid, n_levels: int, dims: str) -> FamilyCounts:
    """Zone counts (grey level x zone size) per group ``(b, z)`` or ``b``, voxel counts and layout."""
    roots, sizes = zone_sizes(label_zones(grid, dims))
    return level_counts(grid, n_levels, dims, sizes, voxels=roots)


def glszm_from_grid(grid: RoiGrid, n_levels: int, dims: str) -> dict[str, torch.Tensor]:
    """GLSZM features of a prepared :class:`RoiGrid`; see :func:`glszm_features`."""
    return zone_family_features(glszm_counts(grid, n_levels, dims), SINGLE_SCHEMES[dims], "szm", NAMES)


def glszm_features(levels: torch.Tensor, mask: torch.Tensor, n_levels: int, *, dims: str) -> dict[str, torch.Tensor]:
    """IBSI GLSZM features of a batch of VOIs: ``szm_<feature>_<aggregation>`` -> ``(B,)`` float64.

    The arguments are those of :func:`radiomics.texture.texture_features`, documented there once for all six
    families. NaN for an empty VOI.
    """
    return glszm_from_grid(checked_grid(levels, mask, n_levels, dims), n_levels, dims)
