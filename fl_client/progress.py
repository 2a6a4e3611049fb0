"""Progress of long hospital-side steps (pull, ingest, featurize), reported to whoever shows it.

Library code counts work in named units (``patients``, ``series``) through a :class:`ProgressSink`; the
command line turns the counts into rich progress bars with an ETA (``fedresponse/commands/ingest.py``),
tests and library callers pass nothing. A sink must be cheap and thread-safe: pulls report from threads.
"""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    """Receives work counts: ``expect`` grows a unit's total, ``advance`` marks units done."""

    def expect(self, unit: str, n: int) -> None: ...

    def advance(self, unit: str, n: int = 1) -> None: ...


class NoProgress:
    """The sink of callers that show no progress."""

    def expect(self, unit: str, n: int) -> None:
        """Ignore."""

    def advance(self, unit: str, n: int = 1) -> None:
        """Ignore."""
