"""Grey level size zone matrix (GLSZM) features, IBSI reference manual §3.8 (arXiv:1612.07003).

A zone is a maximal group of same-level ROI voxels connected at Chebyshev distance 1 (26-connectivity
in 3D, 8-connectivity in-plane for 2D). Tags ``szm_<feature>_2D`` (features per slice, averaged),
``szm_<feature>_2_5D`` (slice matrices merged) or ``szm_<feature>_3D``.
"""

from __future__ import annotations

import torch

from radiomics.texture._grid import RoiGrid, build_grid, check_inputs
from radiomics.texture._matrix import (
    SINGLE_SCHEMES,
    Layout,
    SparseCounts,
    aggregate,
    count_triples,
    rename,
    zone_features,
)
from radiomics.texture._zones import label_zones, zone_sizes

#: IBSI short name -> generic run/zone feature (see :func:`radiomics.texture._matrix.zone_features`).
NAMES = {
    "sze": "short", "lze": "long", "lgze": "low", "hgze": "high", "szlge": "short_low", "szhge": "short_high",
    "lzlge": "long_low", "lzhge": "long_high", "glnu": "glnu", "glnu_norm": "glnu_norm", "zsnu": "jnu",
    "zsnu_norm": "jnu_norm", "z_perc": "perc", "gl_var": "gl_var", "zs_var": "j_var", "zs_entr": "j_entr",
}  # fmt: skip


def glszm_counts(grid: RoiGrid, n_levels: int, dims: str) -> tuple[SparseCounts, torch.Tensor, Layout]:
    """Zone counts (grey level x zone size) per group ``(b, z)`` or ``b``, voxel counts and layout."""
    per_slice = dims == "2D"
    group, _ = grid.group(per_slice)
    roots, sizes = zone_sizes(label_zones(grid, dims))
    B, Z, _, _ = grid.shape
    layout = Layout(B, Z if per_slice else 1, 1)
    n_cols = int(sizes.max()) + 1 if sizes.numel() else 1
    m = count_triples(group[roots], grid.levels[roots], sizes, layout.n_groups, n_levels + 1, n_cols)
    return m, grid.voxels_per_group(per_slice), layout


def glszm_from_grid(grid: RoiGrid, n_levels: int, dims: str) -> dict[str, torch.Tensor]:
    """GLSZM features of a prepared :class:`RoiGrid`; see :func:`glszm_features`."""
    m, nv, layout = glszm_counts(grid, n_levels, dims)
    return aggregate(m, nv, layout, SINGLE_SCHEMES[dims], "szm", lambda mm, v: rename(zone_features(mm, v), NAMES))


def glszm_features(levels: torch.Tensor, mask: torch.Tensor, n_levels: int, *, dims: str) -> dict[str, torch.Tensor]:
    """IBSI GLSZM features of a batch of VOIs.

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
        ``szm_<feature>_<aggregation>`` -> ``(B,)`` float64 on the input device (NaN for an empty VOI).
    """
    check_inputs(levels, mask, n_levels, dims)
    return glszm_from_grid(build_grid(levels, mask), n_levels, dims)
