"""Many texture matrices in coordinate form, their IBSI aggregation, and the run/zone/dependence features.

Every family counts, for each finest group ``(b, z, d)`` (VOI, slice, direction), entries ``(i, j)`` of
its matrix: grey level ``i`` and a second index ``j`` (grey level, run length, zone size, distance or
dependence count). Keeping only non-zero entries makes memory scale with the ROI, not with
``n_levels x max zone size``, and lets one call handle B VOIs of any sizes.

GLRLM, GLSZM, GLDZM and NGLDM share one feature set that differs only in what ``j`` means (IBSI
reference manual, arXiv:1612.07003, §3.7-3.11); :func:`zone_features` computes it once under
generic names that each family renames to its IBSI tags.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from radiomics.texture._grid import RoiGrid, count_keys, sum_keys

#: ``(suffix, keep_slices, keep_directions)``: per-slice and/or per-direction groups are averaged
#: after feature calculation; the others are merged before it (IBSI §3.1.2).
Scheme = tuple[str, bool, bool]
DIRECTIONAL_SCHEMES: dict[str, tuple[Scheme, ...]] = {
    "2D": (("2D_avg", True, True), ("2D_comb", True, False), ("2_5D_avg", False, True), ("2_5D_comb", False, False)),
    "3D": (("3D_avg", False, True), ("3D_comb", False, False)),
}
SINGLE_SCHEMES: dict[str, tuple[Scheme, ...]] = {
    "2D": (("2D", True, False), ("2_5D", False, False)),
    "3D": (("3D", False, False),),
}

FeatureFn = Callable[["SparseCounts", torch.Tensor], dict[str, torch.Tensor]]
#: What a run/zone/dependence family counts: the matrices, the ROI voxel count of each group, the layout.
FamilyCounts = tuple["SparseCounts", torch.Tensor, "Layout"]


@dataclass(frozen=True)
class Layout:
    """Sizes of the finest grouping: ``n_voi`` VOIs x ``n_slices`` slices x ``n_dirs`` directions."""

    n_voi: int
    n_slices: int
    n_dirs: int

    @property
    def n_groups(self) -> int:
        """Number of finest groups."""
        return self.n_voi * self.n_slices * self.n_dirs


@dataclass(frozen=True)
class SparseCounts:
    """Non-zero entries of one ``(n_rows, n_cols)`` count matrix per group.

    Attributes
    ----------
    group, row, col : torch.Tensor
        ``(E,)`` int64 group index, row ``i`` (grey level, 1..n_rows-1) and column ``j`` of each entry.
    count : torch.Tensor
        ``(E,)`` float64 count of each entry (> 0).
    n_groups, n_rows, n_cols : int
        Matrix-stack sizes; ``n_rows = n_levels + 1`` so that a grey level indexes its own row.
    """

    group: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    count: torch.Tensor
    n_groups: int
    n_rows: int
    n_cols: int

    def group_sum(self, values: torch.Tensor) -> torch.Tensor:
        """``(G,)`` sum of per-entry ``values`` (E,) over the entries of each group."""
        out = torch.zeros(self.n_groups, dtype=values.dtype, device=values.device)
        return out.index_add_(0, self.group, values)

    def row_marginal(self, values: torch.Tensor) -> torch.Tensor:
        """``(G, n_rows)`` sum of per-entry ``values`` over the columns of each row."""
        out = torch.zeros(self.n_groups * self.n_rows, dtype=values.dtype, device=values.device)
        return out.index_add_(0, self.group * self.n_rows + self.row, values).view(self.n_groups, self.n_rows)


def family_layout(grid: RoiGrid, dims: str, n_dirs: int = 1) -> tuple[torch.Tensor, Layout]:
    """Finest group of each ROI voxel, ``(N,)`` ``b * Z + z`` (2D) or ``b`` (3D), and the :class:`Layout`.

    ``n_dirs`` directions per ``(b, z)``; a directional family numbers its groups ``group * n_dirs + d``.
    """
    per_slice = dims == "2D"
    group, _ = grid.group(per_slice)
    B, Z, _, _ = grid.shape
    return group, Layout(B, Z if per_slice else 1, n_dirs)


def level_counts(
    grid: RoiGrid,
    n_levels: int,
    dims: str,
    cols: torch.Tensor,
    voxels: torch.Tensor | None = None,
    n_cols: int | None = None,
) -> FamilyCounts:
    """Grey level x ``cols`` counts of a non-directional family (GLSZM, GLDZM, NGLDM) per group ``(b, z)`` or ``b``.

    Parameters
    ----------
    grid : RoiGrid
        The ROI voxels of the batch.
    n_levels : int
        Number of grey levels ``N_g``.
    dims : str
        ``"2D"`` (groups per slice) or ``"3D"``.
    cols : torch.Tensor
        ``(K,)`` int64 column ``j`` (zone size, distance, dependence count) of each counted voxel.
    voxels : torch.Tensor, optional
        ``(K,)`` compact indices of the counted voxels (zone roots); every ROI voxel when omitted.
    n_cols : int, optional
        Number of matrix columns; ``max(cols) + 1`` (1 when there is no entry) when omitted.

    Returns
    -------
    tuple
        The :class:`SparseCounts`, the ``(G,)`` float64 ROI voxel count of each group, and the :class:`Layout`.
    """
    group, layout = family_layout(grid, dims)
    rows = grid.levels
    if voxels is not None:
        group, rows = group[voxels], rows[voxels]
    if n_cols is None:
        n_cols = int(cols.max()) + 1 if cols.numel() else 1
    m = count_triples(group, rows, cols, layout.n_groups, n_levels + 1, n_cols)
    return m, grid.voxels_per_group(dims == "2D"), layout


def count_triples(
    group: torch.Tensor, row: torch.Tensor, col: torch.Tensor, n_groups: int, n_rows: int, n_cols: int
) -> SparseCounts:
    """Count occurrences of the ``(group, row, col)`` triples (each ``(M,)`` int64) into a :class:`SparseCounts`."""
    keys = (group * n_rows + row) * n_cols + col
    present, counts = count_keys(keys, n_groups * n_rows * n_cols)
    return decode_keys(present, counts, n_groups, n_rows, n_cols)


def decode_keys(keys: torch.Tensor, counts: torch.Tensor, n_groups: int, n_rows: int, n_cols: int) -> SparseCounts:
    """:class:`SparseCounts` from distinct keys ``(group * n_rows + row) * n_cols + col`` and their counts."""
    return SparseCounts(
        group=keys // (n_rows * n_cols),
        row=(keys // n_cols) % n_rows,
        col=keys % n_cols,
        count=counts,
        n_groups=n_groups,
        n_rows=n_rows,
        n_cols=n_cols,
    )


def merge(
    m: SparseCounts, nv: torch.Tensor, layout: Layout, keep_slices: bool, keep_dirs: bool
) -> tuple[SparseCounts, torch.Tensor, torch.Tensor]:
    """Sum the finest-group matrices over slices and/or directions.

    Returns the merged counts, the merged voxel counts ``nv`` (G',) and the VOI index of each merged group.
    Merging sums the voxel counts too, as IBSI prescribes for percentage features of merged matrices.
    """
    Zk = layout.n_slices if keep_slices else 1
    Dk = layout.n_dirs if keep_dirs else 1
    n_groups = layout.n_voi * Zk * Dk
    voi_of_group = torch.arange(n_groups, device=nv.device) // (Zk * Dk)
    if Zk == layout.n_slices and Dk == layout.n_dirs:
        return m, nv, voi_of_group
    g_all = torch.arange(layout.n_groups, device=nv.device)
    coarse = _coarse_group(g_all, layout, Zk, Dk)
    nv_merged = torch.zeros(n_groups, dtype=nv.dtype, device=nv.device).index_add_(0, coarse, nv)
    keys = (coarse[m.group] * m.n_rows + m.row) * m.n_cols + m.col
    present, counts = sum_keys(keys, m.count, n_groups * m.n_rows * m.n_cols)
    return decode_keys(present, counts, n_groups, m.n_rows, m.n_cols), nv_merged, voi_of_group


def _coarse_group(g: torch.Tensor, layout: Layout, Zk: int, Dk: int) -> torch.Tensor:
    per_voi = layout.n_slices * layout.n_dirs
    b = g // per_voi
    z = (g // layout.n_dirs) % layout.n_slices
    d = g % layout.n_dirs
    return (b * Zk + (z if Zk > 1 else 0)) * Dk + (d if Dk > 1 else 0)


def average_over_groups(
    values: torch.Tensor, present: torch.Tensor, voi_of_group: torch.Tensor, n_voi: int
) -> torch.Tensor:
    """``(B,)`` mean of per-group ``values`` (G,) over the ``present`` groups of each VOI (NaN if none)."""
    zeros = torch.zeros(n_voi, dtype=torch.float64, device=values.device)
    sums = zeros.index_add(0, voi_of_group[present], values[present])
    counts = zeros.index_add(0, voi_of_group[present], torch.ones_like(values[present]))
    return sums / counts


def aggregate(
    m: SparseCounts, nv: torch.Tensor, layout: Layout, schemes: Sequence[Scheme], prefix: str, fn: FeatureFn
) -> dict[str, torch.Tensor]:
    """Features ``f"{prefix}_{name}_{suffix}"`` (B,) for every aggregation scheme of a family."""
    out: dict[str, torch.Tensor] = {}
    for suffix, keep_slices, keep_dirs in schemes:
        merged, nv_merged, voi_of_group = merge(m, nv, layout, keep_slices, keep_dirs)
        present = merged.group_sum(merged.count) > 0
        tag = f"{prefix}_{{}}_{suffix}"
        out.update(average_features(fn(merged, nv_merged), tag, present, voi_of_group, layout.n_voi))
    return out


def average_features(
    features: dict[str, torch.Tensor], tag: str, present: torch.Tensor, voi_of_group: torch.Tensor, n_voi: int
) -> dict[str, torch.Tensor]:
    """Per-VOI means ``(n_voi,)`` of per-group ``features`` (each ``(G,)``), keyed ``tag.format(name)``.

    ``present`` (G,) bool marks the groups with a non-empty matrix and ``voi_of_group`` (G,) the VOI of each
    group; a VOI without any present group gets NaN (see :func:`average_over_groups`).
    """
    return {tag.format(name): average_over_groups(v, present, voi_of_group, n_voi) for name, v in features.items()}


def zone_family_features(
    counts: FamilyCounts, schemes: Sequence[Scheme], prefix: str, names: dict[str, str]
) -> dict[str, torch.Tensor]:
    """Features of a run/zone/dependence family: :func:`zone_features` renamed by ``names`` and aggregated."""
    m, nv, layout = counts
    return aggregate(m, nv, layout, schemes, prefix, lambda mm, v: rename(zone_features(mm, v), names))


def _xlog2x(p: torch.Tensor) -> torch.Tensor:
    return torch.special.xlogy(p, p) / torch.log(torch.tensor(2.0, dtype=p.dtype, device=p.device))


def zone_features(m: SparseCounts, nv: torch.Tensor) -> dict[str, torch.Tensor]:
    """The run/zone/dependence feature set under generic names; each value is ``(G,)`` float64.

    ``short``/``long`` weight by ``1/j^2``/``j^2``, ``low``/``high`` by ``1/i^2``/``i^2`` (IBSI §3.7.1-3.7.8);
    ``glnu``/``jnu`` are the non-uniformities of the row/column marginals, ``perc`` = N_s / N_v,
    ``gl_var``/``j_var``/``j_entr``/``energy`` use ``p_ij = s_ij / N_s``.
    """
    i = m.row.to(torch.float64)
    j = m.col.to(torch.float64)
    c = m.count
    n_s = m.group_sum(c)
    i2, j2 = i * i, j * j
    rows = m.row_marginal(c)
    col_keys, col_sums = sum_keys(m.group * m.n_cols + m.col, c, m.n_groups * m.n_cols)
    col_sq = torch.zeros_like(n_s).index_add_(0, col_keys // m.n_cols, col_sums * col_sums)
    p = c / n_s[m.group]
    mu_i = m.group_sum(i * p)
    mu_j = m.group_sum(j * p)
    glnu = (rows * rows).sum(dim=1) / n_s
    jnu = col_sq / n_s
    return {
        "short": m.group_sum(c / j2) / n_s,
        "long": m.group_sum(c * j2) / n_s,
        "low": m.group_sum(c / i2) / n_s,
        "high": m.group_sum(c * i2) / n_s,
        "short_low": m.group_sum(c / (i2 * j2)) / n_s,
        "short_high": m.group_sum(c * i2 / j2) / n_s,
        "long_low": m.group_sum(c * j2 / i2) / n_s,
        "long_high": m.group_sum(c * i2 * j2) / n_s,
        "glnu": glnu,
        "glnu_norm": glnu / n_s,
        "jnu": jnu,
        "jnu_norm": jnu / n_s,
        "perc": n_s / nv,
        "gl_var": m.group_sum((i - mu_i[m.group]) ** 2 * p),
        "j_var": m.group_sum((j - mu_j[m.group]) ** 2 * p),
        "j_entr": -m.group_sum(_xlog2x(p)),
        "energy": m.group_sum(p * p),
    }


def rename(generic: dict[str, torch.Tensor], names: dict[str, str]) -> dict[str, torch.Tensor]:
    """Pick and rename generic features: ``names`` maps IBSI short name -> generic name."""
    return {ibsi: generic[key] for ibsi, key in names.items()}
