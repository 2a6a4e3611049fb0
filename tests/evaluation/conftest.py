"""Shared fixtures of the evaluation tests: one small seeded run, evaluated once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_run import make_run


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"run", "cohort"}`` of a 2-site, 14-patient-per-site seeded run."""
    return make_run(tmp_path_factory.mktemp("evalrun"), seed=3, n_sites=2, n_per_site=14)


@pytest.fixture(scope="session")
def evaluated(synthetic_run: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The written evaluation (metrics.json, report.html, figures/) of :func:`synthetic_run`."""
    from evaluation.evaluate import load_run
    from evaluation.report import write_evaluation

    inputs = load_run(synthetic_run["run"], synthetic_run["cohort"])
    return write_evaluation(inputs, tmp_path_factory.mktemp("eval") / "out")
