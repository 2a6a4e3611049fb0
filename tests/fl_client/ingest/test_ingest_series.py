"""Series assembly: geometry order, duplicates, gaps, tilt, rescale, compressed transfer syntaxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from ingest_fixtures import write_series
from pydicom.uid import CTImageStorage, JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

from fl_client.exceptions import SeriesAssemblyError
from fl_client.ingest.discovery import classify
from fl_client.ingest.series import load_volume, plan_series


def _plan(folder: Path, files: list[Path]):
    records = [classify(p, folder) for p in files]
    assert all(r.kind == "CT" and not r.status for r in records), [r.reason for r in records]
    return plan_series([r.slice for r in records if r.slice is not None])


def test_sorted_by_position_not_instance_number_or_name(tmp_path: Path, rng: np.random.Generator) -> None:
    _, stored, files = write_series(tmp_path, patient_id="P1", study_uid=generate_uid(), n=9, spacing_z=1.25, rng=rng)
    geometry = _plan(tmp_path, list(reversed(files)))
    volume, affine = load_volume(geometry)
    assert volume.shape == (20, 24, 9)  # (columns, rows, slices)
    np.testing.assert_array_equal(volume, (stored - 1024).transpose(1, 0, 2))
    # RAS affine: x, y flipped from LPS; origin = first slice position (-10, -12, 30) LPS.
    expected = np.array([[-0.8, 0, 0, 10.0], [0, -0.8, 0, 12.0], [0, 0, 1.25, 30.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(affine, expected, atol=1e-6)
    assert geometry.regular and geometry.tilt_deg == pytest.approx(0.0)


def test_duplicates_dropped_and_gap_resampled(tmp_path: Path, rng: np.random.Generator) -> None:
    _, stored, files = write_series(tmp_path, patient_id="P1", study_uid=generate_uid(), n=8, rng=rng, skip=[4])
    dup = tmp_path / "dup"
    dup.write_bytes(files[2].read_bytes())
    geometry = _plan(tmp_path, [*files, dup])
    assert geometry.missing_slices == 1 and not geometry.regular
    assert len(geometry.duplicates) == 1
    volume, affine = load_volume(geometry)
    assert volume.shape[2] == 8  # the gap was filled on the regular grid
    hu = stored - 1024
    np.testing.assert_allclose(volume[:, :, 4], np.rint((hu[:, :, 3] + hu[:, :, 5]) / 2).T, atol=1)
    assert affine[2, 2] == pytest.approx(1.0)


def test_gantry_tilt_gives_sheared_affine(tmp_path: Path, rng: np.random.Generator) -> None:
    _, _, files = write_series(tmp_path, patient_id="P1", study_uid=generate_uid(), n=6, rng=rng, tilt_mm=0.2)
    geometry = _plan(tmp_path, files)
    assert geometry.tilt_deg == pytest.approx(np.degrees(np.arctan(0.2)), abs=1e-6)
    _, affine = load_volume(geometry)
    np.testing.assert_allclose(affine[:3, 2], [0.0, -0.2, 1.0], atol=1e-6)  # LPS y advance flipped to RAS


def test_non_integral_rescale_gives_float(tmp_path: Path, rng: np.random.Generator) -> None:
    _, stored, files = write_series(tmp_path, patient_id="P1", study_uid=generate_uid(), n=3, rng=rng)
    for path in files:
        ds = pydicom.dcmread(path)
        ds.RescaleSlope, ds.RescaleIntercept = 0.5, -512.25
        ds.save_as(path)
    volume, _ = load_volume(_plan(tmp_path, files))
    assert volume.dtype == np.float32
    np.testing.assert_allclose(volume, (stored * 0.5 - 512.25).transpose(1, 0, 2), atol=1e-3)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=["RLE", "JPEG-LS", "J2K"])
def test_compressed_series_decode_identically(tmp_path: Path, rng: np.random.Generator, syntax: str) -> None:
    _, stored, files = write_series(tmp_path, patient_id="P1", study_uid=generate_uid(), n=3, rng=rng,
                                    shape=(64, 48))  # OpenJPEG's default 6 resolutions need >= 32 px
    for path in files:
        ds = pydicom.dcmread(path)
        ds.BitsStored, ds.HighBit = 12, 11  # CT: 12 bits stored (required by the JPEG-LS/J2K encoders here)
        ds.compress(syntax)
        ds.save_as(path)
        assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    volume, _ = load_volume(_plan(tmp_path, files))
    np.testing.assert_array_equal(volume, (stored - 1024).transpose(1, 0, 2))


def test_mixed_matrix_sizes_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    series = generate_uid()
    _, _, a = write_series(tmp_path / "a", patient_id="P1", study_uid="1.2.3", n=2, rng=rng, series_uid=series)
    _, _, b = write_series(tmp_path / "b", patient_id="P1", study_uid="1.2.3", n=2, rng=rng, series_uid=series,
                           shape=(16, 16))
    records = [classify(p, tmp_path) for p in [*a, *b]]
    with pytest.raises(SeriesAssemblyError, match="differ in size"):
        plan_series([r.slice for r in records if r.slice is not None])


def _as_ct(ds: pydicom.Dataset) -> pydicom.Dataset:
    """Relabel an MR test file as CT (its pixels and geometry untouched) to exercise another codec."""
    if ds.SOPClassUID != CTImageStorage:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.Modality, ds.RescaleSlope, ds.RescaleIntercept = "CT", 1, -1024
    return ds


@pytest.mark.parametrize("name", ["CT_small.dcm", "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm", "MR_small_RLE.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm"])
def test_real_corpus_ct_decodes_like_pydicom(tmp_path: Path, name: str) -> None:
    """Real files (native; JPEG 2000 lossless and lossy, signed 13/14-bit CT; RLE and JPEG-LS MR relabelled
    CT) read through both of our paths (raw native bytes, or pydicom's decoders) give pydicom's own
    pixel_array x slope + intercept."""
    from pydicom.data import get_testdata_file

    source = get_testdata_file(name)
    if source is None:
        pytest.skip(f"{name} is not in this pydicom installation's test corpus")
    reference = _as_ct(pydicom.dcmread(source))
    expected = reference.pixel_array * float(reference.RescaleSlope) + float(reference.RescaleIntercept)
    files = []
    for k in range(2):  # two slices of one series: copies one slice apart along the normal
        ds = _as_ct(pydicom.dcmread(source))
        ds.SOPInstanceUID = generate_uid()
        position = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [position[0], position[1], position[2] + 2.5 * k]
        ds.save_as(tmp_path / f"s{k}")
        files.append(tmp_path / f"s{k}")
    volume, _ = load_volume(_plan(tmp_path, files))
    for k in range(2):
        np.testing.assert_allclose(volume[:, :, k], expected.T, atol=1e-3)


@pytest.mark.parametrize("compress", [False, True], ids=["native", "RLE"])
def test_multiframe_legacy_enhanced_ct_matches_its_single_frame_source(tmp_path: Path, rng: np.random.Generator,
                                                                      compress: bool) -> None:
    """A Legacy Converted Enhanced CT written by highdicom from our slices assembles to the same volume and
    affine as the slices themselves (per-frame positions, shared orientation/measures/rescale)."""
    import highdicom as hd

    _, _, files = write_series(tmp_path / "single", patient_id="P1", study_uid=generate_uid(), n=6, rng=rng,
                               shape=(40, 36))
    expected, expected_affine = load_volume(_plan(tmp_path / "single", files))
    sources = []
    for path in files:
        ds = pydicom.dcmread(path)
        ds.PatientSex, ds.StudyTime, ds.StudyID, ds.SeriesNumber, ds.Manufacturer = "F", "101010", "1", 1, "m"
        ds.ContentDate, ds.ContentTime = ds.StudyDate, "101010"
        sources.append(ds)
    image = hd.legacy.LegacyConvertedEnhancedCTImage(sources, series_instance_uid=generate_uid(), series_number=3,
                                                     sop_instance_uid=generate_uid(), instance_number=1)
    if compress:
        image.compress(RLELossless)
    (tmp_path / "multi").mkdir()
    image.save_as(tmp_path / "multi" / "x")
    record = classify(tmp_path / "multi" / "x", tmp_path)
    assert record.kind == "CT" and not record.status and len(record.slices) == 6, record.reason
    volume, affine = load_volume(plan_series(record.slices))
    np.testing.assert_array_equal(volume, expected)
    np.testing.assert_allclose(affine, expected_affine, atol=1e-6)
