"""The evaluate and export-cdisc demo stages (``fedresponse.stages``) on seeded inputs (the demo runs them on the
quick cohort). Here rather than under tests/fedresponse/ because they use this folder's fixtures (``synthetic_run``,
``test_cdisc._source``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from fedresponse.demo import DemoContext
from fedresponse.stages import evaluate as evaluate_stage
from fedresponse.stages import export_cdisc as cdisc_stage


def test_export_cdisc_stage_reads_the_cohort(tmp_path: Path) -> None:
    from test_cdisc import _source

    _source(tmp_path / "cohort")
    ctx = DemoContext(out=tmp_path, seed=1, console=Console(quiet=True))
    produced = cdisc_stage.run(ctx)
    assert ctx.artifacts["cdisc"] == tmp_path / "cdisc"
    assert Path(produced["define.xml"]).exists()
    assert len(list((tmp_path / "cdisc").glob("*/*.xpt"))) == 7  # sdtm/ (DM TU TR RS) and adam/ (ADSL ADRS ADTTE)


def test_evaluate_stage_needs_a_training_run(tmp_path: Path) -> None:
    ctx = DemoContext(out=tmp_path, seed=1, console=Console(quiet=True))
    with pytest.raises(LookupError, match="after a train stage"):
        evaluate_stage.run(ctx)


@pytest.mark.slow
def test_evaluate_stage_writes_report_screenshot_and_headline(synthetic_run: dict[str, Path]) -> None:
    root = synthetic_run["run"].parent
    artifacts = {"run:centralized": synthetic_run["run"]}
    ctx = DemoContext(out=root, seed=1, console=Console(quiet=True), artifacts=artifacts)
    produced = evaluate_stage.run(ctx)
    metrics = json.loads(Path(produced["metrics.json"]).read_text())
    assert f"pooled AUC early {metrics['pooled']['early']['auc']:.2f}" in produced["headline"]
    assert f"full {metrics['pooled']['full']['auc']:.2f}" in produced["headline"]
    assert Path(produced["PI report"]).exists()
    if "report screenshot" in produced:
        assert Path(produced["report screenshot"]).stat().st_size > 50_000
