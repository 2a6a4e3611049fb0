"""Fixtures of the ingest tests (helpers live in ingest_fixtures.py)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: every test export is reproducible."""
    return np.random.default_rng(20261122)
