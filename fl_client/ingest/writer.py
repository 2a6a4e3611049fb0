"""Atomic writes into the site store: temp file in the same folder, fsync, rename.

A crash at any point leaves either the old file or the new one, never half of one. The NIfTI header's
free-text fields (``descrip``, ``aux_file``, ``intent_name``, ``db_name``) are set explicitly so that
no text from the source can travel in them.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from isal import igzip
from numpy.typing import NDArray

# ISA-L level 2: about 4x faster than zlib level 1 at the same size (512 x 512 x 450 int16 CT: 1.0 s vs 4.2 s,
# 130 MB both), a standard gzip stream that nibabel, gzip and zlib read back unchanged.
NIFTI_GZIP_LEVEL = 2


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _commit(tmp: Path, path: Path) -> None:
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_bytes(path: Path, data: bytes) -> None:
    """Write bytes atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    tmp.write_bytes(data)
    _commit(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON (sorted keys, indented, UTF-8) atomically."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    """Write a table as Parquet atomically (no index; deterministic bytes for the same content)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    frame.reset_index(drop=True).to_parquet(tmp, index=False, engine="pyarrow")
    _commit(tmp, path)


def write_nifti(path: Path, array: NDArray[Any], affine: NDArray[np.float64], description: str) -> None:
    """Write a NIfTI-1 (``.nii.gz``) volume atomically with both qform and sform set to ``affine`` (RAS+).

    Compressed with ISA-L (:data:`NIFTI_GZIP_LEVEL`, the dominant ingest cost with zlib) into a standard
    gzip stream with a zero timestamp and no file name: the same volume always gives the same file (re-runs
    are byte-identical) and every reader of ``.nii.gz`` reads it. The volume is streamed
    through the compressor into the temporary file: no uncompressed or compressed copy of it is held
    (for a 512 x 512 x 450 series that was ~0.6 GB more than the volume itself).
    """
    image = nib.Nifti1Image(array, affine)
    header = image.header
    header.set_xyzt_units("mm")
    header["descrip"] = description.encode("ascii", "ignore")[:79]
    header["aux_file"] = b""
    header["intent_name"] = b""
    header["db_name"] = b""
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    try:
        with tmp.open("wb") as raw, igzip.IGzipFile(filename="", fileobj=raw, mode="wb", mtime=0,
                                                     compresslevel=NIFTI_GZIP_LEVEL) as stream:
            image.to_stream(stream)
        _commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class BackgroundWriter:
    """Compress and write NIfTI volumes on a second thread while the next series is being read.

    ISA-L releases the GIL, so on a 2-core site server gzip overlaps with DICOM parsing. At most one
    volume is in flight (:meth:`submit` waits for the previous one), so memory stays bounded by two
    series. Use as a context manager; leaving it waits for the last write and re-raises its error.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nifti-writer")
        self._pending: Future[None] | None = None

    def submit(self, path: Path, array: NDArray[Any], affine: NDArray[np.float64], description: str) -> None:
        """Queue one :func:`write_nifti` after the previous one has finished."""
        self.wait()
        self._pending = self._pool.submit(write_nifti, path, array, affine, description)

    def wait(self) -> None:
        """Block until the queued write is on disk; re-raise its exception."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


def read_parquet_or_empty(path: Path, columns: list[str]) -> pd.DataFrame:
    """A stored table, or an empty one with the given columns when it does not exist yet."""
    if path.exists():
        return pd.read_parquet(path)
    return pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
