"""Logging set-up at the CLI entry point: third-party INFO (highdicom, Flower) only with ``--verbose``.

Each case runs in a fresh interpreter (logging is process-global) through the real Typer app: the root
callback runs before the sub-command's ``--help``, then records go to real library logger names.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import logging, sys
from typer.testing import CliRunner
from fedresponse.cli import app

result = CliRunner().invoke(app, [*sys.argv[1:], "synth", "--help"])
assert result.exit_code == 0, result.output
for name, level in [("highdicom.base", "info"), ("highdicom.base", "warning"), ("flwr", "info"),
                    ("synth.cohort", "info"), ("fl_client.ingest.pipeline", "debug")]:
    getattr(logging.getLogger(name), level)("%s %s line", name, level)
"""


def _emitted(*flags: str) -> str:
    result = subprocess.run([sys.executable, "-c", SCRIPT, *flags], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=True, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"})
    return result.stdout + result.stderr


@pytest.mark.parametrize(("flags", "shown", "hidden"), [
    ((), ["highdicom.base warning", "synth.cohort info"],
     ["highdicom.base info", "flwr info", "fl_client.ingest.pipeline debug"]),
    (("--verbose",), ["highdicom.base info", "highdicom.base warning", "flwr info", "synth.cohort info",
                      "fl_client.ingest.pipeline debug"], []),
])
def test_third_party_info_is_silenced_unless_verbose(flags: tuple[str, ...], shown: list[str],
                                                     hidden: list[str]) -> None:
    out = _emitted(*flags)
    assert [line for line in shown if line not in out] == [], out
    assert [line for line in hidden if line in out] == [], out
