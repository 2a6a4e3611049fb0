"""Zones (connected same-level voxels) and the distance-to-border map, shared by GLSZM and GLDZM.

Zones are labelled by a parallel union-find on the GPU-friendly edge list of same-level neighbours:
each voxel holds a pointer to a smaller-indexed voxel of the same zone; edges "hook" the larger root
under the smaller one and pointer jumping shortens chains, so the number of sweeps grows with the
logarithm of the zone size instead of its diameter (the scheme of Shiloach & Vishkin, 1982).
"""

from __future__ import annotations

import torch

from radiomics.texture._grid import RoiGrid, directions, faces


def same_level_edges(grid: RoiGrid, dims: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of neighbouring ROI voxels with equal grey level, once per pair: ``(src, dst)`` each ``(E,)``.

    Neighbours are at Chebyshev distance 1: 26-connectivity in 3D, in-plane 8-connectivity in 2D.
    """
    srcs, dsts = [], []
    own = torch.arange(grid.n, device=grid.device)
    for offset in directions(dims):
        same = grid.same_level_at(offset)
        srcs.append(own[same])
        dsts.append(grid.neighbour(offset)[same])
    return torch.cat(srcs), torch.cat(dsts)


def _compress(parent: torch.Tensor) -> torch.Tensor:
    while True:
        grand = parent[parent]
        if torch.equal(grand, parent):
            return parent
        parent = grand


def label_zones(grid: RoiGrid, dims: str) -> torch.Tensor:
    """``(N,)`` int64 zone label of each ROI voxel: the smallest compact index in its zone (cached on ``grid``)."""
    key = ("zones", dims)
    if key not in grid.cache:
        grid.cache[key] = _union_find(grid, dims)
    return grid.cache[key]


def _union_find(grid: RoiGrid, dims: str) -> torch.Tensor:
    src, dst = same_level_edges(grid, dims)
    parent = torch.arange(grid.n, device=grid.device)
    while True:
        ps, pd = parent[src], parent[dst]
        hooked = parent.clone()
        hooked.scatter_reduce_(0, ps, pd, "amin")
        hooked.scatter_reduce_(0, pd, ps, "amin")
        hooked = _compress(hooked)
        if torch.equal(hooked, parent):
            return parent
        parent = hooked


def zone_sizes(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zone roots (compact indices, ``(K,)``) and their sizes in voxels (``(K,)`` int64)."""
    own = torch.arange(labels.numel(), device=labels.device)
    roots = torch.nonzero(labels == own).reshape(-1)
    return roots, torch.bincount(labels, minlength=labels.numel())[roots]


def border_distance(grid: RoiGrid, dims: str) -> torch.Tensor:
    """``(N,)`` int64 distance of each ROI voxel to the ROI border (IBSI §3.8, GLDZM).

    Border voxels (a face neighbour outside the ROI or outside the image) have distance 1; the
    distance is the taxicab one (6-connectivity in 3D, in-plane 4-connectivity in 2D), obtained by
    repeated erosion with the face-connected cross.
    """
    nbs = torch.stack([grid.neighbour(offset) for offset in faces(dims)], dim=1)
    alive = torch.ones(grid.n + 1, dtype=torch.bool, device=grid.device)
    alive[-1] = False  # index -1 (no ROI neighbour) reads this sentinel: outside the ROI is never alive
    distance = torch.zeros(grid.n, dtype=torch.int64, device=grid.device)
    active = torch.arange(grid.n, device=grid.device)
    step = 0
    while active.numel():
        # Only voxels still inside the eroded ROI are visited, so the work is the sum of the distances.
        step += 1
        distance[active] = step
        inner = alive[nbs[active]].all(dim=1)
        alive[active[~inner]] = False
        active = active[inner]
    return distance
