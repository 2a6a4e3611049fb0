"""Process parallelism for ingest: header discovery and per-subject image building scale with cores.

Both are CPU-bound (DICOM parsing, decoding, gzip) and independent per file or per subject, and a site
server has few cores (we plan for 2). Workers are forked from a *forkserver* — a fresh single-threaded
process, so no fork of a process holding threads — that has imported the ingest code once
(:data:`PRELOAD`). Spawned workers each imported it again (1.3-2.6 CPU s per worker and per pool, two
pools per ingest): on a 2-patient chest export that overhead, ~11 of 41 CPU s, made two workers slower
than one. Small exports still run in-process. Results come back in input order, so a parallel run writes
exactly what a serial run writes.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import pydicom

T = TypeVar("T")
R = TypeVar("R")

#: Below this many input files an export is processed in-process.
PARALLEL_FROM_FILES = 2000
#: What the forkserver imports once, before it forks any worker: the code the workers run.
PRELOAD = ("fl_client.ingest.pipeline",)


@dataclass(frozen=True)
class Parallelism:
    """How many worker processes, and from what export size (number of files) to use them."""

    workers: int = 1
    from_files: int = PARALLEL_FROM_FILES

    def active(self, n_files: int) -> bool:
        """Whether an export of ``n_files`` files is worth the workers' start-up."""
        return self.workers > 1 and n_files >= self.from_files


def lenient_reading() -> None:
    """Worker initialiser: read exports as they are (pydicom's value warnings are noise here)."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


def ordered_map(func: Callable[[T], R], items: Sequence[T], workers: int, chunksize: int = 1,
                on_result: Callable[[R], None] | None = None) -> list[R]:
    """``[func(item) for item in items]`` in ``workers`` spawned processes (``func`` must be importable);
    ``on_result`` sees each result as it arrives, in order (progress reporting)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))  # no effect once this process's forkserver runs
    results: list[R] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=lenient_reading) as pool:
        for result in pool.map(func, items, chunksize=chunksize):
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results
