"""The study protocol for the submitted programs: the values of ``study.yaml`` read from ``study.json``.

Shipped in the package's ``programs/`` folder in place of the platform's validating loader
(``evaluation.protocol``, which needs pydantic and PyYAML): the reviewer's environment needs only pandas and
pyreadstat. ``study.json`` is written by the export from the same protocol as ``study.yaml`` beside it; the
derivation code reads it through attributes (``protocol.recist.sd_min_days``, ``protocol.visits``) exactly
as it reads the validated model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class Values:
    """Attribute access to one mapping of protocol values (nested mappings become :class:`Values`)."""

    def __init__(self, data: dict[str, Any]) -> None:
        for key, value in data.items():
            setattr(self, key, _wrap(key, value))

    @property
    def visits(self) -> list[str]:
        """Protocol imaging visits in time order (as ``StudyProtocol.visits``)."""
        timepoints: dict[str, Any] = getattr(self, "timepoints", {})
        return sorted(timepoints, key=lambda name: timepoints[name].visitnum)


def _wrap(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        if key in ("timepoints", "endpoint_fields"):  # mappings keyed by data (visit names, flags)
            return {k: _wrap("", v) for k, v in value.items()}
        return Values(value)
    if isinstance(value, list):
        return tuple(_wrap("", v) for v in value)
    return value


def load_protocol(path: Path | None = None) -> Values:
    """Read ``study.json`` (default: beside this file)."""
    path = path or Path(__file__).with_name("study.json")
    return Values(json.loads(path.read_text(encoding="utf-8")))


# Names the derivation modules import from ``evaluation.protocol`` only for type annotations
# (``StudyProtocol``, ``Populations``, ...) resolve to Values.
def __getattr__(name: str) -> type[Values]:
    if name[:1].isupper():
        return Values
    raise AttributeError(name)
