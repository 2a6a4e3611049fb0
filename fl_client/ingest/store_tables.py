"""The store's tables as one object: read the previous run's, merge a run's rebuilt subjects, write all.

The manifest is renamed last: it is the commit point of a run (docs/store.md).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fl_client.crf.checks import ELIGIBILITY_COLUMNS, QUERY_COLUMNS
from fl_client.ingest.images import SubjectImages
from fl_client.ingest.qc import LESION_COLUMNS, QC_COLUMNS, findings_frame
from fl_client.ingest.writer import read_parquet_or_empty, write_json, write_parquet

SERIES_COLUMNS = ["USUBJID", "VISIT", "ADY", "STUDY_UID", "SERIES_UID", "MODALITY", "SOP_CLASS", "ROLE", "REASON",
                  "N_FILES", "ROWS", "COLUMNS", "N_SLICES", "PIXEL_SPACING_MM", "SLICE_SPACING_MM",
                  "SLICE_THICKNESS_MM", "TILT_DEG", "CONVOLUTION_KERNEL", "MANUFACTURER", "STUDY_DATE"]
VISIT_COLUMNS = ["USUBJID", "VISIT", "VISITNUM", "ADY", "STUDY_DATE", "SERIES_UID", "CT_PATH", "LABEL_PATH",
                 "LABELS_JSON", "SHAPE", "SPACING_MM"]
#: table name → columns (file ``<name>.parquet``); the manifest is written after all of these.
TABLES: dict[str, list[str]] = {
    "subjects": ["USUBJID", "SUBJID", "SITEID", "HAS_IMAGES"], "series": SERIES_COLUMNS, "visits": VISIT_COLUMNS,
    "qc": QC_COLUMNS, "lesions": LESION_COLUMNS, "measurements": [], "crf": ["USUBJID"],
    "queries": QUERY_COLUMNS, "eligibility": ELIGIBILITY_COLUMNS,
}


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


@dataclass
class StoreTables:
    """Every table of a store (see docs/store.md for the columns)."""

    manifest: pd.DataFrame = field(default_factory=pd.DataFrame)
    subjects: pd.DataFrame = field(default_factory=lambda: _empty(TABLES["subjects"]))
    series: pd.DataFrame = field(default_factory=lambda: _empty(SERIES_COLUMNS))
    visits: pd.DataFrame = field(default_factory=lambda: _empty(VISIT_COLUMNS))
    qc: pd.DataFrame = field(default_factory=lambda: _empty(QC_COLUMNS))
    lesions: pd.DataFrame = field(default_factory=lambda: _empty(LESION_COLUMNS))
    measurements: pd.DataFrame = field(default_factory=pd.DataFrame)
    crf: pd.DataFrame = field(default_factory=lambda: _empty(["USUBJID"]))
    queries: pd.DataFrame = field(default_factory=lambda: _empty(QUERY_COLUMNS))
    eligibility: pd.DataFrame = field(default_factory=lambda: _empty(ELIGIBILITY_COLUMNS))
    complete: bool = False

    def merge(self, images: dict[str, SubjectImages], current: set[str]) -> StoreTables:
        """Replace the rows of every rebuilt subject by its new rows (other subjects keep theirs)."""
        rebuilt = set(images)
        out = StoreTables(manifest=self.manifest, complete=self.complete)

        def keep(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
            if not len(frame):
                return _empty(columns)
            return frame[~frame["USUBJID"].isin(rebuilt)]

        def new(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
            return pd.DataFrame(rows, columns=columns)

        out.series = _concat(keep(self.series, SERIES_COLUMNS),
                             new([r for i in images.values() for r in i.series], SERIES_COLUMNS))
        out.visits = _concat(keep(self.visits, VISIT_COLUMNS),
                             new([r for i in images.values() for r in i.visits], VISIT_COLUMNS))
        out.lesions = _concat(keep(self.lesions, LESION_COLUMNS),
                              new([r for i in images.values() for r in i.lesions], LESION_COLUMNS))
        out.qc = _concat(keep(self.qc, QC_COLUMNS), findings_frame([f for i in images.values() for f in i.findings]))
        return out


def _concat(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    frames = [f for f in (a, b) if len(f)]
    if not frames:
        return a if len(a.columns) else b
    return pd.concat(frames, ignore_index=True).sort_values(list(frames[0].columns[:2]), kind="stable")


def old_tables(store: Path) -> StoreTables:
    """The tables of an existing store (empty tables when there is none or it was never completed)."""
    tables = StoreTables()
    tables.complete = (store / "manifest.parquet").exists()
    if not tables.complete:
        tables.manifest = _empty(["SOURCE_PATH", "SHA256"])
        return tables
    tables.manifest = pd.read_parquet(store / "manifest.parquet")
    for name, columns in TABLES.items():
        setattr(tables, name, read_parquet_or_empty(store / f"{name}.parquet", columns))
    return tables


PENDING = ".pending"
COMMIT_MARKER = "COMMIT"


def pending_dir(store: Path) -> Path:
    """Where a run stages everything it writes (images and tables) until the commit."""
    return store / PENDING


def recover(store: Path) -> str:
    """Finish or discard an interrupted commit; returns what was done ('' when nothing was pending).

    A run stages every file under ``.pending/`` and then writes ``.pending/COMMIT``. With the marker
    the staged files are complete, so the commit is rolled forward; without it the run died while
    staging and its files are discarded. Either way the store is whole afterwards.
    """
    staged = pending_dir(store)
    if not staged.exists():
        return ""
    if (staged / COMMIT_MARKER).exists():
        _publish(store)
        return "rolled forward an interrupted commit"
    shutil.rmtree(staged)
    return "discarded the staged files of an interrupted run"


def _publish(store: Path) -> None:
    staged = pending_dir(store)
    files = sorted(p for p in staged.rglob("*") if p.is_file() and p.name != COMMIT_MARKER)
    manifest = staged / "manifest.parquet"
    for path in [p for p in files if p != manifest] + ([manifest] if manifest.exists() else []):
        target = store / path.relative_to(staged)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    (staged / COMMIT_MARKER).unlink()
    shutil.rmtree(staged)


def write_tables(store: Path, tables: StoreTables, info: dict[str, Any]) -> None:
    """Stage every table and ``store.json`` next to the staged images, mark the commit, publish.

    The manifest is published last. A crash before the marker leaves the previous store untouched
    (the next run discards the staging area); a crash after it is completed by :func:`recover`.
    """
    staged = pending_dir(store)
    staged.mkdir(parents=True, exist_ok=True)
    write_json(staged / "store.json", info)
    for name in TABLES:
        write_parquet(staged / f"{name}.parquet", getattr(tables, name))
    write_parquet(staged / "manifest.parquet", tables.manifest)
    write_json(staged / COMMIT_MARKER, {"tables": [*TABLES, "manifest"]})
    _publish(store)
