"""Locking finished assessments, and the only way to change them afterwards.

DOMAIN §2 (data lock): assessment data are locked after assessment; any later change records *what
changed, why, who and when*; unexplained or hidden changes are not allowed. Here:

- :func:`lock_assessment` writes ``lock.json`` (SHA-256 of every assessment file, the locked subjects
  and those still pending adjudication) and appends an ``assessment.lock`` entry to the audit log;
- :func:`amend_assessment` is the one path for a change after lock: it refuses a change without a
  reason, records every changed cell (table, key, column, old → new) in an ``assessment.amend`` audit
  entry, then replaces the files atomically and re-seals ``lock.json``;
- :func:`verify_lock` finds files that changed behind the lock's back (a hidden change).

The audit log is passed in (any object with ``append(action, *, why, who, details)``, in practice
:class:`privacy.audit.AuditLog` on the site store's ``audit.jsonl``), so that :mod:`evaluation` keeps to
its import rules; the entry point opens the log.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from evaluation.atomic import write_text_atomic
from evaluation.exceptions import AssessmentLockedError, LockIntegrityError
from evaluation.response.engine import write_csv_atomic

log = logging.getLogger(__name__)

LOCK_FILE = "lock.json"
TABLE_KEYS: dict[str, list[str]] = {
    "visits.csv": ["USUBJID", "VISIT"],
    "subjects.csv": ["USUBJID"],
    "adjudication.csv": ["USUBJID"],
    "reference.csv": ["USUBJID"],
}
MAX_CHANGES_IN_ENTRY = 500
PENDING_REASON = "adjudication of subject(s) pending at lock"


class AuditSink(Protocol):
    """What the lock needs from an audit log (``privacy.audit.AuditLog`` satisfies it)."""

    def append(self, action: str, *, why: str, who: str, details: Mapping[str, Any] | None = None) -> Any: ...


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json_atomic(data: Mapping[str, Any], path: Path) -> None:
    write_text_atomic(path, lambda stream: json.dump(data, stream, indent=2, sort_keys=True))


def read_lock(folder: Path) -> dict[str, Any] | None:
    """The folder's ``lock.json`` as a dict, or ``None`` when the assessment is not locked."""
    path = folder / LOCK_FILE
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _assessment_files(folder: Path) -> dict[str, str]:
    return {name: sha256_file(folder / name) for name in sorted(TABLE_KEYS) if (folder / name).exists()}


def lock_assessment(
    folder: Path, audit: AuditSink, *, who: str, why: str = "assessment finished",
    pending: Iterable[str] = (),
) -> dict[str, Any]:
    """Lock the assessment files in ``folder`` and record the lock in the audit log.

    Parameters
    ----------
    folder : Path
        Holds ``visits.csv``, ``subjects.csv`` and optionally ``adjudication.csv`` / ``reference.csv``.
    audit : AuditSink
        The audit log to append to.
    who, why : str
        Who locks, and why.
    pending : iterable of str
        Subjects still waiting for adjudication; they are listed as not locked.

    Raises
    ------
    AssessmentLockedError
        The folder is already locked (use :func:`amend_assessment`).
    """
    if read_lock(folder) is not None:
        raise AssessmentLockedError(f"{folder} is already locked; change it through amend_assessment with a reason")
    files = _assessment_files(folder)
    if "visits.csv" not in files or "subjects.csv" not in files:
        raise FileNotFoundError(f"{folder} holds no visits.csv/subjects.csv to lock; run the assessment first")
    subjects = pd.read_csv(folder / "subjects.csv", usecols=["USUBJID"], dtype=str)["USUBJID"].tolist()
    waiting = sorted(set(pending))
    lock: dict[str, Any] = {"locked_at": datetime.now(UTC).isoformat(), "who": who, "files": files, "amendments": 0,
            "subjects": sorted(set(subjects) - set(waiting)), "pending": waiting}
    audit.append("assessment.lock", why=why, who=who,
                 details={"folder": folder.name, "files": files, "n_locked": len(lock["subjects"]),
                          "pending": waiting})
    _write_json_atomic(lock, folder / LOCK_FILE)
    log.info("locked %s (%d subjects, %d pending)", folder, len(lock["subjects"]), len(waiting))
    return lock


def verify_lock(folder: Path) -> list[str]:
    """Problems with a locked folder (files changed, added or removed since the lock); ``[]`` when intact."""
    lock = read_lock(folder)
    if lock is None:
        return [f"{folder} is not locked"]
    current = _assessment_files(folder)
    problems = []
    for name in sorted(set(lock["files"]) | set(current)):
        if lock["files"].get(name) != current.get(name):
            state = "missing" if name not in current else "added" if name not in lock["files"] else "changed"
            problems.append(f"{name} {state} since the lock without an audited amendment")
    return problems


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    buffer.seek(0)
    return pd.read_csv(buffer, dtype=str, keep_default_na=False)


def diff_table(name: str, old: pd.DataFrame, new: pd.DataFrame) -> list[dict[str, str]]:
    """Cell-level changes between two versions of an assessment table, compared as written (text).

    Returns
    -------
    list of dict
        ``{"table", "key", "column", "old", "new"}``; added/removed rows have column ``"*"``.
    """
    keys = TABLE_KEYS[name]
    a, b = _as_text(old).set_index(keys), _as_text(new).set_index(keys)
    changes: list[dict[str, str]] = []

    def key_text(key: object) -> str:
        return "/".join(key) if isinstance(key, tuple) else str(key)

    for key in a.index.difference(b.index):
        changes.append({"table": name, "key": key_text(key), "column": "*", "old": "row", "new": ""})
    for key in b.index.difference(a.index):
        changes.append({"table": name, "key": key_text(key), "column": "*", "old": "", "new": "row"})
    common = a.index.intersection(b.index)
    for column in sorted(set(a.columns) | set(b.columns)):
        left = a.loc[common, column] if column in a.columns else pd.Series("", index=common)
        right = b.loc[common, column] if column in b.columns else pd.Series("", index=common)
        for key in common[(left != right).to_numpy()]:
            changes.append({"table": name, "key": key_text(key), "column": column,
                            "old": str(left.loc[key]), "new": str(right.loc[key])})
    return changes


def amend_assessment(
    folder: Path, tables: Mapping[str, pd.DataFrame], audit: AuditSink, *, who: str, why: str | None
) -> list[dict[str, str]]:
    """Replace assessment tables of a locked folder, recording every changed cell in the audit log.

    Parameters
    ----------
    folder : Path
        A locked assessment folder.
    tables : mapping
        New content by file name (keys of :data:`TABLE_KEYS`).
    audit : AuditSink
        The audit log.
    who : str
        Who makes the change.
    why : str or None
        The reason. Required unless every changed subject was pending adjudication at lock (then the
        reason defaults to :data:`PENDING_REASON`).

    Returns
    -------
    list of dict
        The changes recorded (empty when nothing changed: nothing is written or recorded).

    Raises
    ------
    AssessmentLockedError
        A change without a reason; or the folder is not locked (write it normally instead).
    LockIntegrityError
        The files already differ from the lock (a hidden change): resolve that first.
    """
    lock = read_lock(folder)
    if lock is None:
        raise AssessmentLockedError(f"{folder} is not locked; write the assessment directly")
    problems = verify_lock(folder)
    if problems:
        raise LockIntegrityError(f"{folder}: " + "; ".join(problems) + "; restore the locked files from backup")
    unknown = sorted(set(tables) - set(TABLE_KEYS))
    if unknown:
        raise ValueError(f"cannot amend {unknown}; assessment tables are {sorted(TABLE_KEYS)}")
    changes: list[dict[str, str]] = []
    for name, frame in tables.items():
        path = folder / name
        old = pd.read_csv(path, dtype=str, keep_default_na=False) if path.exists() else frame.iloc[:0]
        changes += diff_table(name, old, frame)
    if not changes:
        return []
    touched = {c["key"].split("/")[0] for c in changes}
    reason = (why or "").strip()
    if not reason:
        if not touched <= set(lock.get("pending", [])):
            raise AssessmentLockedError(
                f"refusing an unexplained change to the locked assessment {folder}: {len(changes)} cell(s) of "
                f"{len(touched)} locked subject(s) would change (e.g. {changes[0]}); give a reason (--reason)"
            )
        reason = PENDING_REASON
    _commit(folder, tables, audit, lock, changes, who=who, why=reason)
    return changes


def _commit(folder: Path, tables: Mapping[str, pd.DataFrame], audit: AuditSink, lock: dict[str, Any],
            changes: list[dict[str, str]], *, who: str, why: str) -> None:
    """Audit first, then files, then the new seal: a crash leaves the old files under the old seal."""
    staged = Path(tempfile.mkdtemp(prefix=".amend.", dir=folder))
    try:
        for name, frame in tables.items():
            write_csv_atomic(frame, staged / name)
        new_files = {**lock["files"], **{name: sha256_file(staged / name) for name in tables}}
        audit.append("assessment.amend", why=why, who=who, details={
            "folder": folder.name, "n_changes": len(changes), "changes": changes[:MAX_CHANGES_IN_ENTRY],
            "truncated": len(changes) > MAX_CHANGES_IN_ENTRY, "files_before": lock["files"], "files_after": new_files,
        })
        for name in tables:
            os.replace(staged / name, folder / name)
    finally:
        for leftover in staged.iterdir():
            leftover.unlink()
        staged.rmdir()
    touched = {c["key"].split("/")[0] for c in changes}
    was_pending = set(lock.get("pending", []))
    pending = sorted(was_pending - touched)
    subjects = sorted(set(lock.get("subjects", [])) | (touched & was_pending))
    _write_json_atomic({**lock, "files": new_files, "amendments": int(lock.get("amendments", 0)) + 1,
                        "pending": pending, "subjects": subjects}, folder / LOCK_FILE)
    log.info("amended locked assessment %s: %d change(s), reason: %s", folder, len(changes), why)
