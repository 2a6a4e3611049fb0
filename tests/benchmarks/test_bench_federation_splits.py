"""``bench_federation.py --cohort --splits K``: the per-mode difference averaged over the seeded splits."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_federation", ROOT / "benchmarks" / "bench_federation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_split_mean_sd_and_se_are_those_of_the_paired_differences() -> None:
    rows = [{"paired": {"early": {"diff": d, "n": 117}, "full": {"diff": f, "n": 90}}}
            for d, f in [(-0.05, 0.01), (0.01, math.nan), (-0.02, 0.03)]]
    out = _bench().split_summary(rows)
    assert out["early"]["mean_diff"] == pytest.approx(-0.02)
    assert out["early"]["sd"] == pytest.approx(0.03)  # sample SD (ddof 1) of -0.05, 0.01, -0.02
    assert out["early"]["se"] == pytest.approx(0.03 / math.sqrt(3))
    assert out["full"]["splits"] == 2 and out["full"]["mean_diff"] == pytest.approx(0.02)  # the NaN split left out
    assert out["early"]["n"] == [117, 117, 117]
