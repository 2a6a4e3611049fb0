"""The audit log detects every kind of tampering (DOMAIN.md §2: what changed, why, who, when)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedresponse.cli import app
from privacy.audit import GENESIS_HASH, AuditLog, AuditLogError, entry_hash, verify_chain


def _log(tmp_path: Path, n: int = 4) -> Path:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path)
    for i in range(n):
        audit.append(f"step.{i}", why=f"reason {i}", who="tester", details={"i": i, "files": ["a", "b"]})
    return path


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_intact_chain_verifies_and_links(tmp_path: Path) -> None:
    path = _log(tmp_path)
    assert verify_chain(path) == []
    entries = AuditLog(path).entries()
    assert [e.seq for e in entries] == [0, 1, 2, 3]
    assert entries[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.hash
    # The hash is SHA-256 of the canonical JSON of the other fields: recompute independently.
    import hashlib

    raw = json.loads(_lines(path)[2])
    body = {k: v for k, v in raw.items() if k != "hash"}
    expected = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert raw["hash"] == expected == entry_hash(raw)
    assert entries[1].ts.endswith("+00:00")


def _edit_details(lines: list[str]) -> list[str]:
    raw = json.loads(lines[1])
    raw["details"]["i"] = 99
    return [lines[0], json.dumps(raw), *lines[2:]]


def _edit_and_rehash(lines: list[str]) -> list[str]:
    raw = json.loads(lines[1])
    raw["why"] = "a nicer reason"
    raw["hash"] = entry_hash(raw)  # a forger recomputes the entry's own hash: the next link breaks
    return [lines[0], json.dumps(raw), *lines[2:]]


TAMPERINGS: list[tuple[str, Callable[[list[str]], list[str]], str]] = [
    ("edited", _edit_details, "was edited"),
    ("edited-rehashed", _edit_and_rehash, "does not link"),
    ("removed-middle", lambda ls: [ls[0], *ls[2:]], "expected 1"),
    ("reordered", lambda ls: [ls[0], ls[2], ls[1], ls[3]], "expected 1"),
    ("truncated-tail", lambda ls: ls[:2], "truncated"),
    ("cut-mid-line", lambda ls: [*ls[:3], ls[3][:40]], "not a valid audit entry"),
    ("duplicated", lambda ls: [*ls[:2], ls[1], *ls[2:]], "expected 2"),
    ("emptied", lambda ls: [], "truncated"),
]


@pytest.mark.parametrize(("name", "tamper", "message"), TAMPERINGS, ids=[t[0] for t in TAMPERINGS])
def test_tampering_is_detected(tmp_path: Path, name: str, tamper: Callable[[list[str]], list[str]],
                               message: str) -> None:
    path = _log(tmp_path)
    _write(path, tamper(_lines(path)))
    problems = verify_chain(path)
    assert problems, name
    assert any(message in p for p in problems), problems


def test_missing_head_is_reported(tmp_path: Path) -> None:
    path = _log(tmp_path)
    (tmp_path / "audit.jsonl.head").unlink()
    assert any("head file" in p for p in verify_chain(path))


def test_append_refuses_broken_log(tmp_path: Path) -> None:
    path = _log(tmp_path)
    _write(path, _edit_details(_lines(path)))
    with pytest.raises(AuditLogError, match="broken"):
        AuditLog(path).append("more", why="x", who="y")


@pytest.mark.parametrize("field", ["action", "why", "who"])
def test_append_requires_what_why_who(tmp_path: Path, field: str) -> None:
    kwargs = {"action": "a", "why": "b", "who": "c", field: " "}
    with pytest.raises(AuditLogError, match=field):
        AuditLog(tmp_path / "a.jsonl").append(kwargs.pop("action"), **kwargs)


def test_cli_verify(tmp_path: Path) -> None:
    path = _log(tmp_path)
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify", str(tmp_path)])  # a store folder holding audit.jsonl
    assert ok.exit_code == 0, ok.output
    assert "intact" in ok.output
    _write(path, _lines(path)[:3])
    broken = runner.invoke(app, ["audit", "verify", str(path)])
    assert broken.exit_code == 1
    assert "truncated" in broken.output
