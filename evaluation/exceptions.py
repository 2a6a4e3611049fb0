"""Typed errors of :mod:`evaluation` that callers are expected to catch.

Every message names what is wrong, the value seen and what to do about it.
"""

from __future__ import annotations


class EvaluationError(Exception):
    """Base class of the errors raised by :mod:`evaluation`."""


class MeasurementTableError(EvaluationError, ValueError):
    """The lesion-measurement table breaks a rule of its contract (ARCHITECTURE, "Lesion measurement table").

    Attributes
    ----------
    rows : list[dict[str, object]]
        The offending rows (as read, at most 20), so a caller can show or log them.
    """

    def __init__(self, message: str, rows: list[dict[str, object]] | None = None) -> None:
        self.rows = list(rows or [])[:20]
        detail = ""
        if self.rows:
            shown = "\n".join(f"  {row}" for row in self.rows[:5])
            more = f"\n  ... and {len(self.rows) - 5} more" if len(self.rows) > 5 else ""
            detail = f"\noffending row(s):\n{shown}{more}"
        super().__init__(message + detail)


class AdjudicationPendingError(EvaluationError):
    """Readers disagree on some subjects and no adjudicator decision was supplied for them.

    Attributes
    ----------
    subjects : list[str]
        USUBJIDs waiting for a decision.
    """

    def __init__(self, subjects: list[str]) -> None:
        self.subjects = sorted(subjects)
        shown = ", ".join(self.subjects[:10]) + (" ..." if len(self.subjects) > 10 else "")
        super().__init__(
            f"{len(self.subjects)} subject(s) need an adjudicator's decision ({shown}); supply a decisions file "
            "(USUBJID, CHOSEN_READER, ADJUDICATOR, REASON; `fedresponse assess --decisions FILE`) or run with "
            "`--provisional` (adjudicate(..., provisional=True)) to write them PENDING, unlocked"
        )


class AdjudicationDecisionError(EvaluationError, ValueError):
    """An adjudication decision is malformed (unknown subject or reader, missing adjudicator or reason)."""


class AssessmentLockedError(EvaluationError):
    """A locked assessment would be changed without a recorded reason."""


class LockIntegrityError(EvaluationError):
    """A locked assessment's files no longer match their locked checksums (an unrecorded change)."""


class MeasurementError(EvaluationError, ValueError):
    """A mask or its geometry cannot be measured (empty mask, non-axial affine, bad spacing)."""


# --- statistics, pooled statistics and CDISC export (evaluation.stats/survival/pooled/cdisc) ---


class EvaluationInputError(EvaluationError, ValueError):
    """An input table or array is malformed (wrong shape, labels, missing column, impossible value)."""


class NotEstimableError(EvaluationError):
    """A statistic cannot be estimated from these data (a class of one patient, a Cox model that does not
    converge, a median not reached). ``metrics.json`` reports it as ``<key>: null`` with the reason in
    ``<key>_not_estimable`` (docs/report.md), never as a number."""


class PooledStatisticsError(EvaluationError):
    """Site aggregates cannot be combined (different bin edges, layouts or versions)."""


class CdiscExportError(EvaluationError):
    """A dataset would break the submission rules (names, labels, lengths) or its source is unusable."""
