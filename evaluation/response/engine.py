"""Assess one reader's lesion-measurement table: per-visit RECIST 1.1 / iRECIST and per-subject best response.

``assess`` is a plain function over a DataFrame; ``write_assessment`` writes ``visits.csv`` and
``subjects.csv`` atomically (temporary folder, then rename of each file).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from evaluation.atomic import write_text_atomic
from evaluation.exceptions import MeasurementTableError
from evaluation.protocol import StudyProtocol
from evaluation.response.bor import IRECIST, RECIST, best_overall_response, confirmed_best_overall_response
from evaluation.response.findings import VisitFindings, confirm_equivocal_new_lesions, visit_findings
from evaluation.response.irecist import IrecistTrack
from evaluation.response.recist import RecistTrack
from evaluation.response.table import validate_measurements

log = logging.getLogger(__name__)

VISIT_COLUMNS: tuple[str, ...] = (
    "USUBJID", "VISIT", "ADY", "SLD_MM", "PCHG_BASE", "PCHG_NADIR", "TRGRESP", "NTRGRESP", "NEWLES",
    "RECIST_OVR", "IRECIST_OVR",
)
SUBJECT_COLUMNS: tuple[str, ...] = (
    "USUBJID", "BOR", "CBOR", "IBOR", "PD_ADY", "IUPD_ADY", "ICPD_ADY", "PSEUDOPROG",
)


@dataclass(frozen=True)
class Assessment:
    """One reader's (or the adjudicated) assessment.

    Attributes
    ----------
    visits : DataFrame
        One row per subject and visit, columns :data:`VISIT_COLUMNS`.
    subjects : DataFrame
        One row per subject, columns :data:`SUBJECT_COLUMNS`; ``*_ADY`` are nullable integers.
    """

    visits: pd.DataFrame
    subjects: pd.DataFrame


def _subject_findings(rows: pd.DataFrame, protocol: StudyProtocol) -> list[VisitFindings]:
    by_visit: dict[str, list[dict[str, Any]]] = {}
    for record in rows.to_dict("records"):
        by_visit.setdefault(str(record["VISIT"]), []).append(record)
    baseline = by_visit[protocol.visits[0]]
    schedule = sorted(by_visit.items(), key=lambda item: int(item[1][0]["ADY"]))
    findings = [
        visit_findings(records, visit, int(records[0]["ADY"]), baseline, protocol.recist)
        for visit, records in schedule
    ]
    return confirm_equivocal_new_lesions(findings)


def assess_subject(rows: pd.DataFrame, protocol: StudyProtocol) -> tuple[list[dict[str, object]], dict[str, object]]:
    """Assess one subject's normalised rows (one reader); return its visit rows and its subject row."""
    findings = _subject_findings(rows, protocol)
    baseline, follow_up = findings[0], findings[1:]
    subject = str(rows["USUBJID"].iloc[0])
    recist = RecistTrack.start(baseline)
    irecist = IrecistTrack(protocol.recist, protocol.irecist)
    visits: list[dict[str, object]] = [{
        "USUBJID": subject, "VISIT": baseline.visit, "ADY": baseline.ady, "SLD_MM": baseline.sld_mm,
        "PCHG_BASE": None, "PCHG_NADIR": None, "TRGRESP": "", "NTRGRESP": "", "NEWLES": "",
        "RECIST_OVR": "", "IRECIST_OVR": "",
    }]
    for f in follow_up:
        target, overall = recist.step(f, protocol.recist)
        visits.append({
            "USUBJID": subject, "VISIT": f.visit, "ADY": f.ady, "SLD_MM": f.sld_mm,
            "PCHG_BASE": target.pchg_base, "PCHG_NADIR": target.pchg_nadir, "TRGRESP": target.response,
            "NTRGRESP": f.nontarget, "NEWLES": f.newles, "RECIST_OVR": overall,
            "IRECIST_OVR": irecist.step(f, target.response, overall),
        })
    days = [int(f.ady) for f in follow_up]
    recist_ovr = [str(v["RECIST_OVR"]) for v in visits[1:]]
    irecist_ovr = [str(v["IRECIST_OVR"]) for v in visits[1:]]
    rules = protocol.recist
    pd_days = [d for d, r in zip(days, recist_ovr, strict=True) if r == "PD"]
    summary: dict[str, object] = {
        "USUBJID": subject,
        "BOR": best_overall_response(days, recist_ovr, RECIST, rules.sd_min_days),
        "CBOR": confirmed_best_overall_response(days, recist_ovr, RECIST, rules.sd_min_days, rules.confirm_min_days,
                                                nontarget_only=not baseline.has_targets),
        "IBOR": best_overall_response(days, irecist_ovr, IRECIST, rules.sd_min_days),
        "PD_ADY": pd_days[0] if pd_days else None,
        "IUPD_ADY": irecist.first_iupd_ady,
        "ICPD_ADY": irecist.icpd_ady,
        "PSEUDOPROG": "Y" if irecist.pseudoprogression else "N",
    }
    return visits, summary


def assess(
    measurements: pd.DataFrame, protocol: StudyProtocol, *, allow_nontarget_only: bool = False
) -> Assessment:
    """RECIST 1.1 and iRECIST assessment of one reader's lesion-measurement table.

    Parameters
    ----------
    measurements : DataFrame
        Lesion-measurement table (ARCHITECTURE contract). A ``READER`` column, if present, must hold a
        single reader; split double reads first (:func:`evaluation.adjudication.assess_readers`).
    protocol : StudyProtocol
        Study protocol (thresholds, windows, baseline visit name).
    allow_nontarget_only : bool
        Accept subjects with non-target disease only (see :func:`validate_measurements`).

    Returns
    -------
    Assessment
        Per-visit and per-subject tables.

    Raises
    ------
    MeasurementTableError
        The table breaks its contract (the message names the offending rows).
    """
    table = validate_measurements(measurements, protocol, allow_nontarget_only=allow_nontarget_only)
    if "READER" in table.columns and table["READER"].nunique() > 1:
        readers = sorted(table["READER"].unique())
        raise MeasurementTableError(
            f"the table holds several readers {readers}; assess one reader at a time or use "
            "evaluation.adjudication.assess_readers for double reads"
        )
    visit_rows: list[dict[str, object]] = []
    subject_rows: list[dict[str, object]] = []
    for _, rows in table.groupby("USUBJID", sort=True):
        visits, summary = assess_subject(rows, protocol)
        visit_rows.extend(visits)
        subject_rows.append(summary)
    log.info("assessed %d subject(s), %d visit(s)", len(subject_rows), len(visit_rows))
    return Assessment(_typed_visits(visit_rows), _typed_subjects(subject_rows))


def _typed_visits(rows: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(VISIT_COLUMNS))
    frame["ADY"] = frame["ADY"].astype(int)
    for column in ("SLD_MM", "PCHG_BASE", "PCHG_NADIR"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float).round(4)
    return frame


def _typed_subjects(rows: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(SUBJECT_COLUMNS))
    for column in ("PD_ADY", "IUPD_ADY", "ICPD_ADY"):
        frame[column] = pd.array(frame[column].tolist(), dtype="Int64")
    return frame


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as CSV via a temporary file in the same folder and an atomic rename."""
    write_text_atomic(path, lambda stream: frame.to_csv(stream, index=False), newline="")


def write_assessment(assessment: Assessment, out: Path) -> dict[str, Path]:
    """Write ``visits.csv`` and ``subjects.csv`` under ``out`` (each atomically); return their paths."""
    paths = {"visits": out / "visits.csv", "subjects": out / "subjects.csv"}
    write_csv_atomic(assessment.visits, paths["visits"])
    write_csv_atomic(assessment.subjects, paths["subjects"])
    return paths


def read_assessment(folder: Path) -> Assessment:
    """Read ``visits.csv`` and ``subjects.csv`` written by :func:`write_assessment`."""
    visits = pd.read_csv(folder / "visits.csv", keep_default_na=False, na_values=[""])
    subjects = pd.read_csv(folder / "subjects.csv", keep_default_na=False, na_values=[""])
    for column in ("TRGRESP", "NTRGRESP", "NEWLES", "RECIST_OVR", "IRECIST_OVR"):
        visits[column] = visits[column].fillna("").astype(str)
    return Assessment(_typed_visits(visits.to_dict("records")), _typed_subjects(subjects.to_dict("records")))
