"""De-identification (PS3.15 Annex E, Basic profile + Modified Dates + Clean Descriptors)."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from fl_client.ingest.deid import (
    PatientPseudonym,
    clean_text,
    date_shift_days,
    deidentify,
    kept_attributes,
    phi_tokens,
    remap_uid,
    shift_date,
)

SECRET = b"k" * 32


def _dataset() -> Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = "WANG^XIAOHONG=王^晓红"
    ds.PatientID = "H1MRN12345678"
    ds.PatientBirthDate = "19560911"
    ds.InstitutionName = "Eastern Provincial Chest Hospital"
    ds.InstitutionAddress = "88 Lakeside Road, Hangzhou"
    ds.StationName = "CTSTN1569"
    ds.OperatorsName = "TECH^GAOYUAN"
    ds.AccessionNumber = "ACC1596506379"
    ds.StudyDate, ds.SeriesDate, ds.ContentDate = "20240201", "20240201", "20240202"
    ds.StudyDescription = "CT CHEST WANG XIAOHONG Eastern Provincial Chest Hospital"
    seq_item = Dataset()
    seq_item.ReferencedSOPInstanceUID = "1.2.3.4.5"
    seq_item.PatientName = "WANG^XIAOHONG"
    ds.ReferencedImageSequence = [seq_item]
    ds.add_new(0x00091010, "LO", "private WANG")
    return ds


def _who() -> PatientPseudonym:
    tokens = phi_tokens(["H1MRN12345678", "WANG^XIAOHONG=王^晓红", "19560911"])
    return PatientPseudonym("FEDRESP-S01-0001", -400, tokens)


def test_identifiers_removed_replaced_or_emptied() -> None:
    ds = deidentify(_dataset(), _who(), SECRET)
    # Remapped UIDs are 39 random-looking digits: an 8-digit date can occur in one by chance (it did, for
    # this very secret), so digit-only values are searched outside UI elements.
    text = "\n".join(str(e.value) for e in ds.iterall() if e.VR not in ("UI", "SQ"))
    for value in ("XIAOHONG", "王", "H1MRN12345678", "19560911", "Eastern Provincial", "Lakeside", "CTSTN1569",
                  "GAOYUAN", "ACC1596506379", "private WANG"):
        assert value not in text, value
    assert ds.PatientID == ds.PatientName == "FEDRESP-S01-0001"
    assert ds.PatientIdentityRemoved == "YES"
    assert "InstitutionName" not in ds and "AccessionNumber" in ds and ds.AccessionNumber == ""
    assert ds.ReferencedImageSequence[0].PatientName == ""  # recursion into sequences


def test_dates_shift_together_and_uids_remap_deterministically() -> None:
    original = _dataset()
    ds = deidentify(_dataset(), _who(), SECRET)
    assert ds.StudyDate == shift_date("20240201", -400) == "20221228"  # 2024-02-01 - 400 d (2023: 365 d)
    assert ds.ContentDate == "20221229"  # one shift per patient keeps the one-day interval
    assert ds.StudyInstanceUID == remap_uid(original.StudyInstanceUID, SECRET) != original.StudyInstanceUID
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == remap_uid("1.2.3.4.5", SECRET)
    assert ds.SOPClassUID == original.SOPClassUID  # class UIDs are not identifiers
    assert remap_uid(original.StudyInstanceUID, b"x" * 32) != ds.StudyInstanceUID  # keyed
    assert len(ds.StudyInstanceUID) <= 64 and ds.StudyInstanceUID.startswith("2.25.")


def test_clean_descriptors_keep_the_clinical_words() -> None:
    ds = deidentify(_dataset(), _who(), SECRET)
    assert ds.StudyDescription == "CT CHEST"


def test_whitelist_keeps_only_what_the_store_needs() -> None:
    kept = kept_attributes(deidentify(_dataset(), _who(), SECRET))
    assert {"StudyInstanceUID", "SeriesInstanceUID", "StudyDate", "SliceThickness", "PixelSpacing"} <= set(kept)
    assert not {"PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"} & set(kept)


@pytest.mark.parametrize(("value", "days", "expected"), [
    ("20240301", -1, "20240229"), ("20240101", -367, "20221230"), ("", -5, ""),
    ("2024", -5, ""), ("20241231120000", 1, "20250101120000"),
])
def test_shift_date(value: str, days: int, expected: str) -> None:
    assert shift_date(value, days) == expected


def test_date_shift_is_keyed_and_in_range() -> None:
    shifts = {date_shift_days(f"FEDRESP-S01-{i:04d}", SECRET) for i in range(200)}
    assert all(-3649 <= s <= -365 for s in shifts) and len(shifts) > 150
    assert date_shift_days("FEDRESP-S01-0001", SECRET) == date_shift_days("FEDRESP-S01-0001", SECRET)


def test_clean_text_is_case_insensitive() -> None:
    assert clean_text("Follow-up for wang xiaohong", ["WANG", "XIAOHONG"]) == "Follow-up for"


@pytest.mark.parametrize(("relpath", "redacted"), [
    ("pacs/WANG_XIAOHONG/CT/0001", True), ("pacs/h1mrn12345678/x", True), ("pacs/19560911/1", True),
    ("pacs/38AD786E/22752ca6/1f3", False), ("pacs/CHEST/1", False),
])
def test_manifest_paths_with_identifiers_are_redacted(relpath: str, redacted: bool) -> None:
    from fl_client.ingest.manifest import safe_relpath

    out = safe_relpath(relpath, _who().phi_tokens)
    assert out.startswith("REDACTED/") is redacted
    assert ("XIAOHONG" in out.upper()) is False
