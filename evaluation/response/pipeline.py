"""The whole response-assessment run behind ``fedresponse assess``: read(s) → assessment(s) →
adjudication → reference labels → files, then lock (or an audited amendment of a locked folder).

Output folder::

    OUT/visits.csv, subjects.csv     the final (adjudicated) assessment
    OUT/reference.csv                dynamic-iRECIST reference labels
    OUT/adjudication.csv             per subject: SINGLE_READ | CONCORDANT | ADJUDICATED | PENDING, who chose what, why
    OUT/agreement.json               inter-/intra-reader agreement and adjudication rate (double reads)
    OUT/readers/<READER>/visits.csv, subjects.csv   each reader's independent assessment
    OUT/lock.json                    after locking (evaluation.lock)
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.adjudication import adjudicate, assess_readers, reader_agreement
from evaluation.exceptions import AssessmentLockedError
from evaluation.lock import AuditSink, amend_assessment, lock_assessment, read_lock
from evaluation.protocol import StudyProtocol
from evaluation.response.engine import Assessment, assess, write_assessment, write_csv_atomic
from evaluation.response.reference import irc_vs_investigator, reference_labels

log = logging.getLogger(__name__)


@dataclass
class AssessmentRun:
    """What one run produced (for the CLI summary and the demo)."""

    out: Path
    subjects: int
    readers: list[str]
    pending: list[str] = field(default_factory=list)
    agreement: dict[str, Any] | None = None
    changes: int = 0
    locked: bool = False
    bor_counts: dict[str, int] = field(default_factory=dict)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _write_json(data: dict[str, Any], path: Path) -> None:
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(_jsonable(data), stream, indent=2, sort_keys=True)
    os.replace(tmp, path)


def run_assessment(
    measurements: pd.DataFrame,
    out: Path,
    protocol: StudyProtocol,
    *,
    decisions: pd.DataFrame | None = None,
    provisional: bool = False,
    events: pd.DataFrame | None = None,
    allow_nontarget_only: bool = False,
    audit: AuditSink | None = None,
    who: str = "",
    why: str | None = None,
    lock: bool = False,
    automated: pd.DataFrame | None = None,
) -> AssessmentRun:
    """Assess, adjudicate, label and write one site's reads; lock, or amend a locked folder.

    Parameters
    ----------
    measurements : DataFrame
        Lesion-measurement table; with two primary readers in ``READER`` it is a double read.
    out : Path
        Output folder (see the module docstring).
    decisions : DataFrame, optional
        Adjudicator decisions (``USUBJID, CHOSEN_READER, ADJUDICATOR, REASON``).
    provisional : bool
        Write even when discordant subjects still lack a decision (they stay ``PENDING``, unlocked).
    events : DataFrame, optional
        ``USUBJID, DEATH_ADY, NEWTHER_ADY`` for PFS.
    audit : AuditSink, optional
        Audit log; required to lock or to change a locked folder.
    who, why : str
        Who runs it and why (recorded when locking or amending). Changing a locked folder needs ``why``.
    lock : bool
        Lock the folder after writing (no effect when it is already locked).
    automated : DataFrame, optional
        Automated measurements from the masks (:data:`evaluation.measure.AUTO_COLUMNS`); written to
        ``auto_measurements.csv`` and compared with each reader in ``agreement.json``.

    Raises
    ------
    MeasurementTableError, AdjudicationPendingError, AdjudicationDecisionError
        Bad reads or decisions (nothing is written).
    AssessmentLockedError
        The folder is locked and the change has no reason, or no audit log was given.
    """
    if "READER" in measurements.columns and measurements["READER"].fillna("").astype(str).str.strip().ne("").any():
        per_reader = assess_readers(measurements, protocol, allow_nontarget_only=allow_nontarget_only)
        adjudicated = adjudicate(per_reader, decisions, provisional=provisional)
        agreement: dict[str, Any] | None = reader_agreement(per_reader, adjudicated)
        final, record = adjudicated.final, adjudicated.record
    else:
        per_reader = {"R1": assess(measurements, protocol, allow_nontarget_only=allow_nontarget_only)}
        adjudicated = adjudicate(per_reader)
        agreement, final, record = None, adjudicated.final, adjudicated.record
    reference = reference_labels(final, protocol, events)
    tables = {"visits.csv": final.visits, "subjects.csv": final.subjects, "adjudication.csv": record,
              "reference.csv": reference}
    out.mkdir(parents=True, exist_ok=True)
    result = AssessmentRun(out=out, subjects=len(final.subjects), readers=sorted(per_reader),
                           pending=adjudicated.pending, agreement=agreement,
                           bor_counts={str(k): int(v) for k, v in final.subjects["BOR"].value_counts().items()})
    if read_lock(out) is not None:
        if audit is None:
            raise AssessmentLockedError(f"{out} is locked; changing it needs the audit log")
        result.changes = len(amend_assessment(out, tables, audit, who=who, why=why))
        result.locked = True
    else:
        _write_unlocked(tables, out)
        if lock:
            if audit is None:
                raise AssessmentLockedError("locking needs an audit log")
            lock_assessment(out, audit, who=who, why=why or "response assessment finished", pending=result.pending)
            result.locked = True
    if events is not None and "INV_PD_ADY" in events.columns:
        agreement = {**(agreement or {}), "irc_vs_investigator": irc_vs_investigator(final.subjects, events)}
        result.agreement = agreement
    if automated is not None:
        from evaluation.measure import compare_with_reads

        write_csv_atomic(automated, out / "auto_measurements.csv")
        agreement = {**(agreement or {}), "automated_vs_readers": compare_with_reads(automated, measurements)}
        result.agreement = agreement
    _write_side_outputs(per_reader, agreement, out)
    return result


def _write_unlocked(tables: dict[str, pd.DataFrame], out: Path) -> None:
    """Write every table to a staging folder first, then rename them in place: a failure while writing
    (disk full, a bad value) leaves the previous files untouched."""
    staged = Path(tempfile.mkdtemp(prefix=".assess.", dir=out))
    try:
        for name, frame in tables.items():
            write_csv_atomic(frame, staged / name)
        for name in tables:
            os.replace(staged / name, out / name)
    finally:
        for leftover in staged.iterdir():
            leftover.unlink()
        staged.rmdir()


def _write_side_outputs(per_reader: dict[str, Assessment], agreement: dict[str, Any] | None, out: Path) -> None:
    if len(per_reader) > 1:
        for reader, assessment in per_reader.items():
            write_assessment(assessment, out / "readers" / reader)
    if agreement is not None:
        _write_json(agreement, out / "agreement.json")
