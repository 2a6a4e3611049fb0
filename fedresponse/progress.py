"""Rich progress bars for the long hospital-side steps (pull, ingest, featurize): one bar per unit of work
(patients, series, files) with its count, elapsed time and ETA, fed by :class:`fl_client.progress.ProgressSink`
calls. Logs (``--verbose``) print above the bars: both use rich's global console."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import rich
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RichProgress:
    """A :class:`~fl_client.progress.ProgressSink` drawing one bar per unit (thread-safe)."""

    def __init__(self, progress: Progress, title: str) -> None:
        self.progress, self.title = progress, title
        self.tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def _task(self, unit: str) -> TaskID:
        if unit not in self.tasks:
            self.tasks[unit] = self.progress.add_task(f"{self.title}: {unit}", total=0)
        return self.tasks[unit]

    def expect(self, unit: str, n: int) -> None:
        with self._lock:
            task = self._task(unit)
            total = self.progress.tasks[task].total or 0
            self.progress.update(task, total=total + n)

    def advance(self, unit: str, n: int = 1) -> None:
        with self._lock:
            self.progress.advance(self._task(unit), n)


@contextmanager
def progress_bars(title: str) -> Iterator[RichProgress]:
    """Bars for one step, e.g. ``with progress_bars("pull") as sink: pull(..., progress=sink)``."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=rich.get_console()) as progress:
        yield RichProgress(progress, title)
