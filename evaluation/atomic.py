"""Atomic output: a file or folder is replaced whole, so readers never see half of it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO


def replace_directory(staged: Path, out: Path) -> None:
    """Move the complete folder ``staged`` to ``out``, replacing what was there.

    The previous ``out`` is moved aside first and removed only after the new one is in place, so a
    crash in between leaves ``.<name>.old`` beside the output rather than losing both.
    """
    if not out.exists():
        os.replace(staged, out)
        return
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    os.replace(staged, out)
    shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: Path, write: Callable[[TextIO], object], *, newline: str | None = None) -> None:
    """Write a text file through ``write(stream)`` into a temporary sibling, fsync, then rename into place.

    A crash leaves either the previous file or the complete new one, never a truncated file.
    """
    _write_atomic(path, "w", write, newline)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """:func:`write_text_atomic` for bytes (serialized ciphertexts, checkpoints)."""
    _write_atomic(path, "wb", lambda stream: stream.write(data), None)


def _write_atomic(path: Path, mode: str, write: Callable[[Any], object], newline: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        binary = "b" in mode
        with os.fdopen(handle, mode, encoding=None if binary else "utf-8", newline=newline) as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
