"""A small synthetic cohort shared by the generator tests (3 sites × 2 patients, quick preset)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from synth.cohort import synthesize


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort") / "c"
    synthesize(out, n_sites=3, patients_per_site=2, seed=11, preset_name="quick", workers=1)
    return out


def require_tool(name: str) -> str:
    """Path of a system tool; skip locally when missing, fail on CI (the Makefile installs it)."""
    import os

    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required on CI (make test installs it with apt-get)")
        pytest.skip(f"{name} is not installed (apt-get install dicom3tools)")
    return path
