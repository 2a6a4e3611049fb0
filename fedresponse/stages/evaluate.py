"""Demo stage ``evaluate``: metrics.json, the PI report and its browser screenshot for the demo's training run.

Uses the run directory a training stage recorded (``run:centralized`` first, else ``run:federated``, else any
``run:*``), the sites' response assessments (``assessment:<SITE>``), the cohort (CONSORT flow, reader
agreement) and, when the ``keys`` stage recorded a key directory (``keys``), pools under CKKS. When the
federated stage recorded ``run:federated`` as well, that run is evaluated too, into ``evaluation_federated/``
(metrics.json + report.html, pooled under CKKS with the run's ``ckks_keys``), and its pooled early/full AUC is
printed next to the centralized run's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedresponse.headline import fmt_ci, fmt_num, headline

if TYPE_CHECKING:
    from fedresponse.demo import DemoContext

RUN_KEYS = ("run:centralized", "run:federated")


def find_run(artifacts: dict[str, Path]) -> Path:
    """The training run to evaluate; the error says which stage must come first."""
    for key in (*RUN_KEYS, *sorted(k for k in artifacts if k.startswith("run:"))):
        if key in artifacts:
            return artifacts[key]
    raise LookupError("no training run recorded (expected ctx.artifacts['run:centralized'] or ['run:federated']); "
                      "the evaluate stage must come after a train stage")


def run(ctx: DemoContext) -> dict[str, str]:
    """Evaluate, render in headless Chromium, and report the headline numbers."""
    from evaluation.evaluate import load_run
    from evaluation.report import write_evaluation
    from evaluation.report_browser import chromium_path, render_report

    assessments = [ctx.artifacts[k] for k in sorted(ctx.artifacts) if k.startswith("assessment:")]
    dhi = [ctx.artifacts[k] for k in sorted(ctx.artifacts) if k.startswith("dhi:")]
    dhi += sorted((ctx.out / "radiomics").glob("*/dhi.csv")) if not dhi else []
    cohort = ctx.cohort if ctx.cohort.is_dir() else None
    evaluated = find_run(ctx.artifacts)
    inputs = load_run(evaluated, cohort, assessments, dhi_tables=[p for p in dhi if p.exists()])
    codec = None
    if "keys" in ctx.artifacts:
        from fedresponse.commands.evaluate import _ckks_codec

        codec = _ckks_codec(ctx.artifacts["keys"])
    out = ctx.out / "evaluation"
    paths = write_evaluation(inputs, out, codec=codec)
    ctx.artifacts["evaluation"] = out
    produced = {"PI report": str(paths["report"]), "metrics.json": str(paths["metrics"]),
                "figures (PNG+SVG)": str(paths["figures"])}
    if chromium_path() is not None:
        shot = render_report(paths["report"], out / "report_screenshot.png")
        if shot.console_errors or shot.images_broken:
            raise RuntimeError(f"report rendered with errors: {shot.console_errors}, "
                               f"{shot.images_broken} broken images")
        produced["report screenshot"] = str(shot.screenshot)
    else:
        ctx.console.print("[yellow]chromium not installed: no screenshot (apt-get install chromium)[/]")
    metrics = json.loads(paths["metrics"].read_text(encoding="utf-8"))
    produced["headline"] = headline(metrics)
    ctx.console.print(produced["headline"])
    federated = ctx.artifacts.get("run:federated")
    if federated is not None and Path(federated) != Path(evaluated):
        produced.update(_evaluate_federated(ctx, Path(federated), metrics, assessments, [p for p in dhi if p.exists()]))
    return produced


def _evaluate_federated(ctx: DemoContext, run: Path, centralized: dict[str, Any], assessments: list[Path],
                        dhi: list[Path]) -> dict[str, str]:
    """``fedresponse evaluate`` of the federated run into ``evaluation_federated/`` (no screenshot)."""
    from evaluation.evaluate import load_run
    from evaluation.report import write_evaluation
    from fedresponse.commands.evaluate import _ckks_codec, heldout_line, key_holder_evaluation

    keys = ctx.artifacts.get("ckks_keys")
    inputs = load_run(run, ctx.cohort if ctx.cohort.is_dir() else None, assessments, dhi_tables=dhi)
    # the demo plays the PI (key holder): `fedresponse evaluate RUN --keys KEYDIR` decrypts the pooled aggregate
    heldout = key_holder_evaluation(run, Path(keys) if keys else None)
    paths = write_evaluation(inputs, ctx.out / "evaluation_federated", codec=_ckks_codec(keys) if keys else None,
                             heldout=heldout)
    line = federated_line(json.loads(paths["metrics"].read_text(encoding="utf-8")), centralized)
    ctx.console.print(line)
    produced = {"federated PI report": str(paths["report"]), "federated metrics.json": str(paths["metrics"]),
                "federated vs centralized (pooled; federated on held-out patients)": line}
    if heldout is not None:
        produced["federated pooled held-out AUC"] = heldout_line(heldout)
    return produced


def federated_line(federated: dict[str, Any], centralized: dict[str, Any]) -> str:
    """``pooled AUC early: federated a (lo–hi) vs centralized b (lo–hi); full: …`` from two metrics.json."""
    def auc(metrics: dict[str, Any], mode: str) -> str:
        block = metrics["pooled"][mode]
        return f"{fmt_num(block['auc'], 3)} ({fmt_ci(block['auc_ci'], 3)})"

    return "pooled AUC " + "; ".join(f"{mode}: federated {auc(federated, mode)} vs centralized "
                                     f"{auc(centralized, mode)}" for mode in ("early", "full"))
