"""The manifest: one row per input file ever seen, with what became of it (nothing lost).

``STATUS``: INGESTED (its content is in the store), RECORDED (a valid series described in
series.parquet but not selected), DUPLICATE, QUARANTINED (refused for safety), SKIPPED (unusable),
each with a human-readable ``REASON``. Files seen by an earlier run and absent now keep their row with
``PRESENT = False``. A source path that contains an identifier of a patient (PACS exports sometimes
name folders after patients) is replaced by ``REDACTED/<keyed hash>``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pandas as pd

from fl_client.ingest.deid import PatientPseudonym
from fl_client.ingest.discovery import FileRecord
from fl_client.ingest.images import FileOutcome

MANIFEST_COLUMNS = ["SOURCE_PATH", "SIZE", "SHA256", "STATUS", "REASON", "KIND", "SERIES_UID", "USUBJID", "RUN",
                    "PRESENT"]
STATUSES = ("INGESTED", "RECORDED", "DUPLICATE", "QUARANTINED", "SKIPPED")
_TABLE_REASONS = {
    "enrolment_log.csv": "used for pseudonymisation and the encrypted key; its PHI is not copied",
    "crf.csv": "edit-checked, dates shifted → crf.parquet, queries.parquet, eligibility.parquet",
    "reads.csv": "lesion measurements → measurements.parquet",
    "pacs_pull.csv": "the PACS pull's account of requested and received instances (docs/pacs.md); not copied",
}


def redacted_path(relpath: str) -> str:
    """The manifest's stand-in for a source path that names a patient."""
    return "REDACTED/" + hashlib.sha256(relpath.encode()).hexdigest()[:16]


def safe_relpath(relpath: str, tokens: Iterable[str]) -> str:
    """``relpath``, or :func:`redacted_path` when it contains any identifying token (case-insensitive)."""
    lowered = relpath.lower()
    if any(token.lower() in lowered for token in tokens if len(token) >= 3):
        return redacted_path(relpath)
    return relpath


def known_files(manifest: pd.DataFrame) -> set[tuple[str, str]]:
    """(SOURCE_PATH, SHA256) of every file a store's manifest lists as present."""
    if not len(manifest):
        return set()
    present = manifest[manifest["PRESENT"]] if "PRESENT" in manifest.columns else manifest
    return set(zip(present["SOURCE_PATH"], present["SHA256"], strict=True))


def is_known(record: FileRecord, known: set[tuple[str, str]]) -> bool:
    """Whether the manifest already lists this file (under its plain or its redacted path) with this content."""
    return (record.relpath, record.sha256) in known or (redacted_path(record.relpath), record.sha256) in known


def _default(record: FileRecord) -> tuple[str, str]:
    if record.status:
        return record.status, record.reason
    if record.kind == "TABLE":
        return "INGESTED", _TABLE_REASONS.get(record.path.name, "site table")
    if record.kind in ("RTSTRUCT", "SEG", "NIFTI"):
        return "SKIPPED", "annotation refers to no protocol CT series of an enrolled subject"
    if record.kind == "CT":
        return "SKIPPED", "CT image of a subject whose images were not rebuilt and have no earlier record"
    return "SKIPPED", record.reason or "not used"


def manifest_frame(records: list[FileRecord], outcomes: dict[str, FileOutcome], old: pd.DataFrame,
                   pseudonyms: dict[str, PatientPseudonym], run: int) -> pd.DataFrame:
    """The new manifest: this run's files (earlier outcome kept for unchanged files of unrebuilt subjects)."""
    tokens = sorted({t for p in pseudonyms.values() for t in p.phi_tokens}, key=len, reverse=True)
    previous = {(r.SOURCE_PATH, r.SHA256): r for r in old.itertuples()} if len(old) else {}
    rows: list[dict[str, object]] = []
    for record in records:
        path = safe_relpath(record.relpath, tokens)
        before = previous.pop((path, record.sha256), None) or previous.pop((record.relpath, record.sha256), None)
        usubjid = pseudonyms[record.patient_id].usubjid if record.patient_id in pseudonyms else ""
        if record.relpath in outcomes:
            outcome = outcomes[record.relpath]
            status, reason, series = outcome.status, outcome.reason, outcome.series_uid
        elif before is not None and not record.status and record.kind in ("CT", "RTSTRUCT", "SEG", "NIFTI"):
            status, reason, series = str(before.STATUS), str(before.REASON), str(before.SERIES_UID)
        else:
            (status, reason), series = _default(record), ""
        rows.append({"SOURCE_PATH": path, "SIZE": record.size, "SHA256": record.sha256, "STATUS": status,
                     "REASON": reason, "KIND": record.kind, "SERIES_UID": series, "USUBJID": usubjid,
                     "RUN": int(before.RUN) if before is not None else run, "PRESENT": True})
    for gone in previous.values():
        row = {c: getattr(gone, c) for c in MANIFEST_COLUMNS}
        row["PRESENT"] = False
        rows.append(row)
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS).sort_values("SOURCE_PATH", kind="stable")
