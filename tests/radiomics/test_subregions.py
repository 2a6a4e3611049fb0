"""Sub-region partition on synthetic spheres and ellipsoids with known volumes and shells."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from radiomics.exceptions import EmptyMaskError, GeometryMismatchError
from radiomics.subregions import (
    SubregionSpec,
    node_centroids_mm,
    partition_tumour,
    spatial_edges,
    tumour_frame,
)


def ball(shape: tuple[int, int, int], centre_mm: tuple[float, ...], radius_mm: float, spacing=(1.0, 1.0, 1.0)):
    """Voxels whose centre lies within ``radius_mm`` of ``centre_mm`` (image mm coordinates)."""
    axes = [np.arange(n) * s - c for n, s, c in zip(shape, spacing, centre_mm, strict=True)]
    grids = np.meshgrid(*axes, indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2


def ellipsoid(shape, centre, semi_axes):
    axes = [(np.arange(n) - c) / a for n, c, a in zip(shape, centre, semi_axes, strict=True)]
    grids = np.meshgrid(*axes, indexing="ij")
    return sum(g**2 for g in grids) <= 1.0


SPEC = SubregionSpec()  # 3 shells, rings (0,3], (3,6], (6,9] mm, 8 octants


@pytest.fixture(scope="module")
def sphere_partition():
    # Centre between voxel centres: the octants are then exact mirror images of each other.
    mask = ball((64, 64, 64), (31.5, 31.5, 31.5), 15.0)
    frame = tumour_frame(mask, (1.0, 1.0, 1.0))
    return mask, partition_tumour(mask, (1.0, 1.0, 1.0), frame, SPEC)


def test_shell_volumes_follow_normalised_depth(sphere_partition):
    # Shells split the depth into thirds: a ball of radius R has core r < R/3, middle R/3..2R/3, rim beyond,
    # i.e. volume fractions 1/27, 7/27, 19/27.
    mask, part = sphere_partition
    zones = part.counts.reshape(SPEC.n_zones, SPEC.n_sectors).sum(axis=1)
    assert zones[:3].sum() == mask.sum() == part.tumour_voxels
    np.testing.assert_allclose(zones[:3] / mask.sum(), [1 / 27, 7 / 27, 19 / 27], atol=0.02)


def test_ring_volumes_match_spherical_shells(sphere_partition):
    mask, part = sphere_partition
    zones = part.counts.reshape(SPEC.n_zones, SPEC.n_sectors).sum(axis=1)
    r_eq = (3 * mask.sum() / (4 * math.pi)) ** (1 / 3)  # volume-equivalent radius of the voxelised ball
    expected = [4 / 3 * math.pi * ((r_eq + b) ** 3 - (r_eq + a) ** 3) for a, b in [(0, 3), (3, 6), (6, 9)]]
    np.testing.assert_allclose(zones[3:], expected, rtol=0.12)


def test_octants_of_a_symmetric_ball_are_equal(sphere_partition):
    _, part = sphere_partition
    per_zone = part.counts.reshape(SPEC.n_zones, SPEC.n_sectors)
    assert (per_zone == per_zone[:, :1]).all()
    assert (per_zone > 0).all()


def test_anisotropic_spacing_measures_in_mm():
    spacing = (2.0, 0.8, 0.8)
    mask = ball((40, 90, 90), (39.0, 35.6, 35.6), 12.0, spacing)
    part = partition_tumour(mask, spacing, tumour_frame(mask, spacing), SPEC)
    assert part.voxel_volume_mm3 == pytest.approx(1.28)
    assert part.tumour_voxels * part.voxel_volume_mm3 == pytest.approx(4 / 3 * math.pi * 12.0**3, rel=0.03)
    ring0 = part.counts.reshape(SPEC.n_zones, -1)[3].sum() * part.voxel_volume_mm3
    assert ring0 == pytest.approx(4 / 3 * math.pi * (15.0**3 - 12.0**3), rel=0.15)


def test_edges_are_exactly_the_face_adjacent_node_pairs(sphere_partition):
    # Independent check of spatial_edges: which labels actually share a voxel face in the partition.
    _, part = sphere_partition
    lab = part.labels
    seen = set()
    for axis in range(3):
        a = np.moveaxis(lab, axis, 0)
        u, v = a[:-1].ravel(), a[1:].ravel()
        keep = (u >= 0) & (v >= 0) & (u != v)
        pairs = set(zip(u[keep].tolist(), v[keep].tolist(), strict=True))
        seen |= pairs | {(b, a) for a, b in pairs}
    edges = spatial_edges(SPEC)
    assert edges.shape == (2, 224)
    assert set(zip(edges[0].tolist(), edges[1].tolist(), strict=True)) == seen


def test_translation_keeps_node_correspondence():
    spacing = (1.0, 1.0, 1.0)
    t0 = ellipsoid((48, 64, 64), (20.5, 30.5, 30.5), (8, 10, 13))
    t1 = ellipsoid((48, 64, 64), (25.5, 26.5, 35.5), (8, 10, 13))  # moved by (5, -4, 5) voxels
    frame = tumour_frame(t0, spacing, "principal")
    a, b = (partition_tumour(m, spacing, frame, SPEC) for m in (t0, t1))
    np.testing.assert_array_equal(a.counts, b.counts)


@pytest.mark.parametrize(
    ("semi_axes", "kind", "first_axis"),
    [
        ((6, 8, 14), "principal", (0.0, 0.0, 1.0)),  # longest along X
        ((14, 8, 6), "principal", (1.0, 0.0, 0.0)),  # longest along Z
        ((10, 10, 10), "patient-fallback", (0.0, 1.0, 0.0)),  # sphere: principal axes not identifiable
    ],
)
def test_principal_frame(semi_axes, kind, first_axis):
    mask = ellipsoid((40, 40, 40), (19.5, 19.5, 19.5), semi_axes)
    frame = tumour_frame(mask, (1.0, 1.0, 1.0), "principal")
    assert frame.kind == kind
    np.testing.assert_allclose(frame.axes[0], first_axis, atol=1e-6)
    np.testing.assert_allclose(frame.axes @ frame.axes.T, np.eye(3), atol=1e-9)


def test_vanished_tumour_gives_empty_nodes():
    t0 = ball((32, 32, 32), (15.5, 15.5, 15.5), 6.0)
    frame = tumour_frame(t0, (1, 1, 1))
    part = partition_tumour(np.zeros_like(t0), (1, 1, 1), frame, SPEC)
    assert part.vanished and part.tumour_voxels == 0
    assert part.counts.shape == (SPEC.n_nodes,) and part.counts.sum() == 0


def test_single_voxel_tumour_is_core():
    mask = np.zeros((20, 20, 20), bool)
    mask[10, 10, 10] = True
    part = partition_tumour(mask, (1, 1, 1), tumour_frame(mask, (1, 1, 1)), SPEC)
    zones = part.counts.reshape(SPEC.n_zones, -1).sum(axis=1)
    assert zones[0] == 1 and zones[1:3].sum() == 0
    assert zones[3:].sum() > 0


def test_tumour_cut_by_the_field_of_view():
    mask = ball((30, 40, 40), (2.0, 20.0, 20.0), 8.0)  # extends beyond slice 0
    part = partition_tumour(mask, (1, 1, 1), tumour_frame(mask, (1, 1, 1)), SPEC)
    assert part.touches_edge and part.margin_clipped
    # The cut face is a boundary: tumour voxels on slice 0 sit in the rim (zone 2), not the core.
    lab0 = part.labels[0][mask[part.crop][0]]
    assert set((lab0 // SPEC.n_sectors).tolist()) == {2}
    assert part.counts.sum() == (part.labels >= 0).sum()


def test_empty_reference_mask_is_an_error():
    with pytest.raises(EmptyMaskError, match="no tumour voxel"):
        tumour_frame(np.zeros((5, 5, 5)), (1, 1, 1))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.0, 1.0, 1.0), (1.0, -2.0, 1.0), (float("nan"), 1, 1)])
def test_bad_spacing_is_reported(spacing):
    mask = np.ones((3, 3, 3))
    with pytest.raises(GeometryMismatchError, match="spacing"):
        tumour_frame(mask, spacing)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_shells": 0}, "n_shells"),
        ({"n_sectors": 3}, "n_sectors"),
        ({"ring_edges_mm": (0.0, 3.0, 3.0)}, "ring_edges_mm"),
        ({"ring_edges_mm": (-1.0, 3.0)}, "ring_edges_mm"),
        ({"frame": "random"}, "frame"),
        ({"min_voxels": 0}, "min_voxels"),
    ],
)
def test_bad_spec_is_reported(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SubregionSpec(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "n_nodes", "n_edges"),
    [
        ({}, 48, 224),
        ({"n_sectors": 1}, 6, 10),
        ({"n_sectors": 4, "ring_edges_mm": ()}, 12, 2 * (3 * 4 + 2 * 4)),
        ({"n_shells": 2, "n_sectors": 2, "ring_edges_mm": (0.0, 5.0)}, 6, 2 * (3 * 1 + 2 * 2)),
    ],
)
def test_layout_sizes(kwargs, n_nodes, n_edges):
    spec = SubregionSpec(**kwargs)
    assert spec.n_nodes == n_nodes == len(spec.node_names())
    edges = spatial_edges(spec)
    assert edges.shape == (2, n_edges)
    assert (edges[0] != edges[1]).all() and edges.max() < n_nodes


def test_node_centroids_are_ordered_outwards(sphere_partition):
    mask, part = sphere_partition
    frame = tumour_frame(mask, (1, 1, 1))
    pos = node_centroids_mm(part, (1, 1, 1), frame, SPEC)
    radius = np.linalg.norm(pos, axis=1).reshape(SPEC.n_zones, SPEC.n_sectors)
    assert (np.diff(radius, axis=0) > 0).all()  # core < middle < rim < ring 0–3 < 3–6 < 6–9 mm
    # Octant 7 has all three frame coordinates positive (Y, X, Z), octant 0 all negative.
    assert (pos[7::8] > 0).all() and (pos[0::8] < 0).all()
    vanished = partition_tumour(np.zeros_like(mask), (1, 1, 1), frame, SPEC)
    canon = node_centroids_mm(vanished, (1, 1, 1), frame, SPEC)
    assert np.isfinite(canon).all() and (np.diff(np.linalg.norm(canon, axis=1).reshape(6, 8), axis=0) >= 0).all()


@pytest.mark.parametrize(("shape", "spacing", "seed"), [((9, 11, 13), (1.0, 1.0, 1.0), 0),
                                                       ((7, 12, 10), (2.5, 0.7, 0.9), 1),
                                                       ((1, 15, 9), (1.0, 0.5, 0.5), 2)])
def test_edt_torch_equals_scipy(shape, spacing, seed):
    from scipy import ndimage

    from radiomics.subregions import edt_torch

    rng = np.random.default_rng(seed)
    mask = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0) > -0.3
    mask.flat[0] = False  # at least one zero voxel
    ours = edt_torch(torch.as_tensor(mask), spacing, max_elements=500).numpy()  # small chunks: the chunk loop runs
    np.testing.assert_allclose(ours, ndimage.distance_transform_edt(mask, sampling=spacing), rtol=0, atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_partition_cuda_matches_cpu():
    from radiomics.subregions import partition_tumour, tumour_frame

    g = np.indices((30, 34, 32)) - np.array([15, 17, 16])[:, None, None, None]
    mask = ((g * np.array([1.2, 0.8, 0.8])[:, None, None, None]) ** 2).sum(0) <= 81
    spacing = (1.2, 0.8, 0.8)
    frame = tumour_frame(mask, spacing)
    cpu, gpu = partition_tumour(mask, spacing, frame), partition_tumour(mask, spacing, frame, device="cuda")
    np.testing.assert_array_equal(gpu.labels, cpu.labels)
