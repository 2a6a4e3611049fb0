"""The site's tabular exports: enrolment log (PHI, never copied), CRF extract, BICR reads.

The enrolment log links DICOM PatientID to USUBJID; it is used for pseudonymisation and for the
encrypted key, and none of its PHI columns reach the store. CRF dates are shifted with the subject's
date offset (the same one as the images) so intervals and study days survive while no real date is
stored; a value in a date column that is not a date cannot be shifted and is withheld.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from fl_client.exceptions import IngestError

ENROLMENT_COLUMNS = ["PatientID", "PatientName", "PatientBirthDate", "SUBJID", "USUBJID"]
READS_COLUMNS = ["USUBJID", "VISIT", "ADY", "LESIONID", "ORGAN", "CATEGORY", "NODE", "DIAM_MM", "STATUS"]
WITHHELD_DATE = "WITHHELD-NOT-A-DATE"


@dataclass(frozen=True)
class Enrolment:
    """One line of the enrolment log (PHI: memory and the encrypted key only)."""

    patient_id: str
    patient_name: str
    birth_date: str
    subjid: str
    usubjid: str


def _read_csv(path: Path, required: list[str], what: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise IngestError(f"cannot read the {what} {path}: {exc}; export it again as UTF-8 CSV") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise IngestError(f"the {what} {path} lacks column(s) {missing} (has {list(frame.columns)}); "
                          "see docs/site-setup.md for the expected columns")
    return frame


def usubjid_pattern(study_id: str, site: str) -> re.Pattern[str]:
    """``STUDYID-SITEID-NNNN`` for this study and site."""
    return re.compile(rf"^{re.escape(study_id)}-{re.escape(site)}-\d{{4}}$")


def read_enrolment(path: Path, study_id: str, site: str) -> dict[str, Enrolment]:
    """PatientID → :class:`Enrolment`; every USUBJID must be ``STUDYID-SITEID-NNNN`` of this site."""
    frame = _read_csv(path, ENROLMENT_COLUMNS, "enrolment log")
    pattern = usubjid_pattern(study_id, site)
    out: dict[str, Enrolment] = {}
    for number, row in enumerate(frame.itertuples(index=False), start=2):
        usubjid = str(row.USUBJID).strip()
        if not pattern.match(usubjid):
            raise IngestError(f"{path} line {number}: USUBJID {usubjid!r} is not {study_id}-{site}-NNNN; "
                              "correct the enrolment log (or the --site option)")
        patient_id = str(row.PatientID).strip()
        if patient_id in out and out[patient_id].usubjid != usubjid:
            raise IngestError(f"{path} line {number}: PatientID is enrolled twice, as {out[patient_id].usubjid} "
                              f"and {usubjid}; keep one line per patient")
        out[patient_id] = Enrolment(patient_id, str(row.PatientName), str(row.PatientBirthDate),
                                    str(row.SUBJID), usubjid)
    return out


def read_crf(path: Path) -> pd.DataFrame:
    """The CRF extract, every value as text (edit checks decide what is valid)."""
    return _read_csv(path, ["USUBJID"], "CRF extract")


def date_columns(frame: pd.DataFrame) -> list[str]:
    """Columns holding dates (name ends with ``DATE`` or ``_DT``)."""
    return [c for c in frame.columns if c.upper().endswith(("DATE", "_DT"))]


def _shift(value: str, days: int | None) -> str:
    text = str(value).strip()
    if not text or days is None:
        return text if days is not None else (WITHHELD_DATE if text else "")
    try:
        return (date.fromisoformat(text) + timedelta(days=days)).isoformat()
    except ValueError:
        return WITHHELD_DATE


def shift_crf_dates(crf: pd.DataFrame, shifts: dict[str, int]) -> pd.DataFrame:
    """A copy of the CRF with every date column shifted by its subject's offset (days).

    Subjects without an offset have their dates withheld rather than stored unshifted.
    """
    out = crf.copy()
    for column in date_columns(out):
        out[column] = [_shift(v, shifts.get(s)) for v, s in zip(out[column], out["USUBJID"], strict=True)]
    return out


def read_reads(path: Path, study_id: str, site: str) -> pd.DataFrame:
    """The lesion measurement table (ARCHITECTURE contract); rows of other sites or bad ids are refused."""
    frame = _read_csv(path, READS_COLUMNS, "reads table")
    pattern = usubjid_pattern(study_id, site)
    bad = sorted({u for u in frame["USUBJID"] if not pattern.match(str(u))})
    if bad:
        raise IngestError(f"{path}: USUBJID value(s) {bad[:5]} are not {study_id}-{site}-NNNN; fix the reads export")
    columns = [*READS_COLUMNS, *(["READER"] if "READER" in frame.columns else [])]
    out = frame[columns].copy()
    out["ADY"] = pd.to_numeric(out["ADY"], errors="coerce").astype("Int64")
    out["DIAM_MM"] = pd.to_numeric(out["DIAM_MM"].replace("", None), errors="coerce")
    return out
