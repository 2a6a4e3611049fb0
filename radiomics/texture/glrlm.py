"""Grey level run length matrix (GLRLM) features, IBSI reference manual §3.7 (arXiv:1612.07003).

A run is a maximal line of ROI voxels with the same grey level along one of 13 directions (3D) or 4
in-plane directions (2D). Tags ``rlm_<feature>_<aggregation>`` as for the GLCM. For merged matrices
the run percentage divides by the voxel count summed over the merged matrices, as IBSI prescribes.
"""

from __future__ import annotations

import torch

from radiomics.texture._grid import RoiGrid, build_grid, check_inputs, directions
from radiomics.texture._matrix import (
    DIRECTIONAL_SCHEMES,
    Layout,
    SparseCounts,
    aggregate,
    count_triples,
    rename,
    zone_features,
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
    back = grid.neighbour((-offset[0], -offset[1], -offset[2]))
    own = torch.arange(grid.n, device=grid.device)
    continues = (back >= 0) & (grid.levels[back.clamp(min=0)] == grid.levels)
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


def glrlm_counts(grid: RoiGrid, n_levels: int, dims: str) -> tuple[SparseCounts, torch.Tensor, Layout]:
    """Run counts per finest group ``(b, z, d)``, the ROI voxel count of each group, and the layout."""
    dirs = directions(dims)
    per_slice = dims == "2D"
    group, _ = grid.group(per_slice)
    groups, rows, cols = [], [], []
    for d, offset in enumerate(dirs):
        first, lengths = run_starts(grid, offset)
        groups.append(group[first] * len(dirs) + d)
        rows.append(grid.levels[first])
        cols.append(lengths)
    B, Z, _, _ = grid.shape
    layout = Layout(B, Z if per_slice else 1, len(dirs))
    n_cols = max(grid.shape[1:]) + 1
    m = count_triples(torch.cat(groups), torch.cat(rows), torch.cat(cols), layout.n_groups, n_levels + 1, n_cols)
    nv = grid.voxels_per_group(per_slice).repeat_interleave(len(dirs))
    return m, nv, layout


def glrlm_from_grid(grid: RoiGrid, n_levels: int, dims: str) -> dict[str, torch.Tensor]:
    """GLRLM features of a prepared :class:`RoiGrid`; see :func:`glrlm_features`."""
    m, nv, layout = glrlm_counts(grid, n_levels, dims)
    return aggregate(m, nv, layout, DIRECTIONAL_SCHEMES[dims], "rlm", lambda mm, v: rename(zone_features(mm, v), NAMES))


def glrlm_features(levels: torch.Tensor, mask: torch.Tensor, n_levels: int, *, dims: str) -> dict[str, torch.Tensor]:
    """IBSI GLRLM features of a batch of VOIs.

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
        ``rlm_<feature>_<aggregation>`` -> ``(B,)`` float64 on the input device (NaN for an empty VOI).
    """
    check_inputs(levels, mask, n_levels, dims)
    return glrlm_from_grid(build_grid(levels, mask), n_levels, dims)
