"""End to end on a small, fully known export: visits, selection, quarantine, PHI, dates, idempotence,
incremental runs, interrupted runs, the key."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from ingest_fixtures import PASSPHRASE, PLANTED, date_plus, write_series
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

from fl_client.exceptions import ReidKeyError
from fl_client.ingest import store_tables
from fl_client.ingest.pipeline import IngestConfig, ingest_site
from fl_client.ingest.reid import load_key
from fl_client.store import SiteStore
from privacy.audit import AuditLog, verify_chain

FIRST_DOSE = "20260310"
PATIENTS = {"PIDA7730001": ("FEDRESP-S01-0001", "ZHOUQUANLIN^MEIXIANG"),
            "PIDB7730002": ("FEDRESP-S01-0002", "QINGSHUI^LAOWANG")}
STRANGER = "PIDC7730999"


def _config(**kw: object) -> IngestConfig:
    return IngestConfig(site="S01", passphrase=PASSPHRASE, who="pytest", scrypt_n=2**12, **kw)  # type: ignore[arg-type]


def _label_nifti(src: Path, name: str, series_uid: str, study_uid: str, box: tuple[slice, slice, slice]) -> None:
    """A NIfTI mask on the factory's CT grid (RAS affine of write_series) with its sidecar."""
    labels = np.zeros((20, 24, 8), np.uint8)
    labels[box] = 1
    affine = np.array([[-0.8, 0, 0, 10.0], [0, -0.8, 0, 12.0], [0, 0, 1.0, 30.0], [0, 0, 0, 1]])
    folder = src / "annotations"
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, affine), folder / f"{name}.nii.gz")
    (folder / f"{name}.json").write_text(json.dumps({"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid,
                                                     "labels": {"1": "L01"}}))


def _burned_in(path: Path, patient_id: str, study_uid: str) -> None:
    ds = pydicom.dcmread(next(p for p in path.parent.parent.rglob("*") if p.is_file()))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SeriesInstanceUID, ds.Modality, ds.BurnedInAnnotation = generate_uid(), "OT", "YES"
    ds.PatientID, ds.StudyInstanceUID = patient_id, study_uid
    ds.save_as(path)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(export, store) built once per module; tests that change them work on copies."""
    root = tmp_path_factory.mktemp("site")
    src = _build_export(root, np.random.default_rng(7))
    out = root / "stores" / "S01"
    ingest_site(src, out, _config())
    return src, out


@pytest.fixture
def copied(ingested: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    src, out = ingested
    shutil.copytree(src, tmp_path / "export")
    shutil.copytree(out.parent, tmp_path / "stores")
    return tmp_path / "export", tmp_path / "stores" / "S01"


def _build_export(tmp_path: Path, rng: np.random.Generator) -> Path:
    src = tmp_path / "export"
    pacs = src / "pacs"
    visits = {"T0": -5, "T1": 62, "T2": 104}
    for index, pid in enumerate(PATIENTS):
        for visit, ady in visits.items():
            if pid == "PIDB7730002" and visit == "T2":
                continue  # patient B misses T2
            day = date_plus(FIRST_DOSE, ady - 1 if ady > 0 else ady)
            study = generate_uid()
            folder = pacs / f"{rng.integers(10**6):06x}" / f"{rng.integers(10**6):06x}"
            series, _, _ = write_series(folder, patient_id=pid, study_uid=study, rng=rng, study_date=day)
            if index == 0 and visit == "T0":
                write_series(folder / "thick", patient_id=pid, study_uid=study, rng=rng, study_date=day, n=2,
                             spacing_z=5.0, thickness=5.0)
                _burned_in(folder / "screen", pid, study)
                _label_nifti(src, "a1b2c3", series, study, (slice(8, 12), slice(8, 12), slice(3, 5)))
            if index == 0 and visit == "T1":
                _label_nifti(src, "d4e5f6", series, study, (slice(8, 12), slice(8, 12), slice(0, 3)))  # cut by edge
    write_series(pacs / "zz", patient_id=STRANGER, study_uid=generate_uid(), rng=rng, n=2)
    (pacs / "notes").write_text("scanner log, not DICOM\n")
    (pacs / "empty").write_bytes(b"")
    good = next(p for p in (pacs / "zz").iterdir())
    (pacs / "truncated").write_bytes(good.read_bytes()[:400])
    rows = [{"PatientID": pid, "PatientName": name, "PatientBirthDate": "1951-03-17", "SUBJID": u[-4:],
             "USUBJID": u} for pid, (u, name) in PATIENTS.items()]
    pd.DataFrame(rows).to_csv(src / "enrolment_log.csv", index=False)
    crf = pd.read_csv(Path(__file__).with_name("crf_two_subjects.csv"), dtype=str, keep_default_na=False)
    crf.to_csv(src / "crf.csv", index=False)
    reads = [{"USUBJID": "FEDRESP-S01-0001", "VISIT": "T0", "ADY": -5, "LESIONID": "L01", "ORGAN": "LUNG",
              "CATEGORY": "TARGET", "NODE": "N", "DIAM_MM": 25.0, "STATUS": "", "READER": "R1"},
             {"USUBJID": "FEDRESP-S01-0002", "VISIT": "T0", "ADY": -5, "LESIONID": "L01", "ORGAN": "LUNG",
              "CATEGORY": "TARGET", "NODE": "N", "DIAM_MM": 8.0, "STATUS": "", "READER": "R1"}]
    pd.DataFrame(reads).to_csv(src / "reads.csv", index=False)
    return src


def test_visits_selection_and_manifest(ingested: tuple[Path, Path]) -> None:
    export, out = ingested
    store = SiteStore(out)
    visits = store.visits()
    assert sorted(zip(visits["USUBJID"], visits["VISIT"], strict=True)) == [
        ("FEDRESP-S01-0001", "T0"), ("FEDRESP-S01-0001", "T1"), ("FEDRESP-S01-0001", "T2"),
        ("FEDRESP-S01-0002", "T0"), ("FEDRESP-S01-0002", "T1")]
    assert sorted(visits["ADY"].tolist()) == [-5, -5, 62, 62, 104]
    series = store.series()
    thick = series[series["SLICE_THICKNESS_MM"] == 5.0]
    assert thick["ROLE"].tolist() == ["OTHER"] and "not selected" in thick["REASON"].iloc[0]
    manifest = store.table("manifest")
    files = sorted(p.relative_to(export).as_posix() for p in export.rglob("*") if p.is_file())
    assert sorted(manifest["SOURCE_PATH"]) == files  # every input file accounted for, once
    by_status = manifest.groupby("STATUS").size().to_dict()
    assert by_status == {"INGESTED": 5 * 8 + 2 + 2 + 3, "RECORDED": 2, "QUARANTINED": 1 + 2, "SKIPPED": 3}
    reasons = " ".join(manifest["REASON"])
    assert "BurnedInAnnotation" in reasons and "not in the enrolment log" in reasons
    assert "empty file" in reasons and "not a DICOM file" in reasons and "truncated" in reasons


def test_qc_and_eligibility(ingested: tuple[Path, Path]) -> None:
    store = SiteStore(ingested[1])
    qc = store.qc()
    checks = set(zip(qc["USUBJID"], qc["VISIT"], qc["CHECK"], strict=True))
    assert ("FEDRESP-S01-0002", "T2", "VISIT_MISSING") in checks
    assert ("FEDRESP-S01-0002", "T0", "MEASURABLE_LESION") in checks
    assert ("FEDRESP-S01-0001", "T1", "LESION_COVERAGE") in checks
    assert not any(u == "FEDRESP-S01-0001" and v == "T0" and c != "ANNOTATION" for u, v, c in checks)
    labels, names = store.labels("FEDRESP-S01-0001", "T0")
    assert names == {1: "L01"} and np.count_nonzero(labels) == 4 * 4 * 2
    eligible = store.eligibility().set_index("USUBJID")["ELIGIBLE"].to_dict()
    assert eligible == {"FEDRESP-S01-0001": False, "FEDRESP-S01-0002": False}  # A: lesion cut at T1
    queries = store.queries()
    assert ((queries["USUBJID"] == "FEDRESP-S01-0002") & (queries["FIELD"] == "WEIGHT_KG")).any()


def _store_texts(store: Path) -> list[bytes]:
    texts = []
    for path in store.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            texts.append(data)
            if path.name.endswith(".gz"):
                texts.append(gzip.decompress(data))
            if path.suffix == ".parquet":
                texts.append(pd.read_parquet(path).to_csv().encode())
    return texts


def test_no_phi_anywhere_and_dates_shifted_consistently(ingested: tuple[Path, Path]) -> None:
    out = ingested[1]
    needles = [*PLANTED.values(), *PATIENTS, STRANGER, *(n for _, n in PATIENTS.values()), "1951-03-17", "19510317",
               "MEIXIANG", "Qingshui", FIRST_DOSE, "2026-03-10"]
    texts = _store_texts(out)
    leaks = [n for n in needles for t in texts if n.encode() in t or n.lower().encode() in t]
    assert leaks == []
    store = SiteStore(out)
    visit = store.visits().set_index(["USUBJID", "VISIT"]).loc[("FEDRESP-S01-0001", "T1")]
    crf = store.crf().set_index("USUBJID").loc["FEDRESP-S01-0001"]
    study_day = (pd.Timestamp(visit["STUDY_DATE"]) - pd.Timestamp(crf["FIRST_DOSE_DATE"])).days + 1
    assert study_day == 62 == visit["ADY"]  # one shift per patient: intervals survive


def test_rerun_is_idempotent_and_audited(copied: tuple[Path, Path]) -> None:
    export, out = copied
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()
              and not p.name.startswith("audit")}
    summary = ingest_site(export, out, _config())
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*") if p.is_file()
             and not p.name.startswith("audit")}
    assert after == before and summary.new_files == 0
    entries = AuditLog(out / "audit.jsonl").entries()
    assert [e.action for e in entries] == ["ingest.run", "ingest.run"]
    assert entries[1].details["result"] == "nothing new" and entries[0].who == "pytest"
    assert verify_chain(out / "audit.jsonl") == []


def test_new_files_are_picked_up_and_others_kept(copied: tuple[Path, Path], rng: np.random.Generator) -> None:
    export, out = copied
    visits_before = SiteStore(out).visits()
    write_series(export / "pacs" / "late", patient_id="PIDB7730002", study_uid=generate_uid(), rng=rng,
                 study_date=date_plus(FIRST_DOSE, 103))
    summary = ingest_site(export, out, _config())
    assert summary.new_files == 8 and summary.rebuilt_subjects == 1
    store = SiteStore(out)
    visits = store.visits()
    assert ("FEDRESP-S01-0002", "T2") in set(zip(visits["USUBJID"], visits["VISIT"], strict=True))
    a_before = visits_before[visits_before["USUBJID"] == "FEDRESP-S01-0001"].reset_index(drop=True)
    a_after = visits[visits["USUBJID"] == "FEDRESP-S01-0001"].reset_index(drop=True)
    pd.testing.assert_frame_equal(a_before, a_after)
    manifest = store.table("manifest")
    late = manifest["SOURCE_PATH"].str.startswith("pacs/late")
    assert manifest.loc[late, "RUN"].unique().tolist() == [1] and set(manifest.loc[~late, "RUN"]) == {0}


def test_interrupted_run_leaves_the_previous_store(copied: tuple[Path, Path], rng: np.random.Generator,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    export, out = copied
    manifest_before = (out / "manifest.parquet").read_bytes()
    subjects_before = (out / "subjects.parquet").read_bytes()
    write_series(export / "pacs" / "late", patient_id="PIDB7730002", study_uid=generate_uid(), rng=rng,
                 study_date=date_plus(FIRST_DOSE, 103))
    calls = {"n": 0}
    real = store_tables.write_parquet

    def crash_after_three(path: Path, frame: pd.DataFrame) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt("power cut")
        real(path, frame)

    monkeypatch.setattr(store_tables, "write_parquet", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        ingest_site(export, out, _config())
    assert (out / "manifest.parquet").read_bytes() == manifest_before
    assert (out / "subjects.parquet").read_bytes() == subjects_before
    assert ("FEDRESP-S01-0002", "T2") not in set(zip(*SiteStore(out).visits()[["USUBJID", "VISIT"]].T.values,
                                                     strict=True))
    monkeypatch.setattr(store_tables, "write_parquet", real)
    summary = ingest_site(export, out, _config())
    assert summary.new_files == 8
    assert not (out / ".pending").exists()
    assert ("FEDRESP-S01-0002", "T2") in set(zip(*SiteStore(out).visits()[["USUBJID", "VISIT"]].T.values,
                                                 strict=True))


def test_commit_marker_rolls_forward(copied: tuple[Path, Path]) -> None:
    out = copied[1]
    staged = out / ".pending"
    staged.mkdir()
    frame = pd.read_parquet(out / "subjects.parquet")
    frame["HAS_IMAGES"] = False
    frame.to_parquet(staged / "subjects.parquet", index=False)
    (staged / "COMMIT").write_text("{}")
    with pytest.raises(Exception, match="unfinished commit"):
        SiteStore(out)
    assert store_tables.recover(out) == "rolled forward an interrupted commit"
    assert not SiteStore(out).subjects()["HAS_IMAGES"].any()


def test_key_is_encrypted_for_the_pi(copied: tuple[Path, Path], tmp_path: Path) -> None:
    export, out = copied
    key_file = out.parent / "S01.reid.enc"
    raw = key_file.read_bytes()
    assert b"PIDA7730001" not in raw and b"ZHOUQUANLIN" not in raw
    key = load_key(key_file, PASSPHRASE)
    assert key.subjects["FEDRESP-S01-0001"]["PatientID"] == "PIDA7730001"
    assert -3649 <= key.subjects["FEDRESP-S01-0001"]["DATE_SHIFT_DAYS"] <= -365
    with pytest.raises(ReidKeyError, match="wrong passphrase"):
        load_key(key_file, "not the passphrase at all")
    with pytest.raises(ReidKeyError, match="wrong passphrase"):
        ingest_site(export, out, IngestConfig(site="S01", passphrase="not the passphrase at all", scrypt_n=2**12))
    with pytest.raises(ReidKeyError, match="at least"):
        ingest_site(export, tmp_path / "other", IngestConfig(site="S01", passphrase="short"))


@pytest.mark.slow  # spawns two worker processes (~10-20 s of imports on a busy 2-core machine)
def test_parallel_run_writes_what_the_serial_run_writes(ingested: tuple[Path, Path], tmp_path: Path) -> None:
    export, serial = ingested
    parallel = tmp_path / "stores" / "S01"
    (tmp_path / "stores").mkdir()
    shutil.copy(serial.parent / "S01.reid.enc", tmp_path / "stores")  # same key: same pseudonyms and shifts
    ingest_site(export, parallel, _config(workers=2, parallel_from_files=0))
    for name in ("visits", "series", "qc", "lesions", "queries", "eligibility", "crf", "subjects"):
        pd.testing.assert_frame_equal(pd.read_parquet(serial / f"{name}.parquet"),
                                      pd.read_parquet(parallel / f"{name}.parquet"), obj=name)
    for path in serial.glob("images/*/*/*"):
        assert path.read_bytes() == (parallel / path.relative_to(serial)).read_bytes(), path


def test_vanished_files_are_kept_in_the_manifest(copied: tuple[Path, Path]) -> None:
    export, out = copied
    visits_before = SiteStore(out).visits()
    gone = next(p for p in (export / "annotations").iterdir() if p.suffix == ".json")
    gone.unlink()
    ingest_site(export, out, _config())
    manifest = SiteStore(out).table("manifest")
    row = manifest[manifest["SOURCE_PATH"] == gone.relative_to(export).as_posix()]
    assert row["PRESENT"].tolist() == [False] and row["STATUS"].tolist() == ["INGESTED"]
    assert manifest["PRESENT"].sum() == len(manifest) - 1
    pd.testing.assert_frame_equal(visits_before, SiteStore(out).visits())  # nothing silently removed
    assert AuditLog(out / "audit.jsonl").entries()[-1].details["new_files"] == 0
    summary = ingest_site(export, out, _config())  # and now nothing is new any more
    assert summary.new_files == 0 and AuditLog(out / "audit.jsonl").entries()[-1].details["result"] == "nothing new"


def test_one_ingest_per_store_at_a_time(copied: tuple[Path, Path]) -> None:
    import fcntl

    from fl_client.exceptions import IngestError

    export, out = copied
    with (out / ".ingest.lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        with pytest.raises(IngestError, match="another ingest is running"):
            ingest_site(export, out, _config())


def test_unscheduled_studies_do_not_decide_eligibility_unless_nothing_else_exists() -> None:
    from evaluation.protocol import load_protocol
    from fl_client.ingest.pipeline import _eligibility_findings

    qc = pd.DataFrame([
        # A: protocol visits fine; an off-schedule 5 mm scan (kept) must not make A ineligible
        {"USUBJID": "A", "VISIT": "T0", "SERIES_UID": "s1", "CHECK": "DUPLICATE_SLICES", "SEVERITY": "WARN"},
        {"USUBJID": "A", "VISIT": "UNS1", "SERIES_UID": "s2", "CHECK": "SLICE_THICKNESS", "SEVERITY": "REJECT"},
        # B: a rejected protocol visit counts
        {"USUBJID": "B", "VISIT": "T1", "SERIES_UID": "s3", "CHECK": "AIR_HU", "SEVERITY": "REJECT"},
        # C: only an undated study (like the IBSI phantom): its rejection says why the images cannot serve
        {"USUBJID": "C", "VISIT": "UNS1", "SERIES_UID": "s4", "CHECK": "SLICE_THICKNESS", "SEVERITY": "REJECT"},
        {"USUBJID": "C", "VISIT": "T0", "SERIES_UID": "", "CHECK": "VISIT_MISSING", "SEVERITY": "REJECT"},
    ])
    kept = _eligibility_findings(qc, load_protocol())
    assert sorted(zip(kept["USUBJID"], kept["CHECK"], strict=True)) == [
        ("B", "AIR_HU"), ("C", "SLICE_THICKNESS"), ("C", "VISIT_MISSING")]
