"""Compact voxel grid shared by the texture families: ROI voxels, their neighbours and their groups.

A batch of ``B`` volumes of interest padded into one ``(B, Z, Y, X)`` tensor is padded once more by one
empty voxel on every side of every spatial axis and flattened. A neighbour at offset ``(dz, dy, dx)`` is
then a constant shift of the flat index that can never wrap into another row, slice or VOI, so every
neighbourhood operation of the IBSI texture families (pairs, runs, zones, distance maps, neighbourhood
means) becomes a gather over the ``N`` ROI voxels of the whole batch at once.

Groups carry the IBSI aggregation: each ROI voxel belongs to VOI ``b`` and, for 2D texture, to slice
``z``; directional families add a direction index ``d``. Matrices are counted once at the finest
``(b, z, d)`` level and then merged (summed) over slices and/or directions for the merged ("comb",
2.5D) variants, or turned into features per group and averaged ("avg", 2D) — IBSI reference manual
(Zwanenburg et al., arXiv:1612.07003) §3.1.2 "Texture feature aggregation".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional

from radiomics.exceptions import GeometryMismatchError, RadiomicsError, SettingsError

Offset = tuple[int, int, int]

#: One offset per direction (the opposite direction gives the same symmetric pairs / the same runs).
DIRECTIONS_3D: tuple[Offset, ...] = (
    (0, 0, 1), (0, 1, 0), (0, 1, 1), (0, 1, -1),
    (1, 0, 0), (1, 0, 1), (1, 0, -1), (1, 1, 0), (1, -1, 0),
    (1, 1, 1), (1, 1, -1), (1, -1, 1), (1, -1, -1),
)  # fmt: skip
DIRECTIONS_2D: tuple[Offset, ...] = DIRECTIONS_3D[:4]

#: Face neighbours (6-connectivity in 3D, 4-connectivity in-plane) used by the GLDZM distance map.
FACES_3D: tuple[Offset, ...] = ((0, 0, 1), (0, 0, -1), (0, 1, 0), (0, -1, 0), (1, 0, 0), (-1, 0, 0))
FACES_2D: tuple[Offset, ...] = FACES_3D[:4]

DIMS = ("2D", "3D")


def directions(dims: str) -> tuple[Offset, ...]:
    """The 13 (3D) or 4 (2D, in-plane) directions at Chebyshev distance 1, one per +/- pair."""
    return DIRECTIONS_3D if dims == "3D" else DIRECTIONS_2D


def neighbourhood(dims: str) -> tuple[Offset, ...]:
    """All 26 (3D) or 8 (2D, in-plane) offsets at Chebyshev distance 1."""
    half = directions(dims)
    return half + tuple((-dz, -dy, -dx) for dz, dy, dx in half)


def faces(dims: str) -> tuple[Offset, ...]:
    """Face-connected offsets: 6 in 3D, 4 in-plane in 2D."""
    return FACES_3D if dims == "3D" else FACES_2D


@dataclass(frozen=True)
class RoiGrid:
    """The ROI voxels of a batch of VOIs in compact form.

    Attributes
    ----------
    levels : torch.Tensor
        ``(N,)`` int64 grey level (1..n_levels) of every ROI voxel of the batch.
    flat : torch.Tensor
        ``(N,)`` int64 index of each ROI voxel in the padded, flattened grid.
    lookup : torch.Tensor
        ``(P,)`` int64 compact index of every cell of the padded grid, -1 where the cell is not ROI.
    batch, slice : torch.Tensor
        ``(N,)`` int64 VOI index ``b`` and slice index ``z`` of each ROI voxel.
    shape : tuple of int
        ``(B, Z, Y, X)`` of the unpadded input.
    cache : dict
        Results shared by several families of one call (zone labels).
    """

    levels: torch.Tensor
    flat: torch.Tensor
    lookup: torch.Tensor
    batch: torch.Tensor
    slice: torch.Tensor
    shape: tuple[int, int, int, int]
    cache: dict[object, torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    @property
    def n(self) -> int:
        """Number of ROI voxels in the batch."""
        return int(self.levels.numel())

    @property
    def device(self) -> torch.device:
        """Device of every tensor of the grid."""
        return self.levels.device

    def shift(self, offset: Offset) -> int:
        """Flat-index shift of a neighbour at ``(dz, dy, dx)`` voxels in the padded grid."""
        _, _, Y, X = self.shape
        dz, dy, dx = offset
        return dz * (Y + 2) * (X + 2) + dy * (X + 2) + dx

    def neighbour(self, offset: Offset) -> torch.Tensor:
        """``(N,)`` compact index of each voxel's neighbour at ``offset``; -1 where it is not in the ROI.

        Cached on the grid: GLCM, GLRLM, zones, NGTDM and NGLDM all gather the same 26 (8 in 2D) neighbours.
        """
        key = ("neighbour", offset)
        if key not in self.cache:
            self.cache[key] = self.lookup[self.flat + self.shift(offset)]
        return self.cache[key]

    @property
    def levels_or_zero(self) -> torch.Tensor:
        """``(N + 1,)`` grey levels with a trailing 0, so that ``levels_or_zero[nb]`` reads 0 where ``nb`` is -1."""
        key = "levels_or_zero"
        if key not in self.cache:
            self.cache[key] = functional.pad(self.levels, (0, 1))
        return self.cache[key]

    def neighbour_level(self, offset: Offset) -> torch.Tensor:
        """``(N,)`` int64 grey level of each voxel's neighbour at ``offset``; 0 where it is not in the ROI."""
        return self.levels_or_zero[self.neighbour(offset)]

    def same_level(self, nb: torch.Tensor) -> torch.Tensor:
        """``(N,)`` bool: whether neighbour ``nb`` (from :meth:`neighbour`) is an ROI voxel of the voxel's own level."""
        return self.levels_or_zero[nb] == self.levels  # levels are >= 1, so no non-ROI neighbour (0) matches

    def same_level_at(self, offset: Offset) -> torch.Tensor:
        """``(N,)`` bool :meth:`same_level` of the neighbour at ``offset``, cached (zones, GLRLM and NGLDM share it)."""
        key = ("same_level", offset)
        if key not in self.cache:
            self.cache[key] = self.same_level(self.neighbour(offset))
        return self.cache[key]

    def group(self, per_slice: bool) -> tuple[torch.Tensor, int]:
        """Group index of each voxel: ``b * Z + z`` when ``per_slice`` (2D), else ``b``; and the group count."""
        B, Z, _, _ = self.shape
        if per_slice:
            return self.batch * Z + self.slice, B * Z
        return self.batch, B

    def voxels_per_group(self, per_slice: bool) -> torch.Tensor:
        """``(G,)`` float64 number of ROI voxels in each group."""
        group, n_groups = self.group(per_slice)
        return torch.bincount(group, minlength=n_groups).to(torch.float64)


def build_grid(levels: torch.Tensor, mask: torch.Tensor) -> RoiGrid:
    """Compact the ROI voxels of ``levels`` (B, Z, Y, X) under ``mask`` (B, Z, Y, X) into a :class:`RoiGrid`.

    Levels outside the mask are ignored; levels inside it must be >= 1 (checked by :func:`check_inputs`).
    """
    B, Z, Y, X = levels.shape
    inside = torch.where(mask, levels, torch.zeros((), dtype=torch.int64, device=levels.device))
    padded = functional.pad(inside, (1, 1, 1, 1, 1, 1)).reshape(-1)
    flat = torch.nonzero(padded > 0).reshape(-1)
    lookup = torch.full_like(padded, -1)
    lookup[flat] = torch.arange(flat.numel(), device=levels.device)
    per_voi = (Z + 2) * (Y + 2) * (X + 2)
    return RoiGrid(
        levels=padded[flat],
        flat=flat,
        lookup=lookup,
        batch=flat // per_voi,
        slice=(flat % per_voi) // ((Y + 2) * (X + 2)) - 1,
        shape=(B, Z, Y, X),
    )


def levels_per_voi(n_levels: int | torch.Tensor, n_voi: int, device: torch.device) -> tuple[int, torch.Tensor]:
    """The largest ``N_g`` of a batch (the matrix size) and ``(B,)`` float64 ``N_g`` of each VOI.

    ``n_levels`` is one int for the whole batch or an ``(B,)`` integer tensor (fixed bin size gives each VOI its
    own highest level); it must have passed :func:`check_inputs`.
    """
    if isinstance(n_levels, torch.Tensor):
        per_voi = n_levels.to(device=device, dtype=torch.float64).reshape(n_voi)
        return (int(n_levels.max()) if n_levels.numel() else 1), per_voi
    return n_levels, torch.full((n_voi,), float(n_levels), dtype=torch.float64, device=device)


def checked_grid(
    levels: torch.Tensor,
    mask: torch.Tensor,
    n_levels: int | torch.Tensor,
    dims: str,
    spacing: tuple[float, float, float] | None = None,
) -> RoiGrid:
    """The prologue of every texture family: validate the arguments (:func:`check_inputs`), then :func:`build_grid`."""
    check_inputs(levels, mask, n_levels, dims, spacing)
    return build_grid(levels, mask)


def check_inputs(
    levels: torch.Tensor,
    mask: torch.Tensor,
    n_levels: int | torch.Tensor,
    dims: str,
    spacing: tuple[float, float, float] | None = None,
) -> None:
    """Validate the common arguments of every texture family; raise a :class:`RadiomicsError` subclass.

    Parameters
    ----------
    levels : torch.Tensor
        ``(B, Z, Y, X)`` int64 grey levels, 1..n_levels inside the ROI.
    mask : torch.Tensor
        ``(B, Z, Y, X)`` bool ROI mask.
    n_levels : int or torch.Tensor
        Number of discretisation levels ``N_g``: one int, or ``(B,)`` integers, one per VOI.
    dims : str
        ``"2D"`` or ``"3D"``.
    spacing : tuple of float, optional
        ``(z, y, x)`` voxel spacing in mm, checked to be positive when given.
    """
    if dims not in DIMS:
        raise SettingsError(f"dims must be '2D' or '3D', but was {dims!r}; pick the IBSI texture dimensionality.")
    _check_n_levels(n_levels, levels.shape[0] if levels.dim() else 0)
    if levels.dim() != 4 or levels.shape != mask.shape:
        raise GeometryMismatchError(
            f"levels and mask must both be (B, Z, Y, X) with the same shape, but were {tuple(levels.shape)} and "
            f"{tuple(mask.shape)}; add a batch axis or crop both the same way."
        )
    if levels.dtype != torch.int64 or mask.dtype != torch.bool:
        raise RadiomicsError(
            f"levels must be int64 and mask bool, but were {levels.dtype} and {mask.dtype}; "
            "discretise intensities first (radiomics.preprocess) and pass mask.bool()."
        )
    if levels.device != mask.device:
        raise GeometryMismatchError(f"levels is on {levels.device} but mask on {mask.device}; move both to one device.")
    _check_level_range(levels, mask, n_levels)
    if spacing is not None and (len(spacing) != 3 or min(spacing) <= 0):
        raise GeometryMismatchError(f"spacing must be three positive (z, y, x) mm values, but was {spacing!r}.")


def _check_n_levels(n_levels: int | torch.Tensor, n_voi: int) -> None:
    if isinstance(n_levels, torch.Tensor):
        if n_levels.dtype.is_floating_point or n_levels.dtype == torch.bool or n_levels.shape != (n_voi,):
            raise SettingsError(
                f"a per-VOI n_levels must be an integer tensor of shape ({n_voi},), but was {n_levels.dtype} "
                f"{tuple(n_levels.shape)}; pass one N_g per VOI of the batch, or one int."
            )
        if n_voi and int(n_levels.min()) < 1:
            raise SettingsError(f"n_levels must be positive, but was {n_levels.tolist()!r}; pass each VOI's N_g.")
        return
    if isinstance(n_levels, bool) or not isinstance(n_levels, int) or n_levels < 1:
        raise SettingsError(f"n_levels must be a positive int, but was {n_levels!r}; pass the discretisation N_g.")


def _check_level_range(levels: torch.Tensor, mask: torch.Tensor, n_levels: int | torch.Tensor) -> None:
    inside = levels[mask]
    if not inside.numel():
        return
    low, high = int(inside.min()), int(inside.max())
    if isinstance(n_levels, torch.Tensor):
        top = torch.where(mask, levels, 0).amax(dim=(1, 2, 3))
        over = torch.nonzero(top > n_levels.to(top.device)).reshape(-1)
        if low < 1 or over.numel():
            b = int(over[0]) if over.numel() else -1
            raise RadiomicsError(
                f"grey levels inside the ROI must lie in 1..n_levels of their VOI, but ranged {low}..{high}"
                + (f" and VOI {b} reached {int(top[b])} > n_levels[{b}] = {int(n_levels[b])}" if b >= 0 else "")
                + "; discretise first or pass each VOI's highest level as its n_levels."
            )
    elif low < 1 or high > n_levels:
        raise RadiomicsError(
            f"grey levels inside the ROI must lie in 1..{n_levels}, but ranged {low}..{high}; "
            f"discretise with n_levels={n_levels} or pass the right n_levels."
        )


def dense_is_cheaper(space: int, n_keys: int) -> bool:
    """Whether a dense accumulator over ``space`` keys beats sorting ``n_keys`` keys (and fits in memory)."""
    return space <= max(1 << 22, 4 * n_keys)


def count_keys(keys: torch.Tensor, space: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct values of the int64 ``keys`` in ``[0, space)`` and how often each occurs (float64).

    A dense ``bincount`` is used when the key space is small enough, a sort (``torch.unique``) otherwise;
    both give the keys in increasing order.
    """
    if dense_is_cheaper(space, keys.numel()):
        counts = torch.bincount(keys, minlength=space)
        present = torch.nonzero(counts).reshape(-1)
        return present, counts[present].to(torch.float64)
    present, counts = torch.unique(keys, return_counts=True)
    return present, counts.to(torch.float64)


def sum_keys(keys: torch.Tensor, values: torch.Tensor, space: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct ``keys`` (in ``[0, space)`` when given) and the sum of float64 ``values`` over each, sorted by key."""
    if space is not None and dense_is_cheaper(space, keys.numel()):
        sums = torch.bincount(keys, weights=values, minlength=space).to(values.dtype)  # float32 when empty
        present = torch.nonzero(sums).reshape(-1)
        return present, sums[present]
    present, inverse = torch.unique(keys, return_inverse=True)
    sums = torch.zeros(present.numel(), dtype=values.dtype, device=values.device).index_add_(0, inverse, values)
    return present, sums
