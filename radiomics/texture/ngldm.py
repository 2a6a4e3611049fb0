"""Neighbouring grey level dependence matrix (NGLDM) features, IBSI reference manual §3.11 (arXiv:1612.07003).

Each ROI voxel is counted at its grey level ``i`` and dependence count ``j = 1 +`` the number of ROI
neighbours at Chebyshev distance 1 (26 in 3D, 8 in-plane in 2D) with the same grey level (coarseness
parameter alpha = 0). Tags ``ngl_<feature>_2D`` / ``_2_5D`` / ``_3D``.
"""

from __future__ import annotations

import torch

from radiomics.texture._grid import RoiGrid, build_grid, check_inputs, neighbourhood
from radiomics.texture._matrix import (
    SINGLE_SCHEMES,
    Layout,
    SparseCounts,
    aggregate,
    count_triples,
    rename,
    zone_features,
)

#: IBSI short name -> generic run/zone feature (see :func:`radiomics.texture._matrix.zone_features`).
NAMES = {
    "lde": "short", "hde": "long", "lgce": "low", "hgce": "high", "ldlge": "short_low", "ldhge": "short_high",
    "hdlge": "long_low", "hdhge": "long_high", "glnu": "glnu", "glnu_norm": "glnu_norm", "dcnu": "jnu",
    "dcnu_norm": "jnu_norm", "dc_perc": "perc", "gl_var": "gl_var", "dc_var": "j_var", "dc_entr": "j_entr",
    "dc_energy": "energy",
}  # fmt: skip


def ngldm_counts(grid: RoiGrid, n_levels: int, dims: str) -> tuple[SparseCounts, torch.Tensor, Layout]:
    """Dependence counts (grey level x dependence count) per group ``(b, z)`` or ``b``, voxel counts, layout."""
    offsets = neighbourhood(dims)
    dependence = torch.ones(grid.n, dtype=torch.int64, device=grid.device)
    for offset in offsets:
        nb = grid.neighbour(offset)
        dependence += ((nb >= 0) & (grid.levels[nb.clamp(min=0)] == grid.levels)).to(torch.int64)
    per_slice = dims == "2D"
    group, _ = grid.group(per_slice)
    B, Z, _, _ = grid.shape
    layout = Layout(B, Z if per_slice else 1, 1)
    m = count_triples(group, grid.levels, dependence, layout.n_groups, n_levels + 1, len(offsets) + 2)
    return m, grid.voxels_per_group(per_slice), layout


def ngldm_from_grid(grid: RoiGrid, n_levels: int, dims: str) -> dict[str, torch.Tensor]:
    """NGLDM features of a prepared :class:`RoiGrid`; see :func:`ngldm_features`."""
    m, nv, layout = ngldm_counts(grid, n_levels, dims)
    return aggregate(m, nv, layout, SINGLE_SCHEMES[dims], "ngl", lambda mm, v: rename(zone_features(mm, v), NAMES))


def ngldm_features(levels: torch.Tensor, mask: torch.Tensor, n_levels: int, *, dims: str) -> dict[str, torch.Tensor]:
    """IBSI NGLDM features of a batch of VOIs.

    Parameters
    ----------
    levels : torch.Tensor
        ``(B, Z, Y, X)`` int64 grey levels 1..n_levels inside the ROI (ignored outside).
    mask : torch.Tensor
        ``(B, Z, Y, X)`` bool intensity-ROI mask.
    n_levels : int
        Number of grey levels ``N_g``.
    dims : str
        ``"2D"`` (2D and 2.5D aggregations) or ``"3D"``.

    Returns
    -------
    dict of str to torch.Tensor
        ``ngl_<feature>_<aggregation>`` -> ``(B,)`` float64 on the input device (NaN for an empty VOI).
    """
    check_inputs(levels, mask, n_levels, dims)
    return ngldm_from_grid(build_grid(levels, mask), n_levels, dims)
