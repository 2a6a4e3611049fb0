"""``fedresponse assess --measurements IN.csv --out DIR``: files, adjudication, lock and audited change."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from response_tables import table
from typer.testing import CliRunner

from evaluation.response import SUBJECT_COLUMNS, VISIT_COLUMNS
from evaluation.response.reference import REFERENCE_COLUMNS
from fedresponse.cli import app
from privacy.audit import AuditLog, verify_chain

A, B = "FEDRESP-S01-0001", "FEDRESP-S01-0002"
READS = {
    ("R1", A): [("T0", -7, {"T1": 50.0}), ("T1", 62, {"T1": 30.0}), ("T2", 104, {"T1": 28.0})],
    ("R2", A): [("T0", -7, {"T1": 51.0}), ("T1", 62, {"T1": 31.0}), ("T2", 104, {"T1": 29.0})],
    ("R1", B): [("T0", -7, {"T1": 40.0}), ("T1", 62, {"T1": 30.0}), ("T2", 104, {"T1": 30.0})],
    ("R2", B): [("T0", -7, {"T1": 40.0}), ("T1", 62, {"T1": 28.0}), ("T2", 104, {"T1": 30.0})],
}
runner = CliRunner()


def _write_reads(path: Path) -> Path:
    frame = pd.concat([table(v, subject=s, reader=r) for (r, s), v in READS.items()], ignore_index=True)
    frame.to_csv(path, index=False)
    return path


def _assess(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["assess", *args])
    return result.exit_code, result.output


def test_single_reader_writes_the_contract_files(tmp_path: Path) -> None:
    reads = pd.read_csv(_write_reads(tmp_path / "reads.csv"))
    reads[reads["READER"] == "R1"].drop(columns="READER").to_csv(tmp_path / "r1.csv", index=False)
    code, output = _assess("--measurements", str(tmp_path / "r1.csv"), "--out", str(tmp_path / "out"))
    assert code == 0, output
    visits = pd.read_csv(tmp_path / "out" / "visits.csv")
    subjects = pd.read_csv(tmp_path / "out" / "subjects.csv")
    assert tuple(visits.columns) == VISIT_COLUMNS and tuple(subjects.columns) == SUBJECT_COLUMNS
    assert tuple(pd.read_csv(tmp_path / "out" / "reference.csv").columns) == REFERENCE_COLUMNS
    assert subjects.set_index("USUBJID")["BOR"].to_dict() == {A: "PR", B: "SD"}
    assert len(visits) == 6


def test_double_read_needs_decisions_then_locks_and_audits_changes(tmp_path: Path) -> None:
    reads = _write_reads(tmp_path / "reads.csv")
    out = tmp_path / "out"
    code, output = _assess("--measurements", str(reads), "--out", str(out))
    assert code == 1 and "need an adjudicator" in output and B in output
    assert not (out / "visits.csv").exists()  # nothing half-written

    decisions = tmp_path / "decisions.csv"
    pd.DataFrame([{"USUBJID": B, "CHOSEN_READER": "R2", "ADJUDICATOR": "ADJ1", "REASON": "R1 missed shrinkage"}]
                 ).to_csv(decisions, index=False)
    code, output = _assess("--measurements", str(reads), "--out", str(out), "--decisions", str(decisions),
                           "--lock", "--who", "irc-chair")
    assert code == 0, output
    agreement = json.loads((out / "agreement.json").read_text())
    assert agreement["adjudication_rate"] == 0.5 and agreement["adjudicated"] == 1
    assert (out / "readers" / "R1" / "visits.csv").exists() and (out / "lock.json").exists()
    assert pd.read_csv(out / "subjects.csv").set_index("USUBJID").at[B, "BOR"] == "PR"

    other = tmp_path / "other.csv"
    pd.DataFrame([{"USUBJID": B, "CHOSEN_READER": "R1", "ADJUDICATOR": "ADJ2", "REASON": "second look"}]
                 ).to_csv(other, index=False)
    code, output = _assess("--measurements", str(reads), "--out", str(out), "--decisions", str(other))
    assert code == 1 and "unexplained change" in output
    code, output = _assess("--measurements", str(reads), "--out", str(out), "--decisions", str(other),
                           "--reason", "adjudication re-opened after a protocol query", "--who", "adj2")
    assert code == 0, output
    log = AuditLog(out / "audit.jsonl")
    assert [e.action for e in log.entries()] == ["assessment.lock", "assessment.amend"]
    assert log.entries()[-1].why == "adjudication re-opened after a protocol query"
    assert verify_chain(log.path) == []
    assert pd.read_csv(out / "subjects.csv").set_index("USUBJID").at[B, "BOR"] == "SD"


def test_bad_table_is_refused_with_the_row(tmp_path: Path) -> None:
    reads = pd.read_csv(_write_reads(tmp_path / "reads.csv"))
    reads.loc[3, "CATEGORY"] = "MEASURED"
    reads.to_csv(tmp_path / "bad.csv", index=False)
    code, output = _assess("--measurements", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o"))
    assert code == 1 and "unknown CATEGORY" in output and "MEASURED" in output


def test_failure_while_writing_leaves_previous_files_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evaluation.response.pipeline as pipeline
    from evaluation.protocol import load_protocol

    reads = pd.read_csv(_write_reads(tmp_path / "reads.csv"))
    single = reads[reads["READER"] == "R1"].drop(columns="READER")
    out = tmp_path / "out"
    pipeline.run_assessment(single, out, load_protocol())
    before = {p.name: p.read_bytes() for p in out.glob("*.csv")}
    calls = {"n": 0}
    real = pipeline.write_csv_atomic

    def failing(frame: pd.DataFrame, path: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("No space left on device")
        real(frame, path)

    monkeypatch.setattr(pipeline, "write_csv_atomic", failing)
    changed = single.assign(DIAM_MM=single["DIAM_MM"] * 0.5)
    with pytest.raises(OSError, match="No space"):
        pipeline.run_assessment(changed, out, load_protocol())
    assert {p.name: p.read_bytes() for p in out.glob("*.csv")} == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
