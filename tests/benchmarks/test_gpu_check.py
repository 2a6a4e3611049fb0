"""benchmarks/gpu_check.py without a CUDA device: it says so and exits 0 (the CUDA path needs a GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_without_cuda_says_so_and_exits_zero():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # hides any GPU from torch, so this runs the same everywhere
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device" in proc.stdout and "nothing to check" in proc.stdout
    assert "CUDA-only tests" not in proc.stdout  # nothing was attempted


def test_make_gpu_check_target_runs_the_script():
    makefile = (ROOT / "Makefile").read_text()
    assert "gpu-check:" in makefile and "benchmarks/gpu_check.py" in makefile.split("gpu-check:", 1)[1].split("\n\n")[0]
