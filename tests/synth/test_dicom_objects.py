"""Generated DICOM objects: independent validation (dciodvfy), exact annotation round trips, fast encoder."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from skimage.draw import polygon2mask

from synth.annotations import rtstruct_dataset, slice_contours
from synth.dicom_writer import SCANNERS, StudyInfo, ct_series_datasets, encode_series, lowest_hu, uid
from synth.identity import hospital_for_site, patient_identity
from synth.render import feret_axes
from tests.synth.conftest import require_tool


@pytest.fixture
def study() -> StudyInfo:
    rng = np.random.default_rng(0)
    return StudyInfo(patient_identity(rng, 0, 61, dt.date(2025, 3, 1)), hospital_for_site(0, rng), "F", uid("st"),
                     uid("fr"), dt.date(2025, 3, 1), "ACC19999", "CT123456", "baseline staging")


def _one_of_each(cohort: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(cohort.rglob("*")):
        if not path.is_file() or "pacs" not in path.parts:
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        kind = {"CT": "thick" if float(ds.get("SliceThickness", 0)) > 1 else "ct"}.get(ds.Modality, ds.Modality)
        found.setdefault(kind, path)
    return found


def test_every_kind_of_generated_object_passes_dciodvfy_without_errors(small_cohort: Path) -> None:
    tool = require_tool("dciodvfy")
    found = _one_of_each(small_cohort)
    assert {"ct", "RTSTRUCT", "SEG"} <= set(found)
    for kind, path in found.items():
        result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{kind} {path}: {errors}"


def _rasterise(contours: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Even-odd fill of the contours at pixel centres (an independent rasteriser: skimage.draw)."""
    mask = np.zeros(shape, dtype=bool)
    for contour in contours:
        mask ^= polygon2mask(shape, contour)
    return mask


@pytest.mark.parametrize("shape_kind", ["disc", "ring", "two_blobs", "diagonal"])
def test_rtstruct_contours_rasterise_back_to_the_exact_mask(study: StudyInfo, shape_kind: str) -> None:
    yy, xx = np.mgrid[:40, :40]
    disc = (yy - 20) ** 2 + (xx - 18) ** 2 < 90
    masks = {
        "disc": disc,
        "ring": disc & ((yy - 20) ** 2 + (xx - 18) ** 2 >= 16),
        "two_blobs": ((yy - 10) ** 2 + (xx - 10) ** 2 < 20) | ((yy - 28) ** 2 + (xx - 30) ** 2 < 30),
        "diagonal": (np.abs(yy - xx) < 2) & (yy > 5) & (yy < 30),
    }
    labels = np.zeros((3, 40, 40), dtype=np.uint8)
    labels[1] = masks[shape_kind]
    hu = np.zeros((3, 40, 40), dtype=np.float32)
    ct = ct_series_datasets(study, SCANNERS[0], hu, (1.0, 0.7, 0.7), (-10.0, 5.0, -100.0), uid("s"), 2, "t")
    rt = rtstruct_dataset(study, ct, labels, {1: "L01"}, uid("rt"))
    contours = []
    for item in rt.ROIContourSequence[0].ContourSequence:
        points = np.array(item.ContourData, dtype=float).reshape(-1, 3)
        assert np.all(points[:, 2] == -99.0)  # on the slice it references (z of slice 1)
        contours.append(np.column_stack([(points[:, 1] - 5.0) / 0.7, (points[:, 0] + 10.0) / 0.7]))
    np.testing.assert_array_equal(_rasterise(contours, (40, 40)), masks[shape_kind])


def test_slice_contours_of_an_empty_slice_are_empty() -> None:
    assert slice_contours(np.zeros((8, 8), dtype=bool)) == []


@pytest.mark.parametrize(
    ("rows", "cols", "spacing", "long_axis", "short_axis"),
    [
        # A 3 x 10 mm rectangle: the long axis is its diagonal, the width across it is 2ab/d.
        (slice(2, 5), slice(2, 12), (1.0, 1.0, 1.0), np.hypot(10, 3), 2 * 3 * 10 / np.hypot(10, 3)),
        # One 0.5 mm pixel: both axes are its diagonal.
        (slice(0, 1), slice(0, 1), (1.0, 0.5, 0.5), np.hypot(0.5, 0.5), np.hypot(0.5, 0.5)),
    ],
)
def test_feret_axes_of_rectangles(rows, cols, spacing, long_axis, short_axis) -> None:
    mask = np.zeros((1, 16, 16), dtype=bool)
    mask[0, rows, cols] = True
    got_long, got_short = feret_axes(mask, spacing)
    assert got_long == pytest.approx(long_axis, rel=1e-9)
    assert got_short == pytest.approx(short_axis, rel=1e-9)


def test_fast_series_encoder_is_byte_identical_to_pydicom(study: StudyInfo) -> None:
    rng = np.random.default_rng(1)
    hu = rng.normal(-500, 300, size=(4, 12, 10)).astype(np.float32)
    for scanner in SCANNERS:  # unsigned and signed pixel representations
        datasets = ct_series_datasets(study, scanner, hu, (0.8, 0.7, 0.7), (1.5, -2.25, 30.0), uid("x"), 2, "d")
        for ds, fast in zip(datasets, encode_series(datasets), strict=True):
            reference = io.BytesIO()
            ds.save_as(reference, enforce_file_format=True)
            assert fast == reference.getvalue()
        back = pydicom.dcmread(io.BytesIO(encode_series(datasets)[0]))
        restored = back.pixel_array * float(back.RescaleSlope) + float(back.RescaleIntercept)
        np.testing.assert_allclose(restored, np.clip(np.rint(hu[0] + scanner.hu_offset), lowest_hu(scanner), 3071))
