"""Annotations onto the CT grid: DICOM SEG written by an independent library (highdicom), RTSTRUCT contours
with a hole, NIfTI masks on another orientation; all checked voxel by voxel."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from ingest_fixtures import write_series
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from fl_client.exceptions import AnnotationError
from fl_client.ingest.annotations import rasterise_rtstruct, rasterise_seg, read_nifti_mask, seg_referenced_series
from fl_client.ingest.discovery import classify
from fl_client.ingest.series import load_volume, plan_series


@pytest.fixture
def ct(tmp_path: Path, rng: np.random.Generator) -> tuple[str, list[Path], np.ndarray, np.ndarray]:
    """(series uid, files in position order, volume (20, 24, 6), RAS affine)."""
    uid, _, files = write_series(tmp_path / "ct", patient_id="P1", study_uid=generate_uid(), rng=rng, n=6)
    files.sort(key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    volume, affine = load_volume(plan_series([classify(f, tmp_path).slice for f in files]))  # type: ignore[misc]
    return uid, files, volume, affine


def test_seg_from_highdicom(ct: tuple[str, list[Path], np.ndarray, np.ndarray], tmp_path: Path) -> None:
    uid, files, volume, affine = ct
    sources = []
    for path in files:
        ds = pydicom.dcmread(path)
        ds.PatientSex, ds.StudyTime, ds.StudyID, ds.SeriesNumber, ds.Manufacturer = "F", "101010", "1", 1, "m"
        sources.append(ds)
    mask = np.zeros((6, 24, 20), np.uint8)  # (frames = slices, rows, columns)
    mask[2:4, 5:9, 6:10] = 1
    mask[4, 10:12, 3:5] = 2
    segments = [hd.seg.SegmentDescription(
        segment_number=number, segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for number, label in ((1, "L02"), (2, "L01"))]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments, series_instance_uid=generate_uid(), series_number=2,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="test", manufacturer_model_name="test",
        software_versions="1", device_serial_number="1")
    seg.save_as(tmp_path / "seg")
    dataset = pydicom.dcmread(tmp_path / "seg")
    assert seg_referenced_series(dataset) == uid
    labels, names = rasterise_seg(dataset, volume.shape, affine)
    assert names == {1: "L01", 2: "L02"}  # labels numbered in sorted name order
    expected = np.zeros(volume.shape, np.uint8)
    on_grid = mask.transpose(2, 1, 0)  # (columns, rows, slices) like the CT volume
    expected[on_grid == 1], expected[on_grid == 2] = 2, 1
    np.testing.assert_array_equal(labels, expected)


def _rtstruct(contours: list[np.ndarray], name: str = "L01") -> Dataset:
    ds = Dataset()
    roi = Dataset()
    roi.ROINumber, roi.ROIName = 7, name
    ds.StructureSetROISequence = [roi]
    items = []
    for points in contours:
        item = Dataset()
        item.ContourGeometricType = "CLOSED_PLANAR"
        item.NumberOfContourPoints = len(points)
        item.ContourData = [f"{v:.3f}" for v in points.ravel()]
        items.append(item)
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 7
    roi_contour.ContourSequence = items
    ds.ROIContourSequence = [roi_contour]
    return ds


def _square(affine: np.ndarray, i0: float, i1: float, j0: float, j1: float, k: int) -> np.ndarray:
    corners = np.array([[i0, j0, k, 1], [i1, j0, k, 1], [i1, j1, k, 1], [i0, j1, k, 1]], float)
    ras = corners @ affine.T
    return ras[:, :3] * np.array([-1, -1, 1])  # RAS → LPS patient coordinates


def test_rtstruct_with_hole(ct: tuple[str, list[Path], np.ndarray, np.ndarray]) -> None:
    _, _, volume, affine = ct
    outer, hole = _square(affine, 2.5, 12.5, 3.5, 13.5, 2), _square(affine, 5.5, 9.5, 6.5, 10.5, 2)
    labels, names = rasterise_rtstruct(_rtstruct([outer, hole]), volume.shape, affine)
    assert names == {1: "L01"}
    expected = np.zeros(volume.shape, bool)
    expected[3:13, 4:14, 2] = True  # voxel centres inside the outer square
    expected[6:10, 7:11, 2] = False  # the hole (even-odd rule)
    np.testing.assert_array_equal(labels == 1, expected)


def test_rtstruct_off_grid_is_refused(ct: tuple[str, list[Path], np.ndarray, np.ndarray]) -> None:
    _, _, volume, affine = ct
    with pytest.raises(AnnotationError, match="off the CT"):
        rasterise_rtstruct(_rtstruct([_square(affine, 2.5, 12.5, 3.5, 13.5, 40)]), volume.shape, affine)


def test_nifti_mask_on_flipped_axes_is_resampled(ct: tuple[str, list[Path], np.ndarray, np.ndarray],
                                                 tmp_path: Path) -> None:
    _, _, volume, affine = ct
    truth = np.zeros(volume.shape, np.uint8)
    truth[4:9, 2:6, 1:3] = 3
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = volume.shape[0] - 1  # index i' = (I - 1) - i: the same voxels, stored mirrored
    nib.save(nib.Nifti1Image(truth[::-1].copy(), affine @ flip), tmp_path / "m.nii.gz")
    labels, names = read_nifti_mask(tmp_path / "m.nii.gz", {"labels": {"3": "L05"}}, volume.shape, affine)
    assert names == {1: "L05"}
    np.testing.assert_array_equal(labels == 1, truth == 3)
    with pytest.raises(AnnotationError, match="not named"):
        read_nifti_mask(tmp_path / "m.nii.gz", {"labels": {"1": "L05"}}, volume.shape, affine)
