"""The written cohort: geometry, UIDs, schedule, PHI, annotations, CRF errors, reads, atomicity."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from collections import defaultdict
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from evaluation.protocol import load_protocol
from synth import cohort as cohort_module
from synth.cohort import synthesize


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _datasets(site_dir: Path) -> list[tuple[Path, pydicom.Dataset]]:
    return [(p, pydicom.dcmread(p)) for p in sorted((site_dir / "pacs").rglob("*")) if p.is_file()]


@pytest.fixture(scope="module")
def ct_by_series(small_cohort: Path) -> dict[str, list[pydicom.Dataset]]:
    series: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for site in ("S01", "S02", "S03"):
        for _, ds in _datasets(small_cohort / site):
            if ds.SOPClassUID == pydicom.uid.CTImageStorage:
                series[ds.SeriesInstanceUID].append(ds)
    return series


def test_layout_and_cohort_metadata(small_cohort: Path) -> None:
    meta = json.loads((small_cohort / "cohort.json").read_text())
    assert meta["sites"] == ["S01", "S02", "S03"]
    assert meta["annotation_format"] == {"S01": "rtstruct", "S02": "seg", "S03": "nifti"}
    for site in meta["sites"]:
        for name in ("crf.csv", "reads.csv", "enrolment_log.csv"):
            assert (small_cohort / site / name).is_file()
    files = [p for p in small_cohort.rglob("*") if p.is_file() and "pacs" in p.parts]
    assert all("." not in p.name for p in files)  # opaque names, no extensions
    assert all(len(p.relative_to(small_cohort).parts) >= 5 for p in files)  # nested folders


def test_ct_geometry_is_exact_and_within_the_protocol(ct_by_series: dict[str, list[pydicom.Dataset]]) -> None:
    protocol_series = {uid: s for uid, s in ct_by_series.items() if float(s[0].SliceThickness) <= 1.0}
    assert len(protocol_series) == 18  # 6 patients x 3 visits
    for slices in protocol_series.values():
        slices.sort(key=lambda d: float(d.ImagePositionPatient[2]))
        z = np.array([float(d.ImagePositionPatient[2]) for d in slices])
        thickness = float(slices[0].SliceThickness)
        assert thickness in (0.625, 0.8, 1.0)
        np.testing.assert_allclose(np.diff(z), thickness, atol=1e-3)
        spacing = [float(v) for v in slices[0].PixelSpacing]
        assert spacing[0] == spacing[1] and 0.6 <= spacing[0] <= 0.9
        assert [float(v) for v in slices[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert len({d.StudyInstanceUID for d in slices}) == 1
        assert len({d.FrameOfReferenceUID for d in slices}) == 1
        assert len({d.SOPInstanceUID for d in slices}) == len(slices)
        # InstanceNumber runs the other way: order must come from geometry.
        assert [int(d.InstanceNumber) for d in slices] == sorted((int(d.InstanceNumber) for d in slices), reverse=True)


def test_hounsfield_calibration_puts_air_near_minus_1000(ct_by_series: dict[str, list[pydicom.Dataset]]) -> None:
    for slices in ct_by_series.values():
        ds = slices[len(slices) // 2]
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        anterior_air = hu[:2, :]  # rows run posteriorly: the first rows are outside the body
        assert abs(float(np.median(anterior_air)) + 1000) < 60
        lung = np.mean((hu > -950) & (hu < -750))
        soft = np.mean((hu > -150) & (hu < 150))
        assert lung > 0.2 and soft > 0.05  # parenchyma and soft tissue where a chest CT has them


def test_study_dates_follow_the_schedule(small_cohort: Path) -> None:
    protocol = load_protocol()
    subjects = {r["USUBJID"]: r for r in _rows(small_cohort / "truth" / "subjects.csv")}
    for row in _rows(small_cohort / "truth" / "series.csv"):
        first_dose = dt.date.fromisoformat(subjects[row["USUBJID"]]["FIRST_DOSE_DATE"])
        offset = (dt.date.fromisoformat(row["STUDY_DATE"]) - first_dose).days
        ady = offset + 1 if offset >= 0 else offset
        assert ady == int(row["ADY"])
        low, high = protocol.timepoints[row["VISIT"]].window
        assert low - 10 <= ady <= high + 10


def test_every_planted_phi_value_is_in_the_headers(small_cohort: Path) -> None:
    blobs: dict[str, bytes] = {}
    for site in ("S01", "S02", "S03"):
        blobs[site] = b"".join(p.read_bytes()[:4096] for p in sorted((small_cohort / site / "pacs").rglob("*"))
                               if p.is_file())
    phi = _rows(small_cohort / "truth" / "phi.csv")
    assert {r["KEYWORD"] for r in phi} >= {"PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
                                          "InstitutionName", "ReferringPhysicianName", "PatientNameIdeographic"}
    for row in phi:
        site = row["USUBJID"].split("-")[1]
        assert row["VALUE"].encode("utf-8") in blobs[site], row


def test_private_tag_and_free_text_carry_identifiers(small_cohort: Path) -> None:
    _, ds = next((p, d) for p, d in _datasets(small_cohort / "S01") if d.Modality == "CT")
    block = ds.private_block(0x0029, "HOSPITAL RIS 1.0")
    assert block[0x01].value == ds.PatientID
    assert ds.PatientName.family_name in str(ds.ImageComments) or "^" in str(ds.ImageComments)


def _lesion_truth(small_cohort: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    return {(r["USUBJID"], r["VISIT"], r["LESIONID"]): r for r in _rows(small_cohort / "truth" / "lesions.csv")}


def _series_truth(small_cohort: Path) -> dict[str, dict[str, str]]:
    return {r["SeriesInstanceUID"]: r for r in _rows(small_cohort / "truth" / "series.csv")}


def test_seg_annotations_map_onto_their_ct_voxel_exactly(small_cohort: Path) -> None:
    truth, series = _lesion_truth(small_cohort), _series_truth(small_cohort)
    segs = [d for _, d in _datasets(small_cohort / "S02") if d.Modality == "SEG"]
    assert segs
    for raw in segs:
        seg = hd.seg.Segmentation.from_dataset(raw)
        source = raw.ReferencedSeriesSequence[0].SeriesInstanceUID
        row = series[source]
        voxel = float(row["PIXEL_SPACING_MM"]) ** 2 * float(row["SLICE_THICKNESS_MM"])
        for number in seg.segment_numbers:
            label = seg.get_segment_description(number).segment_label
            frames = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=seg.get_source_image_uids() and
                [uid for _, _, uid in seg.get_source_image_uids()], segment_numbers=[number])
            expected = truth[(row["USUBJID"], row["VISIT"], label)]
            assert float(frames.sum()) * voxel == pytest.approx(float(expected["TRUE_VOLUME_MM3"]), abs=0.1)


def test_nifti_annotations_share_the_ct_geometry(small_cohort: Path, ct_by_series) -> None:
    truth, series = _lesion_truth(small_cohort), _series_truth(small_cohort)
    sidecars = sorted((small_cohort / "S03" / "annotations").glob("*.json"))
    assert sidecars
    for sidecar in sidecars:
        meta = json.loads(sidecar.read_text())
        image = nib.load(str(sidecar).replace(".json", ".nii.gz"))
        slices = sorted(ct_by_series[meta["SeriesInstanceUID"]], key=lambda d: float(d.ImagePositionPatient[2]))
        for k in (0, len(slices) - 1):
            lps = np.array([float(v) for v in slices[k].ImagePositionPatient])
            ras = image.affine @ np.array([0, 0, k, 1.0])
            np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-3)
        data = np.asarray(image.dataobj)
        row = series[meta["SeriesInstanceUID"]]
        voxel = float(np.prod(image.header.get_zooms()))
        for label, lesion in meta["labels"].items():
            expected = truth[(row["USUBJID"], row["VISIT"], lesion)]
            assert (data == int(label)).sum() * voxel == pytest.approx(float(expected["TRUE_VOLUME_MM3"]), abs=0.1)


def test_crf_seeded_errors_are_where_the_truth_says(small_cohort: Path) -> None:
    crf = {r["USUBJID"]: r for s in ("S01", "S02", "S03") for r in _rows(small_cohort / s / "crf.csv")}
    errors = _rows(small_cohort / "truth" / "crf_errors.csv")
    assert len(errors) >= 6
    for error in errors:
        assert crf[error["USUBJID"]][error["FIELD"]] == error["VALUE"]


def test_reads_have_two_readers_and_the_architecture_columns(small_cohort: Path) -> None:
    rows = _rows(small_cohort / "S01" / "reads.csv")
    assert list(rows[0]) == ["USUBJID", "VISIT", "ADY", "LESIONID", "ORGAN", "CATEGORY", "NODE", "DIAM_MM", "STATUS",
                             "READER"]
    assert {r["READER"] for r in rows} == {"R1", "R2"}
    assert {r["CATEGORY"] for r in rows} <= {"TARGET", "NONTARGET", "NEW"}
    pairs = defaultdict(dict)
    for r in rows:
        if r["CATEGORY"] == "TARGET" and r["DIAM_MM"]:
            pairs[(r["USUBJID"], r["VISIT"], r["LESIONID"])][r["READER"]] = float(r["DIAM_MM"])
    diffs = [abs(v["R1"] - v["R2"]) for v in pairs.values() if len(v) == 2]
    assert 0 < np.mean(diffs) < 3.0  # readers differ, but realistically


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_same_seed_gives_the_same_cohort_byte_for_byte(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    synthesize(a, n_sites=1, patients_per_site=1, seed=5, workers=1)
    synthesize(b, n_sites=1, patients_per_site=1, seed=5, workers=1)
    synthesize(c, n_sites=1, patients_per_site=1, seed=6, workers=1)
    assert _tree_digest(a) == _tree_digest(b)
    assert _tree_digest(a) != _tree_digest(c)


def test_refuses_to_overwrite_and_leaves_nothing_half_written(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="--force"):
        synthesize(out, n_sites=1, patients_per_site=1, seed=1, workers=1)

    def crash(job):
        raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(cohort_module, "render_patient", crash)
    target = tmp_path / "new"
    with pytest.raises(KeyboardInterrupt):
        synthesize(target, n_sites=1, patients_per_site=1, seed=1, workers=1)
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]
    assert (out / "keep.txt").read_text() == "precious"
