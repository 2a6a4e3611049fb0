"""Automated measurement against analytic shapes, an independent implementation and the IBSI CT phantom."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from skimage.measure import regionprops

from evaluation.exceptions import MeasurementError
from evaluation.measure import axial_axes, axial_spacing, max_diameter_3d_mm, measure_labels, measure_lesion

IBSI = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ibsi"
PHANTOM_MASK = IBSI / "ibsi_1_ct_radiomics_phantom" / "nifti" / "mask" / "mask.nii.gz"


def _affine(spacing: tuple[float, float, float]) -> np.ndarray:
    return np.diag([*spacing, 1.0])


def _ellipsoid(semi: tuple[float, float, float], spacing: tuple[float, float, float], angle: float = 0.0) -> np.ndarray:
    """Voxelised ellipsoid (semi-axes in mm, first axis rotated by ``angle`` in the axial plane)."""
    shape = [int(2 * max(semi) / s) + 9 for s in spacing]
    grids = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    x, y, z = grids
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    return np.asarray((u / semi[0]) ** 2 + (v / semi[1]) ** 2 + (z / semi[2]) ** 2 <= 1.0)


@pytest.mark.parametrize(
    ("semi", "spacing", "angle"),
    [
        ((20.0, 10.0, 8.0), (0.7, 0.7, 1.0), 0.0),
        ((20.0, 10.0, 8.0), (0.7, 0.7, 1.0), np.pi / 6),
        ((15.0, 6.0, 5.0), (0.5, 1.0, 1.0), np.pi / 2),   # anisotropic in-plane spacing, long axis along j
        ((7.0, 5.0, 5.0), (0.8, 0.8, 1.0), 1.0),
    ],
)
def test_axes_of_ellipsoids_within_one_voxel(semi: tuple[float, float, float], spacing: tuple[float, float, float],
                                             angle: float) -> None:
    mask = _ellipsoid(semi, spacing, angle)
    result = measure_lesion(mask, _affine(spacing), node=False)
    pixel = max(spacing[:2])
    assert result.long_axis_mm == pytest.approx(2 * semi[0], abs=pixel)
    assert result.short_axis_mm == pytest.approx(2 * semi[1], abs=pixel)
    assert measure_lesion(mask, _affine(spacing), node=True).diam_mm == result.short_axis_mm
    exact = 4 / 3 * np.pi * np.prod(semi)
    assert result.volume_mm3 == pytest.approx(exact, rel=0.03)
    assert result.mesh_volume_mm3 == pytest.approx(exact, rel=0.05)


def test_short_axis_is_the_perpendicular_chord_not_the_bounding_width() -> None:
    # A right triangle (legs 40 and 20 mm): the long axis is the 44.7 mm hypotenuse and the longest chord
    # perpendicular to it is the altitude, 40·20/44.7 = 17.9 mm.
    spacing = (0.25, 0.25, 1.0)
    i, j = np.meshgrid(np.arange(200), np.arange(120), indexing="ij")
    tri = (i * 0.25 <= 40) & (j * 0.25 <= 20 * (1 - i * 0.25 / 40))
    long_axis, short_axis = axial_axes(tri[:, :, None], spacing)
    assert long_axis == pytest.approx(np.hypot(40, 20), abs=0.5)
    assert short_axis == pytest.approx(40 * 20 / np.hypot(40, 20), abs=0.5)


def test_long_axis_matches_scikit_image_feret_diameter() -> None:
    rng = np.random.default_rng(2)
    blob = _ellipsoid((12.0, 7.0, 4.0), (1.0, 1.0, 1.0), 0.4)
    blob &= rng.random(blob.shape) > 0.02  # ragged edge
    ours = axial_axes(blob, (1.0, 1.0, 1.0))[0]
    theirs = max(regionprops(blob[:, :, k].astype(int))[0].feret_diameter_max
                 for k in range(blob.shape[2]) if blob[:, :, k].any())
    assert ours == pytest.approx(theirs, abs=1.0)


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(MeasurementError, match="non-empty"):
        measure_lesion(np.zeros((4, 4, 4), bool), np.eye(4), node=False)
    tilted = np.eye(4)
    tilted[:3, :3] = [[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]]
    with pytest.raises(MeasurementError, match="not axial"):
        axial_spacing(tilted)
    with pytest.raises(MeasurementError, match="positive"):
        axial_spacing(np.diag([1.0, 0.0, 1.0, 1.0]))


def test_measure_labels_maps_ids() -> None:
    labels = np.zeros((40, 40, 5), np.uint8)
    labels[5:15, 5:10, 1:3] = 1
    labels[20:30, 20:35, 2] = 2
    out = measure_labels(labels, _affine((1.0, 1.0, 2.0)), {1: "L01", 2: "L02", 3: "L03"}, nodes={"L02"})
    assert set(out) == {"L01", "L02"}
    assert out["L01"].volume_mm3 == pytest.approx(10 * 5 * 2 * 2.0)
    node = out["L02"]
    assert node.diam_mm == node.short_axis_mm < node.long_axis_mm
    assert node.long_axis_mm == pytest.approx(np.hypot(10, 15), abs=1.0)  # the box's diagonal
    assert out["L01"].diam_mm == out["L01"].long_axis_mm


def _ibsi_reference(tag: str) -> tuple[float, float]:
    with (IBSI / "reference_values" / "ibsi_1_chest_config_a.csv").open() as handle:
        for row in csv.reader(handle, delimiter=";"):
            if row[2] == tag and row[0]:
                return float(row[0]), float(row[1])
    raise KeyError(tag)


@pytest.mark.skipif(not PHANTOM_MASK.exists(), reason=f"IBSI CT phantom not found at {PHANTOM_MASK}")
def test_ibsi_ct_phantom_gtv() -> None:
    nib = pytest.importorskip("nibabel")
    image = nib.load(PHANTOM_MASK)
    mask = np.asarray(image.dataobj) > 0
    result = measure_lesion(mask, image.affine, node=False)
    spacing = axial_spacing(image.affine)
    for tag, value in (("morph_volume", result.mesh_volume_mm3), ("morph_vol_approx", result.volume_mm3),
                       ("morph_diam", max_diameter_3d_mm(mask, spacing))):
        reference, tolerance = _ibsi_reference(tag)
        assert abs(value - reference) <= tolerance, (tag, value, reference, tolerance)
    # No IBSI value exists for the axial long axis: compare with scikit-image's Feret diameter per slice.
    feret = max(regionprops(mask[:, :, k].astype(int))[0].feret_diameter_max
                for k in range(mask.shape[2]) if mask[:, :, k].any()) * spacing[0]
    assert result.long_axis_mm == pytest.approx(feret, abs=spacing[0])
    assert result.long_axis_mm <= max_diameter_3d_mm(mask, spacing)
