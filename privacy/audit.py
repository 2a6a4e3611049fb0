"""Append-only, hash-chained audit log (what / why / who / when).

The study's data-lock rule (DOMAIN.md §2) says any change after assessment must record *what changed,
why, who and when*, and that hidden or untraceable changes invalidate the trial. This module is the one
home for that record, on both sides of the hospital wall.

Format: a JSON-lines file, one :class:`AuditEntry` per line. Each entry carries the SHA-256 of the
canonical JSON of its own fields (``hash``) and the hash of the entry before it (``prev_hash``; the
first entry's is 64 zeros). Editing, removing or reordering any entry breaks the chain. Removing entries
*at the end* leaves a valid shorter chain, so every append also writes a small head file
(``<log>.head``, written atomically) holding the last ``seq`` and ``hash``; :func:`verify_chain`
compares the log against it. Someone who rewrites both the log and its head consistently is not
detected by the file alone: publish the head hash elsewhere (the ingest summary prints it) when that
threat matters.

Canonical JSON: ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` encoded
as UTF-8; the hashed object holds every field except ``hash``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
_FIELDS = ("seq", "ts", "who", "action", "why", "details", "prev_hash", "hash")


class AuditLogError(RuntimeError):
    """The audit log cannot be appended to (for example its chain is already broken)."""


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(fields: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of every field of an entry except ``hash``."""
    body = {key: fields[key] for key in _FIELDS if key != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit log.

    Attributes
    ----------
    seq : int
        Position in the log, 0 for the first entry, contiguous.
    ts : str
        UTC time of the append, ISO-8601 with offset (``2026-11-22T00:10:00.123456+00:00``).
    who : str
        The person or service account responsible.
    action : str
        What was done (short, machine-readable, e.g. ``"ingest.run"``).
    why : str
        The reason, in words.
    details : dict
        JSON-serialisable facts about the action (counts, file names, hashes; never PHI).
    prev_hash, hash : str
        Hex SHA-256 of the previous entry and of this one (see module docstring).
    """

    seq: int
    ts: str
    who: str
    action: str
    why: str
    details: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = GENESIS_HASH
    hash: str = ""

    def to_json(self) -> str:
        """The entry as one canonical JSON line (no trailing newline)."""
        return _canonical(asdict(self)).decode("utf-8")


def _head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock so that two processes appending to one log cannot interleave."""
    lock_path = path.with_name(path.name + ".lock")
    with lock_path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AuditLog:
    """An append-only, hash-chained, fsync'd JSON-lines audit log.

    Parameters
    ----------
    path : Path
        The log file (created with its parent folder on first append).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def entries(self) -> list[AuditEntry]:
        """Every entry, in file order. Raises :class:`AuditLogError` on an unreadable line."""
        if not self.path.exists():
            return []
        out: list[AuditEntry] = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                out.append(_parse(line))
            except (ValueError, TypeError, KeyError) as exc:
                raise AuditLogError(f"{self.path}: line {number} is not an audit entry ({exc}); "
                                    f"run `fedresponse audit verify {self.path}`") from exc
        return out

    def append(self, action: str, *, why: str, who: str, details: Mapping[str, Any] | None = None) -> AuditEntry:
        """Append one entry and fsync it; returns the entry written.

        Raises
        ------
        AuditLogError
            When the existing log is broken (the new entry would otherwise hide the damage) or an
            argument is empty.
        """
        for name, value in (("action", action), ("why", why), ("who", who)):
            if not value or not value.strip():
                raise AuditLogError(f"audit {name} must be a non-empty string, but was {value!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.path):
            problems = verify_chain(self.path) if self.path.exists() else []
            if problems:
                raise AuditLogError(f"refusing to append to a broken audit log {self.path}: " + "; ".join(problems))
            last = self.entries()[-1] if self.path.exists() and self.path.stat().st_size else None
            fields: dict[str, Any] = {
                "seq": 0 if last is None else last.seq + 1,
                "ts": datetime.now(UTC).isoformat(),
                "who": who,
                "action": action,
                "why": why,
                "details": json.loads(_canonical(dict(details or {}))),
                "prev_hash": GENESIS_HASH if last is None else last.hash,
            }
            fields["hash"] = entry_hash(fields)
            entry = AuditEntry(**fields)
            created = not self.path.exists()
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(entry.to_json() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            _write_head(self.path, entry)
            if created:
                _fsync_dir(self.path.parent)
        log.debug("audit %s #%d %s", self.path, entry.seq, action)
        return entry


def _write_head(path: Path, entry: AuditEntry) -> None:
    head = _head_path(path)
    tmp = head.with_name(head.name + f".tmp{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps({"seq": entry.seq, "hash": entry.hash}) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, head)
    _fsync_dir(path.parent)


def _parse(line: str) -> AuditEntry:
    raw = json.loads(line)
    if not isinstance(raw, dict) or set(raw) != set(_FIELDS):
        raise ValueError(f"expected exactly the fields {_FIELDS}")
    if not isinstance(raw["seq"], int) or not isinstance(raw["details"], dict):
        raise TypeError("seq must be an integer and details an object")
    return AuditEntry(**raw)


def _check_entry(entry: AuditEntry, index: int, prev_hash: str) -> list[str]:
    problems: list[str] = []
    where = f"entry at line {index + 1}"
    if entry.seq != index:
        problems.append(f"{where} has seq {entry.seq}, expected {index} (an entry was removed, inserted or moved)")
    if entry.prev_hash != prev_hash:
        problems.append(f"{where} (seq {entry.seq}) does not link to the entry before it "
                        f"(prev_hash {entry.prev_hash[:12]}…, expected {prev_hash[:12]}…)")
    recomputed = entry_hash(asdict(entry))
    if entry.hash != recomputed:
        problems.append(f"{where} (seq {entry.seq}, action {entry.action!r}) was edited: "
                        f"stored hash {entry.hash[:12]}…, content hashes to {recomputed[:12]}…")
    try:
        stamp = datetime.fromisoformat(entry.ts)
        if stamp.utcoffset() is None or stamp.utcoffset().total_seconds() != 0:  # type: ignore[union-attr]
            problems.append(f"{where} (seq {entry.seq}) timestamp {entry.ts!r} is not UTC")
    except ValueError:
        problems.append(f"{where} (seq {entry.seq}) timestamp {entry.ts!r} is not ISO-8601")
    return problems


def _check_head(path: Path, entries: list[AuditEntry]) -> list[str]:
    head = _head_path(path)
    if not head.exists():
        return [f"head file {head} is missing: cannot tell whether entries were removed from the end"]
    try:
        recorded = json.loads(head.read_text(encoding="utf-8"))
        seq, digest = int(recorded["seq"]), str(recorded["hash"])
    except (ValueError, KeyError, TypeError):
        return [f"head file {head} is unreadable"]
    last = entries[-1] if entries else None
    if last is None or last.seq != seq or last.hash != digest:
        seen = "no entries" if last is None else f"last entry seq {last.seq}"
        return [f"log was truncated or rolled back: head file records seq {seq} ({digest[:12]}…) but the log "
                f"has {seen}"]
    return []


def verify_chain(path: Path) -> list[str]:
    """Check an audit log; returns ``[]`` when intact, else one human-readable problem per finding.

    Detects edited entries (hash mismatch), removed, inserted or reordered entries (``seq`` and
    ``prev_hash`` links), malformed lines, non-UTC timestamps and entries removed from the end
    (against the head file).
    """
    path = Path(path)
    if not path.exists():
        return [f"audit log {path} does not exist"]
    problems: list[str] = []
    entries: list[AuditEntry] = []
    prev_hash = GENESIS_HASH
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        try:
            entry = _parse(line)
        except (ValueError, TypeError) as exc:
            problems.append(f"line {number + 1} is not a valid audit entry ({exc}); the file was edited or cut")
            prev_hash = ""
            continue
        problems.extend(_check_entry(entry, number, prev_hash))
        entries.append(entry)
        prev_hash = entry.hash
    problems.extend(_check_head(path, entries))
    return problems
