"""Morphological features against geometry (analytic spheres and boxes) and second methods
(brute-force Moran/Geary, numpy covariance, exact ellipsoid area)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import ellipeinc, ellipkinc

from radiomics.morphology import (
    ellipsoid_area,
    mesh_volume_area,
    morphology,
    pca_axes,
    spatial_autocorrelation,
    surface_mesh,
)


def _ball(radius_mm: float, spacing: tuple[float, float, float], pad: int = 2) -> np.ndarray:
    half = [math.ceil(radius_mm / s) + pad for s in spacing]
    axes = [np.arange(-h, h + 1) * s for h, s in zip(half, spacing, strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return (z**2 + y**2 + x**2) <= radius_mm**2


# Marching cubes on a binary mask overestimates the area of a smooth surface through its staircase; more so on
# anisotropic voxels.
@pytest.mark.parametrize(("spacing", "area_rel"), [((1.0, 1.0, 1.0), 0.08), ((2.0, 0.8, 0.8), 0.15)])
def test_mesh_of_a_ball_approaches_the_sphere(spacing: tuple[float, float, float], area_rel: float) -> None:
    radius = 12.0
    vertices, faces = surface_mesh(_ball(radius, spacing), spacing)
    volume, area = mesh_volume_area(vertices, faces)
    assert volume == pytest.approx(4.0 / 3.0 * math.pi * radius**3, rel=0.03)
    assert area == pytest.approx(4.0 * math.pi * radius**2, rel=area_rel)
    assert area > 4.0 * math.pi * radius**2


def test_box_volume_and_voxel_features() -> None:
    mask = np.zeros((8, 10, 12), dtype=bool)
    mask[2:6, 2:8, 3:9] = True  # 4 x 6 x 6 voxels
    spacing = (2.0, 1.0, 0.5)
    image = torch.full((1, *mask.shape), 30.0, dtype=torch.float64)
    m = torch.from_numpy(mask)[None]
    feats = morphology(image, m, m, spacing)
    assert feats["morph_vol_approx"].item() == pytest.approx(4 * 6 * 6 * 2.0 * 1.0 * 0.5)
    # Mesh volume of a box by marching cubes at level 0.5: the box shrunk by the corner chamfers, never larger.
    assert 0.8 * feats["morph_vol_approx"].item() < feats["morph_volume"].item() < feats["morph_vol_approx"].item()
    assert feats["morph_integ_int"].item() == pytest.approx(feats["morph_volume"].item() * 30.0)
    assert feats["morph_com"].item() == pytest.approx(0.0, abs=1e-9)  # uniform intensity: no shift
    assert 0.0 < feats["morph_sphericity"].item() < 1.0
    assert feats["morph_asphericity"].item() == pytest.approx(1.0 / feats["morph_sphericity"].item() - 1.0)
    assert feats["morph_comp_2"].item() == pytest.approx(feats["morph_sphericity"].item() ** 3)


def test_pca_matches_numpy_covariance() -> None:
    rng = np.random.default_rng(2)
    mask = rng.random((6, 7, 9)) > 0.5
    spacing = (3.0, 0.7, 0.9)
    pos = np.argwhere(mask) * np.array(spacing)
    expected = np.sort(np.linalg.eigvalsh(np.cov(pos.T)))[::-1]
    got = pca_axes(torch.from_numpy(mask)[None], spacing)[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def _brute_moran_geary(values: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float]
                       ) -> tuple[float, float]:
    pos = np.argwhere(mask) * np.array(spacing)
    x = values[mask]
    dist = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
    w = np.where(dist > 0, 1.0 / np.where(dist > 0, dist, 1.0), 0.0)
    dev = x - x.mean()
    n = len(x)
    moran = n / w.sum() * (w * np.outer(dev, dev)).sum() / (dev**2).sum()
    geary = (n - 1) / (2 * w.sum()) * (w * (x[:, None] - x[None, :]) ** 2).sum() / (dev**2).sum()
    return float(moran), float(geary)


@pytest.mark.parametrize("seed", [0, 1])
def test_moran_geary_fft_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 50, size=(5, 8, 9)).cumsum(axis=2)  # spatially correlated
    mask = rng.random(values.shape) > 0.3
    spacing = (2.0, 1.0, 1.5)
    moran, geary = spatial_autocorrelation(torch.from_numpy(values)[None], torch.from_numpy(mask)[None], spacing)
    ref_moran, ref_geary = _brute_moran_geary(values, mask, spacing)
    assert moran.item() == pytest.approx(ref_moran, rel=1e-9)
    assert geary.item() == pytest.approx(ref_geary, rel=1e-9)


def _exact_ellipsoid_area(a: float, b: float, c: float) -> float:
    phi = math.acos(c / a)
    m = (a * a * (b * b - c * c)) / (b * b * (a * a - c * c))
    term = ellipeinc(phi, m) * math.sin(phi) ** 2 + ellipkinc(phi, m) * math.cos(phi) ** 2
    return 2 * math.pi * c * c + 2 * math.pi * a * b * term / math.sin(phi)


@pytest.mark.parametrize(
    ("a", "b", "c", "rel"), [(5.0, 5.0, 5.0, 1e-12), (10.0, 9.5, 9.0, 0.01), (46.0, 41.0, 35.0, 0.04)]
)
def test_ibsi_ellipsoid_area_series(a: float, b: float, c: float, rel: float) -> None:
    # IBSI's 20-term series equals 4πr² for a sphere and stays within a few % of the exact area
    # (elliptic integrals) for the mildly elongated ellipsoids of tumours.
    exact = 4 * math.pi * a * a if a == c else _exact_ellipsoid_area(a, b, c)
    assert ellipsoid_area(a, b, c) == pytest.approx(exact, rel=rel)


def test_batch_of_two_equals_each_alone() -> None:
    rng = np.random.default_rng(4)
    image = torch.from_numpy(rng.normal(0, 30, size=(2, 9, 10, 11)))
    masks = torch.zeros(2, 9, 10, 11, dtype=torch.bool)
    masks[0, 2:7, 2:8, 3:9] = True
    masks[1, 1:8, 2:9, 3:10] = torch.from_numpy(_ball(3.0, (1.0, 1.0, 1.0), pad=0))
    spacing = (1.0, 1.0, 1.0)
    both = morphology(image, masks, masks, spacing)
    for b in range(2):
        one = morphology(image[b : b + 1], masks[b : b + 1], masks[b : b + 1], spacing)
        for tag, values in both.items():
            assert values[b].item() == pytest.approx(one[tag][0].item(), rel=1e-9, nan_ok=True), tag
