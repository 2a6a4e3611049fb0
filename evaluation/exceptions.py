"""Errors raised by the evaluation package; each message says what is wrong, the value seen and the remedy.

Other parts of ``evaluation`` (response criteria, agreement) may add their own classes here, derived from
:class:`EvaluationError`.
"""

from __future__ import annotations


class EvaluationError(Exception):
    """Base class of every error the evaluation package raises on purpose."""


class EvaluationInputError(EvaluationError, ValueError):
    """An input table or array is malformed (wrong shape, labels, missing column, impossible value)."""


class PooledStatisticsError(EvaluationError):
    """Site aggregates cannot be combined (different bin edges, layouts or versions)."""


class CdiscExportError(EvaluationError):
    """A dataset would break the submission rules (names, labels, lengths) or its source is unusable."""
