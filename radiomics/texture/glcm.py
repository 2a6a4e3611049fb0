"""Grey level co-occurrence matrix (GLCM) features, IBSI reference manual §3.6 (arXiv:1612.07003).

Symmetric co-occurrence of grey levels of ROI voxel pairs at Chebyshev distance 1 along 13 directions
(3D) or 4 in-plane directions (2D), both voxels inside the ROI. Tags ``cm_<feature>_<aggregation>``
with aggregations 2D_avg / 2D_comb / 2_5D_avg / 2_5D_comb (``dims="2D"``) or 3D_avg / 3D_comb.
"""

from __future__ import annotations

import math

import torch

from radiomics.texture._grid import RoiGrid, checked_grid, dense_is_cheaper, directions, levels_per_voi
from radiomics.texture._matrix import (
    DIRECTIONAL_SCHEMES,
    Layout,
    SparseCounts,
    aggregate,
    count_triples,
    decode_keys,
    family_layout,
)

FEATURES = (
    "joint_max", "joint_avg", "joint_var", "joint_entr", "diff_avg", "diff_var", "diff_entr", "sum_avg", "sum_var",
    "sum_entr", "energy", "contrast", "dissimilarity", "inv_diff", "inv_diff_norm", "inv_diff_mom",
    "inv_diff_mom_norm", "inv_var", "corr", "auto_corr", "clust_tend", "clust_shade", "clust_prom", "info_corr1",
    "info_corr2",
)  # fmt: skip


def glcm_counts(grid: RoiGrid, n_levels: int, dims: str) -> tuple[SparseCounts, Layout]:
    """Symmetric co-occurrence counts per finest group ``(b, z, d)`` (``z`` only for 2D)."""
    dirs = directions(dims)
    group, layout = family_layout(grid, dims, len(dirs))
    R = n_levels + 1
    space = layout.n_groups * R * R
    base = (group * len(dirs) * R + grid.levels) * R  # key of (group, direction 0, level i, level 0)
    dense = dense_is_cheaper(space, 2 * len(dirs) * grid.n)
    # A neighbour outside the ROI reads level 0: its pairs land in the unused column 0, dropped below.
    keys = torch.stack([base + d * R * R + grid.neighbour_level(offset) for d, offset in enumerate(dirs)])
    if dense:
        # One bincount over every direction: per-direction ones each allocated and added a (space,) vector.
        one_sided = torch.bincount(keys.reshape(-1), minlength=space)
        # Count each pair once and add the transpose: the symmetric matrix without doubling the keys.
        square = one_sided[:space].view(layout.n_groups, R, R)
        square[:, :, 0] = 0
        flat = (square + square.transpose(1, 2)).reshape(-1)
        present = torch.nonzero(flat).reshape(-1)
        return decode_keys(present, flat[present].to(torch.float64), layout.n_groups, R, R), layout
    key = keys[keys % R > 0]
    g, li, lj = key // (R * R), (key // R) % R, key % R
    return count_triples(torch.cat([g, g]), torch.cat([li, lj]), torch.cat([lj, li]), layout.n_groups, R, R), layout


def _marginal(m: SparseCounts, index: torch.Tensor, width: int, p: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(m.n_groups * width, dtype=p.dtype, device=p.device)
    return out.index_add_(0, m.group * width + index, p).view(m.n_groups, width)


def _entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return -torch.special.xlogy(p, p).sum(dim=dim) / math.log(2.0)


def _moments(marg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, variance and entropy (log2) of each row of a ``(G, K)`` distribution over k = 0..K-1."""
    k = torch.arange(marg.shape[1], dtype=marg.dtype, device=marg.device)
    mean = (marg * k).sum(dim=1)
    var = (marg * (k - mean[:, None]) ** 2).sum(dim=1)
    return mean, var, _entropy(marg)


def glcm_matrix_features(m: SparseCounts, n_levels: int | torch.Tensor) -> dict[str, torch.Tensor]:
    """The 25 IBSI GLCM features of each matrix in ``m``; values ``(G,)`` float64 (NaN for an empty matrix).

    ``n_levels`` is ``N_g`` of every matrix, or ``(G,)`` float64 per matrix. ``info_corr1`` divides by
    ``max(HX, HY)``; ``HXY2 = HX + HY`` exactly because the marginals sum to one.
    """
    i = m.row.to(torch.float64)
    j = m.col.to(torch.float64)
    p = m.count / m.group_sum(m.count)[m.group]
    gs = m.group_sum
    px = _marginal(m, m.row, m.n_rows, p)
    py = _marginal(m, m.col, m.n_cols, p)
    mu_x, var_x, hx = _moments(px)
    mu_y, var_y, hy = _moments(py)
    d_avg, d_var, d_entr = _moments(_marginal(m, (m.row - m.col).abs(), m.n_rows, p))
    s_avg, s_var, s_entr = _moments(_marginal(m, m.row + m.col, 2 * m.n_rows - 1, p))
    hxy = -gs(torch.special.xlogy(p, p)) / math.log(2.0)
    hxy1 = -gs(p * torch.log2(px[m.group, m.row] * py[m.group, m.col]))
    diff = i - j
    centred = i + j - mu_x[m.group] - mu_y[m.group]
    off_diag = diff != 0
    n_g = n_levels[m.group] if isinstance(n_levels, torch.Tensor) else float(n_levels)
    return {
        "joint_max": torch.zeros(m.n_groups, dtype=p.dtype, device=p.device).scatter_reduce_(
            0, m.group, p, "amax", include_self=False
        ),
        "joint_avg": gs(i * p),
        "joint_var": gs((i - mu_x[m.group]) ** 2 * p),
        "joint_entr": hxy,
        "diff_avg": d_avg,
        "diff_var": d_var,
        "diff_entr": d_entr,
        "sum_avg": s_avg,
        "sum_var": s_var,
        "sum_entr": s_entr,
        "energy": gs(p * p),
        "contrast": gs(diff**2 * p),
        "dissimilarity": gs(diff.abs() * p),
        "inv_diff": gs(p / (1.0 + diff.abs())),
        "inv_diff_norm": gs(p / (1.0 + diff.abs() / n_g)),
        "inv_diff_mom": gs(p / (1.0 + diff**2)),
        "inv_diff_mom_norm": gs(p / (1.0 + diff**2 / n_g**2)),
        "inv_var": gs(torch.where(off_diag, p / torch.where(off_diag, diff**2, 1.0), 0.0)),
        "corr": (gs(i * j * p) - mu_x * mu_y) / torch.sqrt(var_x * var_y),
        "auto_corr": gs(i * j * p),
        "clust_tend": gs(centred**2 * p),
        "clust_shade": gs(centred**3 * p),
        "clust_prom": gs(centred**4 * p),
        "info_corr1": (hxy - hxy1) / torch.maximum(hx, hy),
        "info_corr2": torch.sqrt((1.0 - torch.exp(-2.0 * (hx + hy - hxy))).clamp(min=0.0)),
    }


def glcm_from_grid(
    grid: RoiGrid, n_levels: int, dims: str, per_voi: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """GLCM features of a prepared :class:`RoiGrid`; see :func:`glcm_features`.

    ``n_levels`` sizes the matrices (the batch's largest ``N_g``); ``per_voi`` (B,) float64, when given, is each
    VOI's own ``N_g`` for the normalised inverse differences.
    """
    m, layout = glcm_counts(grid, n_levels, dims)
    nv = torch.zeros(layout.n_groups, dtype=torch.float64, device=grid.device)
    if per_voi is None:
        return aggregate(
            m, nv, layout, DIRECTIONAL_SCHEMES[dims], "cm", lambda mm, _: glcm_matrix_features(mm, n_levels)
        )

    def per_matrix(mm: SparseCounts, _nv: torch.Tensor) -> dict[str, torch.Tensor]:
        # Merged groups stay ordered by VOI, each VOI holding the same number of them.
        voi = torch.arange(mm.n_groups, device=grid.device) // max(1, mm.n_groups // layout.n_voi)
        return glcm_matrix_features(mm, per_voi[voi])

    return aggregate(m, nv, layout, DIRECTIONAL_SCHEMES[dims], "cm", per_matrix)


def glcm_features(
    levels: torch.Tensor, mask: torch.Tensor, n_levels: int | torch.Tensor, *, dims: str
) -> dict[str, torch.Tensor]:
    """IBSI GLCM features of a batch of VOIs: ``cm_<feature>_<aggregation>`` -> ``(B,)`` float64.

    The arguments are those of :func:`radiomics.texture.texture_features` (``levels`` and ``mask`` are
    ``(B, Z, Y, X)``), documented there once for all six families; ``n_levels`` also scales the normalised
    inverse-difference features. NaN where a VOI has no voxel pair (or, for ``corr``, a single grey level).
    """
    grid = checked_grid(levels, mask, n_levels, dims)
    n_max, per_voi = levels_per_voi(n_levels, levels.shape[0], levels.device)
    return glcm_from_grid(grid, n_max, dims, per_voi if isinstance(n_levels, torch.Tensor) else None)
