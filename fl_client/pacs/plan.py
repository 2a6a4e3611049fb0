"""What to pull: the enrolled patients and, per patient, the protocol date windows (T0, T1, T2).

The enrolment log (``PatientID`` → ``USUBJID``) says who; the CRF's ``FIRST_DOSE_DATE`` and the protocol's
visit windows (inclusive study-day ranges, ``configs/study.yaml``) say when, widened by ``margin_days``.
A patient without a first-dose date gets one open window: every study of that patient.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from evaluation.protocol import StudyProtocol
from fl_client.ingest.sitetables import read_crf, read_enrolment
from fl_client.ingest.visits import ady_date, parse_da


@dataclass(frozen=True)
class DateWindow:
    """One query window: the visit it serves and its first and last calendar day (None = open)."""

    visit: str
    start: date | None
    end: date | None

    def dicom_range(self) -> str:
        """The DICOM DA range matching this window (``YYYYMMDD-YYYYMMDD``, ``''`` when open)."""
        if self.start is None or self.end is None:
            return ""
        return f"{self.start:%Y%m%d}-{self.end:%Y%m%d}"


@dataclass(frozen=True)
class PatientRequest:
    """One enrolled patient to pull: PHI (PatientID) stays in the hospital's inbox and memory."""

    patient_id: str
    usubjid: str
    windows: tuple[DateWindow, ...]


def protocol_windows(first_dose: date | None, protocol: StudyProtocol, margin_days: int = 0) -> tuple[DateWindow, ...]:
    """The calendar windows of the protocol visits for a patient first dosed on ``first_dose``."""
    if first_dose is None:
        return (DateWindow("ANY", None, None),)
    margin = timedelta(days=margin_days)
    return tuple(DateWindow(visit, ady_date(protocol.timepoints[visit].window[0], first_dose) - margin,
                            ady_date(protocol.timepoints[visit].window[1], first_dose) + margin)
                 for visit in protocol.visits)


def plan_pull(tables: Path, site: str, protocol: StudyProtocol, margin_days: int = 0) -> list[PatientRequest]:
    """Patients (in USUBJID order) and windows from ``tables/enrolment_log.csv`` and ``tables/crf.csv``.

    Raises
    ------
    IngestError
        The enrolment log is missing, unreadable or names another site (the message says which line).
    """
    from fl_client.exceptions import PacsError

    enrolment_path = tables / "enrolment_log.csv"
    if not enrolment_path.is_file():
        raise PacsError(f"no enrolment log at {enrolment_path}: the pull needs it to know which patients to fetch; "
                        "pass --tables with the folder holding enrolment_log.csv (and crf.csv)")
    enrolment = read_enrolment(enrolment_path, protocol.study_id, site)
    doses: dict[str, date | None] = {}
    if (tables / "crf.csv").is_file():
        crf = read_crf(tables / "crf.csv")
        if "FIRST_DOSE_DATE" in crf.columns:
            doses = {str(u): parse_da(str(d)) for u, d in zip(crf["USUBJID"], crf["FIRST_DOSE_DATE"], strict=True)}
    return sorted((PatientRequest(pid, entry.usubjid, protocol_windows(doses.get(entry.usubjid), protocol, margin_days))
                   for pid, entry in enrolment.items()), key=lambda r: r.usubjid)
