"""The inbox a pull writes and ``fedresponse ingest`` reads: a site export, plus the pull's accounting.

Layout (file names are keyed hashes of the UIDs: deterministic, so a re-run knows what it has, and
free of identifiers)::

    INBOX/
      pacs/<study>/<series>/<instance>.dcm   every instance received, each written to a temporary file
                                             and renamed, so a file that exists is complete
      enrolment_log.csv, crf.csv, reads.csv  copied from the site's tables (ingest needs them)
      annotations/                           copied when the site keeps NIfTI annotations beside the PACS
      pacs_pull.csv                          one row per requested instance: RECEIVED or MISSING, with why
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TextIO

from evaluation.atomic import replace_directory, write_bytes_atomic, write_text_atomic
from fl_client.ingest.discovery import SITE_TABLES

PULL_MANIFEST = "pacs_pull.csv"
STATUSES = ("RECEIVED", "MISSING")


def _key(uid: str, n: int) -> str:
    return hashlib.sha256(f"fedresponse-pull:{uid}".encode()).hexdigest()[:n]


def instance_path(inbox: Path, study_uid: str, series_uid: str, sop_uid: str) -> Path:
    """Where an instance lives in the inbox."""
    return inbox / "pacs" / _key(study_uid, 12) / _key(series_uid, 12) / f"{_key(sop_uid, 24)}.dcm"


def write_instance(path: Path, data: bytes) -> None:
    """Write one received DICOM Part 10 file: temporary sibling, fsync, rename (never half a file)."""
    write_bytes_atomic(path, data)


def clear_partials(inbox: Path) -> int:
    """Remove temporary files an interrupted pull left under ``inbox/pacs`` (their instances are re-fetched)."""
    count = 0
    for stale in (inbox / "pacs").rglob(".*.tmp") if (inbox / "pacs").is_dir() else []:
        stale.unlink(missing_ok=True)
        count += 1
    return count


@dataclass
class PulledInstance:
    """One row of ``pacs_pull.csv`` (no PHI: the subject is its USUBJID)."""

    USUBJID: str
    VISIT: str
    STUDY_DATE: str
    STUDY_UID: str
    SERIES_UID: str
    MODALITY: str
    SOP_UID: str
    SOP_CLASS: str
    ROUTE: str
    STATUS: str
    PATH: str
    REASON: str


COLUMNS = [f.name for f in fields(PulledInstance)]


def read_pull_manifest(inbox: Path) -> list[PulledInstance]:
    """The rows of an earlier pull (empty when none)."""
    path = inbox / PULL_MANIFEST
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        return [PulledInstance(**{c: row.get(c, "") for c in COLUMNS}) for row in csv.DictReader(handle)]


def write_pull_manifest(inbox: Path, rows: list[PulledInstance]) -> None:
    """Write ``pacs_pull.csv`` atomically, rows in (USUBJID, VISIT, series, instance) order."""
    ordered = sorted(rows, key=lambda r: (r.USUBJID, r.STUDY_DATE, r.SERIES_UID, r.SOP_UID))

    def write(stream: TextIO) -> None:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(asdict(r) for r in ordered)

    write_text_atomic(inbox / PULL_MANIFEST, write, newline="")


def copy_site_tables(tables: Path, inbox: Path) -> list[str]:
    """Copy the site tables (and an ``annotations/`` folder) into the inbox; returns what was copied."""
    copied: list[str] = []
    if tables.resolve() == inbox.resolve():
        return copied
    for name in SITE_TABLES:
        if (tables / name).is_file():
            write_bytes_atomic(inbox / name, (tables / name).read_bytes())
            copied.append(name)
    if (tables / "annotations").is_dir():
        staged = inbox / ".annotations.partial"
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(tables / "annotations", staged)
        replace_directory(staged, inbox / "annotations")
        copied.append("annotations/")
    return copied
