"""Neighbourhood grey tone difference matrix (NGTDM) features, IBSI reference manual §3.10 (arXiv:1612.07003).

For each ROI voxel the mean grey level of its neighbours at Chebyshev distance 1 that are inside the
ROI (26 in 3D, 8 in-plane in 2D) is compared with its own; voxels without any ROI neighbour are left
out (they have no neighbourhood). Per grey level ``i``: ``n_i`` voxels, ``s_i = sum |i - mean|``.
Tags ``ngt_<feature>_2D`` (per slice, averaged), ``ngt_<feature>_2_5D`` (slices merged), ``ngt_<feature>_3D``.
"""

from __future__ import annotations

import torch

from radiomics.texture._grid import RoiGrid, checked_grid, neighbourhood
from radiomics.texture._matrix import average_features

FEATURES = ("coarseness", "contrast", "busyness", "complexity", "strength")

#: Groups whose pairwise (G, L, L) terms are evaluated at once; bounds memory to ~ 8 * 2**24 bytes.
_PAIRWISE_BUDGET = 1 << 24


def ngtdm_counts(grid: RoiGrid, n_levels: int, dims: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense ``n`` and ``s`` of shape ``(G, n_levels + 1)`` float64 per group ``(b, z)`` (2D) or ``b`` (3D)."""
    # Integer sums are exact and cheaper than float64 ones; a neighbour outside the ROI reads level 0.
    total = torch.zeros(grid.n, dtype=torch.int64, device=grid.device)
    count = torch.zeros(grid.n, dtype=torch.int64, device=grid.device)
    for offset in neighbourhood(dims):
        total += grid.neighbour_level(offset)
        count += grid.neighbour(offset) >= 0
    has = count > 0
    levels = grid.levels.to(torch.float64)
    diff = torch.where(has, (levels - total / count.clamp(min=1).to(torch.float64)).abs(), 0.0)
    group, n_groups = grid.group(dims == "2D")
    width = n_levels + 1
    index = group * width + grid.levels
    n = torch.zeros(n_groups * width, dtype=torch.float64, device=grid.device).index_add_(0, index, has.double())
    s = torch.zeros(n_groups * width, dtype=torch.float64, device=grid.device).index_add_(0, index, diff)
    return n.view(n_groups, width), s.view(n_groups, width)


def ngtdm_matrix_features(n: torch.Tensor, s: torch.Tensor) -> dict[str, torch.Tensor]:
    """The five IBSI NGTDM features of each group's ``n`` and ``s`` (both ``(G, L)``); values ``(G,)`` float64.

    Coarseness is ``1 / sum p_i s_i``; it is infinite when every neighbourhood is uniform (``s = 0``), and
    contrast, busyness and strength then follow their formulas (0, NaN and NaN/inf) rather than a convention.
    """
    n_vc = n.sum(dim=1)
    p = n / n_vc[:, None]
    present = p > 0
    n_gp = present.sum(dim=1).to(torch.float64)
    i = torch.arange(n.shape[1], dtype=torch.float64, device=n.device)
    ps_sum = (p * s).sum(dim=1)
    s_sum = s.sum(dim=1)
    pair_contrast, pair_busy, pair_complex, pair_strength = [], [], [], []
    step = max(1, _PAIRWISE_BUDGET // max(1, n.shape[1] ** 2))
    for lo in range(0, n.shape[0], step):
        sl = slice(lo, lo + step)
        pi, pj = p[sl, :, None], p[sl, None, :]
        both = present[sl, :, None] & present[sl, None, :]
        d = (i[:, None] - i[None, :]).expand_as(both)
        pair_contrast.append((pi * pj * d**2).sum(dim=(1, 2)))
        ip = i * p[sl]
        pair_busy.append(torch.where(both, (ip[:, :, None] - ip[:, None, :]).abs(), 0.0).sum(dim=(1, 2)))
        ps = p[sl] * s[sl]
        frac = (ps[:, :, None] + ps[:, None, :]) / torch.where(both, pi + pj, 1.0)
        pair_complex.append(torch.where(both, d.abs() * frac, 0.0).sum(dim=(1, 2)))
        pair_strength.append(torch.where(both, (pi + pj) * d**2, 0.0).sum(dim=(1, 2)))
    return {
        "coarseness": 1.0 / ps_sum,
        "contrast": torch.cat(pair_contrast) / (n_gp * (n_gp - 1.0)) * s_sum / n_vc,
        "busyness": ps_sum / torch.cat(pair_busy),
        "complexity": torch.cat(pair_complex) / n_vc,
        "strength": torch.cat(pair_strength) / s_sum,
    }


def ngtdm_from_grid(grid: RoiGrid, n_levels: int, dims: str) -> dict[str, torch.Tensor]:
    """NGTDM features of a prepared :class:`RoiGrid`; see :func:`ngtdm_features`."""
    n, s = ngtdm_counts(grid, n_levels, dims)
    B, Z, _, _ = grid.shape
    schemes = [("2D", True), ("2_5D", False)] if dims == "2D" else [("3D", False)]
    out: dict[str, torch.Tensor] = {}
    for suffix, per_slice in schemes:
        if dims == "2D" and not per_slice:
            n_g, s_g = n.view(B, Z, -1).sum(dim=1), s.view(B, Z, -1).sum(dim=1)
        else:
            n_g, s_g = n, s
        voi_of_group = torch.arange(n_g.shape[0], device=n.device) // (n_g.shape[0] // B if B else 1)
        present = n_g.sum(dim=1) > 0
        out.update(average_features(ngtdm_matrix_features(n_g, s_g), f"ngt_{{}}_{suffix}", present, voi_of_group, B))
    return out


def ngtdm_features(levels: torch.Tensor, mask: torch.Tensor, n_levels: int, *, dims: str) -> dict[str, torch.Tensor]:
    """IBSI NGTDM features of a batch of VOIs: ``ngt_<feature>_<aggregation>`` -> ``(B,)`` float64.

    The arguments are those of :func:`radiomics.texture.texture_features`, documented there once for all six
    families. NaN for a VOI without any voxel that has a neighbour.
    """
    return ngtdm_from_grid(checked_grid(levels, mask, n_levels, dims), n_levels, dims)
