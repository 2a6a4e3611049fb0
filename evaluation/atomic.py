"""Atomic replacement of an output folder: readers see the old folder or the new one, never half of each."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


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
