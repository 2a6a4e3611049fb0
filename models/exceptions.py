"""Typed errors of :mod:`models`; each message says what was wrong, the value seen and what to do."""

from __future__ import annotations


class ModelInputError(ValueError):
    """A patient graph or feature tensor does not have the documented shape or content."""


class ModelConfigError(ValueError):
    """A model hyper-parameter is outside the range the network supports."""
