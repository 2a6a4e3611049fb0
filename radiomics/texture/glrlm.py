"""Grey level run length matrix (GLRLM) features, IBSI reference manual §3.7 (arXiv:1612.07003).

A run is a maximal line of ROI voxels with the same grey level along one of 13 directions (3D) or 4
in-plane directions (2D). Tags ``rlm_<feature>_<aggregation>`` as for the GLCM. For merged matrices
the run percentage divides by the voxel count summed over the merged matrices, as IBSI prescribes.
"""

from __future__ import annotations

import torch

from radiomics.texture._grid import RoiGrid, checked_grid, directions
from radiomics.texture._matrix import (
    DIRECTIONAL_SCHEMES,
    FamilyCounts,
    count_triples,
    family_layout,
    zone_family_features,
)

#: IBSI short name -> generic run/zone feature (see :func:`radiomics.texture._matrix.zone_features`).
NAMES = {
    "sre": "short", "lre": "long", "lgre": "low", "hgre": "high", "srlge": "short_low", "srhge": "short_high",
    "lrlge": "long_low", "lrhge": "long_high", "glnu": "glnu", "glnu_norm": "glnu_norm", "rlnu": "jnu",
    "rlnu_norm": "jnu_norm", "r_perc": "perc", "gl_var": "gl_var", "rl_var": "j_var", "rl_entr": "j_entr",
}  # fmt: skip


def run_starts(grid: RoiGrid, offset: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs along ``offset``: compact index of each run's first voxel and the run length (both ``(R,)`` int64).

    Each voxel points to its predecessor when that is an ROI voxel of the same grey level (itself
    otherwise); pointer doubling then sends every voxel to the start of its run in ``log2(length)`` steps.
    """
    back_offset = (-offset[0], -offset[1], -offset[2])
    back = grid.neighbour(back_offset)
    own = torch.arange(grid.n, device=grid.device)
    continues = grid.same_level_at(back_offset)
    start = torch.where(continues, back, own)
    active = torch.nonzero(continues).reshape(-1)
    while active.numel():
        # Only voxels whose pointer still moves are revisited; most runs are a few voxels long.
        target = start[start[active]]
        moved = target != start[active]
        start[active] = target
        active = active[moved]
    first = torch.nonzero(~continues).reshape(-1)
    lengths = torch.bincount(start, minlength=grid.n)
    return first, lengths[first]


def glrlm_counts(grid: RoiGrid, n_levels: int, dims: str) -> FamilyCounts:
    """Run counts per finest group ``(b, z, d)``, the ROI voxel count of each group, and the layout."""
    dirs = directions(dims)
    group, layout = family_layout(grid, dims, len(dirs))
    groups, rows, cols = [], [], []
    for d, offset in enumerate(dirs):
        first, lengths = run_starts(grid, offset)
        groups.append(group[first] * len(dirs) + d)
        rows.append(grid.levels[first])
        cols.append(lengths)
    n_cols = max(grid.shape[1:]) + 1
    m = count_triples(torch.cat(groups), torch.cat(rows), torch.cat(cols), layout.n_groups, n_levels + 1, n_cols)
    nv = grid.voxels_per_group(dims == "2D").repeat_interleave(len(dirs))
    return m, nv, layout


def glrlm_from_grid(grid: RoiGrid, n_levels: int, dims: str) -> dict[str, torch.Tensor]:
    """GLRLM features of a prepared :class:`RoiGrid`; see :func:`glrlm_features`."""
    return zone_family_features(glrlm_counts(grid, n_levels, dims), DIRECTIONAL_SCHEMES[dims], "rlm", NAMES)


def glrlm_features(levels: torch.Tensor, mask: torch.Tensor, n_levels: int, *, dims: str) -> dict[str, torch.Tensor]:
    """IBSI GLRLM features of a batch of VOIs: ``rlm_<feature>_<aggregation>`` -> ``(B,)`` float64.

    The arguments are those of :func:`radiomics.texture.texture_features`, documented there once for all six
    families; the four 2D/2.5D or two 3D aggregations are averaged over (``avg``) or merged across (``comb``)
    the run directions. NaN for an empty VOI.
    """
    return glrlm_from_grid(checked_grid(levels, mask, n_levels, dims), n_levels, dims)
