"""Round checkpoints at the coordinating centre, and resuming from the last completed round.

The server only ever holds the *encrypted* aggregate, so that is what it checkpoints: after round r
it writes ``RUN/checkpoints/round_{r:04d}/`` holding ``global.json`` (the aggregate's metadata, the
run state such as the resolved settings and the layout) and ``global.bin`` (the ciphertext chunks,
concatenated; offsets in the JSON). The folder is written under a temporary name and renamed into
place, and ``RUN/checkpoints/LATEST`` (the round number) is replaced atomically afterwards, so a
crash at any moment leaves either the previous or the new checkpoint, never half of one. The sites
hold the model in the clear; the server never needs it to resume.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privacy.update import GlobalModel

log = logging.getLogger(__name__)

LATEST = "LATEST"


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable or inconsistent; the message names the file and the remedy."""


@dataclass(frozen=True)
class Checkpoint:
    """A completed round: the encrypted global model after it and the run state to continue with."""

    round: int
    global_model: GlobalModel
    state: dict[str, Any]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir: Path, global_model: GlobalModel, state: dict[str, Any]) -> Path:
    """Write the checkpoint of ``global_model.round`` atomically and point ``LATEST`` at it."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"round_{global_model.round:04d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}."))
    try:
        offsets, position = [], 0
        with (tmp / "global.bin").open("wb") as handle:
            for chunk in global_model.chunks:
                handle.write(chunk)
                offsets.append([position, len(chunk)])
                position += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        meta = {k: v for k, v in global_model.to_record().items() if k != "chunks"}
        (tmp / "global.json").write_text(json.dumps({"global": meta, "offsets": offsets, "state": state}, indent=1))
        if final.exists():  # a re-run of the same round after a crash between rename and LATEST
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    latest_tmp = root / f".{LATEST}.tmp"
    latest_tmp.write_text(f"{global_model.round}\n")
    os.replace(latest_tmp, root / LATEST)
    _fsync_dir(root)
    log.info("checkpoint of round %d written to %s", global_model.round, final)
    return final


def load_latest(run_dir: Path) -> Checkpoint | None:
    """The last completed round's checkpoint, or ``None`` when the run has none yet."""
    root = run_dir / "checkpoints"
    pointer = root / LATEST
    if not pointer.exists():
        return None
    try:
        round_ = int(pointer.read_text().strip())
        folder = root / f"round_{round_:04d}"
        payload = json.loads((folder / "global.json").read_text())
        blob = (folder / "global.bin").read_bytes()
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the checkpoint named by {pointer}: {exc}. Remove the run directory's "
                              "checkpoints/LATEST to restart from scratch, or restore the folder.") from exc
    chunks = [blob[start:start + size] for start, size in payload["offsets"]]
    if sum(size for _, size in payload["offsets"]) != len(blob):
        raise CheckpointError(f"{folder / 'global.bin'} is {len(blob)} bytes, its index says otherwise; restore it.")
    record = {**payload["global"], "chunks": chunks}
    return Checkpoint(round=round_, global_model=GlobalModel.from_record(record), state=payload["state"])
