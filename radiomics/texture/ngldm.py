"""Neighbouring grey level dependence matrix (NGLDM) features, IBSI reference manual §3.11 (arXiv:1612.07003).

Each ROI voxel is counted at its grey level ``i`` and dependence count ``j = 1 +`` the number of ROI
neighbours at Chebyshev distance 1 (26 in 3D, 8 in-plane in 2D) with the same grey level (coarseness
parameter alpha = 0). Tags ``ngl_<feature>_2D`` / ``_2_5D`` / ``_3D``.
"""

from __future__ import annotations

import torch

from radiomics.texture._grid import RoiGrid, checked_grid, neighbourhood
from radiomics.texture._matrix import SINGLE_SCHEMES, FamilyCounts, level_counts, zone_family_features

#: IBSI short name -> generic run/zone feature (see :func:`radiomics.texture._matrix.zone_features`).
NAMES = {
    "lde": "short", "hde": "long", "lgce": "low", "hgce": "high", "ldlge": "short_low", "ldhge": "short_high",
    "hdlge": "long_low", "hdhge": "long_high", "glnu": "glnu", "glnu_norm": "glnu_norm", "dcnu": "jnu",
    "dcnu_norm": "jnu_norm", "dc_perc": "perc", "gl_var": "gl_var", "dc_var": "j_var", "dc_entr": "j_entr",
    "dc_energy": "energy",
}  # fmt: skip


def ngldm_counts(grid: RoiGrid, n_levels: int, dims: str) -> FamilyCounts:
    """Dependence counts (grey level x dependence count) per group ``(b, z)`` or ``b``, voxel counts, layout."""
    offsets = neighbourhood(dims)
    dependence = torch.ones(grid.n, dtype=torch.int64, device=grid.device)
    for offset in offsets:
        dependence += grid.same_level_at(offset)
    return level_counts(grid, n_levels, dims, dependence, n_cols=len(offsets) + 2)


def ngldm_from_grid(grid: RoiGrid, n_levels: int, dims: str) -> dict[str, torch.Tensor]:
    """NGLDM features of a prepared :class:`RoiGrid`; see :func:`ngldm_features`."""
    return zone_family_features(ngldm_counts(grid, n_levels, dims), SINGLE_SCHEMES[dims], "ngl", NAMES)


def ngldm_features(levels: torch.Tensor, mask: torch.Tensor, n_levels: int, *, dims: str) -> dict[str, torch.Tensor]:
    """IBSI NGLDM features of a batch of VOIs: ``ngl_<feature>_<aggregation>`` -> ``(B,)`` float64.

    The arguments are those of :func:`radiomics.texture.texture_features`, documented there once for all six
    families; the coarseness parameter is alpha = 0. NaN for an empty VOI.
    """
    return ngldm_from_grid(checked_grid(levels, mask, n_levels, dims), n_levels, dims)
