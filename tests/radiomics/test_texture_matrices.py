"""Texture matrices against independent computations: scikit-image GLCMs, SciPy connected components and
taxicab distance transforms, and plain voxel-by-voxel loops written here from the IBSI definitions.

The IBSI phantom tests pin the feature formulas; these pin the counting on random masked volumes of
shapes the phantom does not cover (holes, several VOIs, grey levels that are absent).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.feature import graycomatrix

from radiomics.texture._grid import build_grid, directions, neighbourhood
from radiomics.texture._matrix import SparseCounts
from radiomics.texture._zones import border_distance
from radiomics.texture.glcm import glcm_counts
from radiomics.texture.gldzm import gldzm_counts
from radiomics.texture.glrlm import glrlm_counts
from radiomics.texture.glszm import glszm_counts
from radiomics.texture.ngldm import ngldm_counts
from radiomics.texture.ngtdm import ngtdm_counts

N_LEVELS = 5


def random_volume(seed: int, shape: tuple[int, int, int] = (4, 7, 8), fill: float = 0.75) -> tuple[np.ndarray, ...]:
    """Random levels 1..N_LEVELS (smoothed so that runs and zones are longer than one voxel) and a mask."""
    rng = np.random.default_rng(seed)
    raw = ndimage.uniform_filter(rng.random(shape), size=2)
    levels = np.clip((raw - raw.min()) / np.ptp(raw) * N_LEVELS, 0, N_LEVELS - 1e-9).astype(np.int64) + 1
    mask = rng.random(shape) < fill
    return levels, mask


def to_torch(levels: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(levels)[None], torch.from_numpy(mask)[None]


def dense(m: SparseCounts) -> np.ndarray:
    out = np.zeros((m.n_groups, m.n_rows, m.n_cols))
    np.add.at(out, (m.group.numpy(), m.row.numpy(), m.col.numpy()), m.count.numpy())
    return out


def in_roi(mask: np.ndarray, z: int, y: int, x: int) -> bool:
    Z, Y, X = mask.shape
    return 0 <= z < Z and 0 <= y < Y and 0 <= x < X and bool(mask[z, y, x])


CASES = list(itertools.product([0, 1, 2], ["2D", "3D"]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_glcm_slice_matrices_equal_scikit_image(seed: int) -> None:
    """Out-of-ROI voxels become level 0 for scikit-image; its symmetric GLCM minus row/column 0 is ours."""
    levels, mask = random_volume(seed)
    m, layout = glcm_counts(build_grid(*to_torch(levels, mask)), N_LEVELS, "2D")
    ours = dense(m).reshape(layout.n_slices, layout.n_dirs, N_LEVELS + 1, N_LEVELS + 1)
    # scikit-image pairs pixel (r, c) with (r + round(sin a), c + round(cos a)); symmetric counting makes the
    # sign of the offset irrelevant, so angle a stands for our in-plane direction (dy, dx) below.
    angle_of = {(0, 1): 0.0, (1, 0): np.pi / 2, (1, 1): np.pi / 4, (1, -1): 3 * np.pi / 4}
    for z in range(levels.shape[0]):
        image = np.where(mask[z], levels[z], 0).astype(np.uint8)
        for d, (_, dy, dx) in enumerate(directions("2D")):
            theirs = graycomatrix(image, [1], [angle_of[(dy, dx)]], levels=N_LEVELS + 1, symmetric=True)[:, :, 0, 0]
            theirs[0, :] = theirs[:, 0] = 0
            np.testing.assert_array_equal(ours[z, d], theirs)


def loop_glcm(levels: np.ndarray, mask: np.ndarray, offset: tuple[int, int, int]) -> np.ndarray:
    out = np.zeros((N_LEVELS + 1, N_LEVELS + 1))
    for z, y, x in zip(*np.nonzero(mask), strict=True):
        if in_roi(mask, z + offset[0], y + offset[1], x + offset[2]):
            a, b = levels[z, y, x], levels[z + offset[0], y + offset[1], x + offset[2]]
            out[a, b] += 1
            out[b, a] += 1
    return out


@pytest.mark.parametrize("seed", [0, 3])
def test_glcm_3d_matrices_equal_voxel_loop(seed: int) -> None:
    levels, mask = random_volume(seed)
    m, _ = glcm_counts(build_grid(*to_torch(levels, mask)), N_LEVELS, "3D")
    ours = dense(m)
    for d, offset in enumerate(directions("3D")):
        np.testing.assert_array_equal(ours[d], loop_glcm(levels, mask, offset))


def loop_runs(levels: np.ndarray, mask: np.ndarray, offset: tuple[int, int, int], n_cols: int) -> np.ndarray:
    out = np.zeros((N_LEVELS + 1, n_cols))
    dz, dy, dx = offset
    for z, y, x in zip(*np.nonzero(mask), strict=True):
        level = levels[z, y, x]
        if in_roi(mask, z - dz, y - dy, x - dx) and levels[z - dz, y - dy, x - dx] == level:
            continue  # not the first voxel of its run
        length = 1
        while in_roi(mask, z + length * dz, y + length * dy, x + length * dx) and (
            levels[z + length * dz, y + length * dy, x + length * dx] == level
        ):
            length += 1
        out[level, length] += 1
    return out


@pytest.mark.parametrize(("seed", "dims"), CASES)
def test_glrlm_matrices_equal_voxel_loop(seed: int, dims: str) -> None:
    levels, mask = random_volume(seed, fill=0.9)
    m, nv, layout = glrlm_counts(build_grid(*to_torch(levels, mask)), N_LEVELS, dims)
    ours = dense(m).reshape(layout.n_slices, layout.n_dirs, N_LEVELS + 1, m.n_cols)
    for d, offset in enumerate(directions(dims)):
        if dims == "3D":
            np.testing.assert_array_equal(ours[0, d], loop_runs(levels, mask, offset, m.n_cols))
        else:
            for z in range(levels.shape[0]):
                expected = loop_runs(levels[z : z + 1], mask[z : z + 1], offset, m.n_cols)
                np.testing.assert_array_equal(ours[z, d], expected)
    per_group = mask.sum(axis=(1, 2)) if dims == "2D" else np.array([mask.sum()])
    np.testing.assert_array_equal(nv.numpy(), np.repeat(per_group, layout.n_dirs))


def scipy_zones(levels: np.ndarray, mask: np.ndarray, dims: str) -> list[tuple[int, int, np.ndarray]]:
    """(slice or 0, level, voxel indices) of every zone, from scipy.ndimage.label."""
    structure = np.ones((3, 3, 3), dtype=bool)
    if dims == "2D":
        structure[0] = structure[2] = False
    zones = []
    for level in range(1, N_LEVELS + 1):
        labels, count = ndimage.label(mask & (levels == level), structure=structure)
        for k in range(1, count + 1):
            where = np.nonzero(labels == k)
            zones.append((int(where[0][0]) if dims == "2D" else 0, level, where))
    return zones


@pytest.mark.parametrize(("seed", "dims"), CASES)
def test_glszm_matrices_equal_scipy_label(seed: int, dims: str) -> None:
    levels, mask = random_volume(seed)
    m, _, layout = glszm_counts(build_grid(*to_torch(levels, mask)), N_LEVELS, dims)
    expected = np.zeros((layout.n_groups, N_LEVELS + 1, m.n_cols))
    for group, level, where in scipy_zones(levels, mask, dims):
        expected[group, level, where[0].size] += 1
    np.testing.assert_array_equal(dense(m), expected)


@pytest.mark.parametrize(("seed", "dims"), CASES)
def test_border_distance_equals_scipy_taxicab_transform(seed: int, dims: str) -> None:
    levels, mask = random_volume(seed, shape=(6, 11, 12), fill=0.95)
    mask = ndimage.binary_opening(mask, iterations=1)
    grid = build_grid(*to_torch(levels, mask))
    cross = ndimage.generate_binary_structure(3, 1)
    if dims == "2D":
        cross[0] = cross[2] = False
    padded = np.pad(mask, 1)
    expected = ndimage.distance_transform_cdt(padded, metric=cross)[1:-1, 1:-1, 1:-1][mask]
    np.testing.assert_array_equal(border_distance(grid, dims).numpy(), expected)


@pytest.mark.parametrize(("seed", "dims"), CASES)
def test_gldzm_uses_the_morphological_mask_for_distances(seed: int, dims: str) -> None:
    levels, morph = random_volume(seed, shape=(5, 9, 9), fill=1.0)
    intensity = morph & (levels != 3)  # re-segmentation removes a grey level: no new inner border
    grid = build_grid(*to_torch(levels, intensity))
    morph_grid = build_grid(torch.ones((1, *morph.shape), dtype=torch.int64), torch.from_numpy(morph)[None])
    m, _, layout = gldzm_counts(grid, morph_grid, N_LEVELS, dims)
    cross = ndimage.generate_binary_structure(3, 1)
    if dims == "2D":
        cross[0] = cross[2] = False
    distance = ndimage.distance_transform_cdt(np.pad(morph, 1), metric=cross)[1:-1, 1:-1, 1:-1]
    expected = np.zeros((layout.n_groups, N_LEVELS + 1, m.n_cols))
    for group, level, where in scipy_zones(levels, intensity, dims):
        expected[group, level, distance[where].min()] += 1
    np.testing.assert_array_equal(dense(m), expected)


def loop_neighbours(levels: np.ndarray, mask: np.ndarray, dims: str):
    """Per ROI voxel (z, level, neighbour levels in the ROI) by direct indexing."""
    for z, y, x in zip(*np.nonzero(mask), strict=True):
        found = [
            levels[z + dz, y + dy, x + dx] for dz, dy, dx in neighbourhood(dims) if in_roi(mask, z + dz, y + dy, x + dx)
        ]
        yield (z if dims == "2D" else 0), levels[z, y, x], found


@pytest.mark.parametrize(("seed", "dims"), CASES)
def test_ngtdm_and_ngldm_equal_voxel_loop(seed: int, dims: str) -> None:
    levels, mask = random_volume(seed, fill=0.6)
    mask[0:3, 2:5, 2:5] = False
    mask[1, 3, 3] = True  # an isolated voxel: no neighbourhood for the NGTDM, dependence count 1 for the NGLDM
    grid = build_grid(*to_torch(levels, mask))
    n, s = ngtdm_counts(grid, N_LEVELS, dims)
    dep, _, _ = ngldm_counts(grid, N_LEVELS, dims)
    n_exp, s_exp = np.zeros(n.shape), np.zeros(s.shape)
    dep_exp = np.zeros((dep.n_groups, dep.n_rows, dep.n_cols))
    for group, level, found in loop_neighbours(levels, mask, dims):
        if found:
            n_exp[group, level] += 1
            s_exp[group, level] += abs(level - np.mean(found))
        dep_exp[group, level, 1 + sum(f == level for f in found)] += 1
    np.testing.assert_array_equal(n.numpy(), n_exp)
    np.testing.assert_allclose(s.numpy(), s_exp, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(dense(dep), dep_exp)
    assert n_exp.sum() < mask.sum()  # the case does exercise voxels without a neighbourhood
