"""Locked assessments: a change needs a reason and is recorded in the hash-chained audit log."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from response_tables import run

from evaluation.exceptions import AssessmentLockedError, LockIntegrityError
from evaluation.lock import amend_assessment, lock_assessment, read_lock, verify_lock
from evaluation.response import write_assessment
from privacy.audit import AuditLog, verify_chain

VISITS = [("T0", -7, {"T1": 50.0}), ("T1", 62, {"T1": 30.0}), ("T2", 104, {"T1": 29.0})]


@pytest.fixture
def locked(tmp_path: Path) -> tuple[Path, AuditLog]:
    folder = tmp_path / "assessment"
    write_assessment(run(VISITS), folder)
    audit = AuditLog(tmp_path / "audit.jsonl")
    lock_assessment(folder, audit, who="irc-chair", why="BICR reads complete")
    return folder, audit


def test_lock_records_checksums_and_an_audit_entry(locked: tuple[Path, AuditLog]) -> None:
    folder, audit = locked
    lock = read_lock(folder)
    assert lock is not None and set(lock["files"]) == {"visits.csv", "subjects.csv"}
    assert lock["subjects"] == ["FEDRESP-S01-0001"]
    entries = audit.entries()
    assert [e.action for e in entries] == ["assessment.lock"]
    assert entries[0].who == "irc-chair" and entries[0].details["files"] == lock["files"]
    assert verify_lock(folder) == []
    with pytest.raises(AssessmentLockedError, match="already locked"):
        lock_assessment(folder, audit, who="irc-chair")


def _changed_visits(folder: Path) -> pd.DataFrame:
    visits = pd.read_csv(folder / "visits.csv", keep_default_na=False)
    visits.loc[visits["VISIT"] == "T2", "SLD_MM"] = 31.0
    return visits


@pytest.mark.parametrize("why", [None, "", "   "])
def test_unexplained_change_is_refused_and_nothing_written(locked: tuple[Path, AuditLog], why: str | None) -> None:
    folder, audit = locked
    before = (folder / "visits.csv").read_bytes()
    with pytest.raises(AssessmentLockedError, match="unexplained change"):
        amend_assessment(folder, {"visits.csv": _changed_visits(folder)}, audit, who="reader-2", why=why)
    assert (folder / "visits.csv").read_bytes() == before
    assert len(audit.entries()) == 1


def test_explained_change_records_what_why_who_when(locked: tuple[Path, AuditLog]) -> None:
    folder, audit = locked
    changes = amend_assessment(folder, {"visits.csv": _changed_visits(folder)}, audit, who="reader-2",
                               why="T2 remeasured on the thin-slice series")
    assert changes == [{"table": "visits.csv", "key": "FEDRESP-S01-0001/T2", "column": "SLD_MM",
                        "old": "29.0", "new": "31.0"}]
    entry = audit.entries()[-1]
    assert (entry.action, entry.who) == ("assessment.amend", "reader-2")
    assert entry.why == "T2 remeasured on the thin-slice series"
    assert entry.details["changes"] == changes and entry.ts
    assert verify_chain(audit.path) == []
    assert verify_lock(folder) == []  # re-sealed
    assert read_lock(folder)["amendments"] == 1  # type: ignore[index]
    assert pd.read_csv(folder / "visits.csv")["SLD_MM"].tolist()[-1] == 31.0


def test_no_change_records_nothing(locked: tuple[Path, AuditLog]) -> None:
    folder, audit = locked
    same = pd.read_csv(folder / "visits.csv", keep_default_na=False)
    assert amend_assessment(folder, {"visits.csv": same}, audit, who="x", why=None) == []
    assert len(audit.entries()) == 1


def test_hidden_change_is_detected_and_blocks_amendment(locked: tuple[Path, AuditLog]) -> None:
    folder, audit = locked
    text = (folder / "subjects.csv").read_text().replace("PR", "CR")
    (folder / "subjects.csv").write_text(text)
    assert verify_lock(folder) == ["subjects.csv changed since the lock without an audited amendment"]
    with pytest.raises(LockIntegrityError, match=r"subjects\.csv changed"):
        amend_assessment(folder, {"visits.csv": _changed_visits(folder)}, audit, who="x", why="y")


def test_pending_subject_can_be_completed_with_default_reason(tmp_path: Path) -> None:
    folder = tmp_path / "a"
    write_assessment(run(VISITS), folder)
    audit = AuditLog(tmp_path / "audit.jsonl")
    lock_assessment(folder, audit, who="irc", pending=["FEDRESP-S01-0001"])
    assert read_lock(folder)["subjects"] == []  # type: ignore[index]
    subjects = pd.read_csv(folder / "subjects.csv", keep_default_na=False)
    subjects["CBOR"] = "SD"
    amend_assessment(folder, {"subjects.csv": subjects}, audit, who="adjudicator", why=None)
    entry = audit.entries()[-1]
    assert entry.why.startswith("adjudication of subject(s) pending")
    lock = read_lock(folder)
    assert lock is not None and lock["pending"] == [] and lock["subjects"] == ["FEDRESP-S01-0001"]
    assert json.loads((folder / "lock.json").read_text())["amendments"] == 1
