"""Demo stage ``evaluate``: each site's patient-level report, then the central PI report (aggregates only), each
as HTML + PDF (headless Chromium) with a PNG of its first page, for the demo's training run(s).

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

from fedresponse.headline import fmt_estimate, headline

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
    """Each site's report, then the central PI report (aggregates only); both printed to PDF; the headline."""
    from evaluation.evaluate import load_run

    assessments = [ctx.artifacts[k] for k in sorted(ctx.artifacts) if k.startswith("assessment:")]
    dhi = [ctx.artifacts[k] for k in sorted(ctx.artifacts) if k.startswith("dhi:")]
    dhi += sorted((ctx.out / "radiomics").glob("*/dhi.csv")) if not dhi else []
    dhi = [p for p in dhi if p.exists()]
    cohort = ctx.cohort if ctx.cohort.is_dir() else None
    evaluated = find_run(ctx.artifacts)
    inputs = load_run(evaluated, cohort, assessments, dhi_tables=dhi)
    codec = None
    if "keys" in ctx.artifacts:
        from fedresponse.commands.evaluate import _ckks_codec

        codec = _ckks_codec(ctx.artifacts["keys"])
    out = ctx.out / "evaluation"
    produced, metrics = _write_and_print(ctx, inputs, out, codec, None, "")
    ctx.artifacts["evaluation"] = out
    produced["headline"] = headline(metrics)
    ctx.console.print(produced["headline"])
    federated = ctx.artifacts.get("run:federated")
    if federated is not None and Path(federated) != Path(evaluated):
        produced.update(_evaluate_federated(ctx, Path(federated), metrics, assessments, dhi))
    return produced


def _write_and_print(ctx: DemoContext, inputs: Any, out: Path, codec: Any, heldout: dict[str, Any] | None,
                     label: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Site reports into ``<out>_sites/<SITE>``, the central report into ``out``; each printed (PDF, first page)."""
    from evaluation.report import write_evaluation
    from evaluation.report_browser import chromium_path, print_report
    from evaluation.site_report import data_source

    stores = {k.split(":", 1)[1]: Path(v) for k, v in ctx.artifacts.items() if k.startswith("store:")}
    paths = write_evaluation(inputs, out, codec=codec, heldout=heldout, stores=stores,
                             source=data_source(ctx.cohort if ctx.cohort.is_dir() else None))
    prefix = f"{label} " if label else ""
    produced = {f"{prefix}PI report (central, aggregates only)": str(paths["report"]),
                f"{prefix}metrics.json": str(paths["metrics"]), f"{prefix}figures (PNG+SVG)": str(paths["figures"])}
    if not label:  # the keys earlier stages and tests read
        produced["PI report"], produced["metrics.json"] = str(paths["report"]), str(paths["metrics"])
    reports = {"central": paths["report"], **{site: p["report"] for site, p in paths["sites"].items()}}
    for name, report in reports.items():
        if name != "central":
            produced[f"{prefix}site report {name} (patient-level, stays at {name})"] = str(report)
        if chromium_path() is None:
            continue
        shot = print_report(report)
        if shot.console_errors or shot.images_broken:
            raise RuntimeError(f"{report} rendered with errors: {shot.console_errors}, {shot.images_broken} broken "
                               "images")
        produced[f"{prefix}{name} report PDF ({shot.pdf_pages} pages)"] = str(shot.pdf)
        produced[f"{prefix}{name} report first page"] = str(shot.first_page)
        if name == "central" and not label:
            produced["report screenshot"] = str(shot.screenshot)
    if chromium_path() is None:
        ctx.console.print("[yellow]chromium not installed: no PDFs (apt-get install chromium poppler-utils)[/]")
    return produced, json.loads(paths["metrics"].read_text(encoding="utf-8"))


def _evaluate_federated(ctx: DemoContext, run: Path, centralized: dict[str, Any], assessments: list[Path],
                        dhi: list[Path]) -> dict[str, str]:
    """``fedresponse evaluate`` of the federated run: site reports and the central report (``evaluation_federated``)."""
    from evaluation.evaluate import load_run
    from fedresponse.commands.evaluate import _ckks_codec, heldout_line, key_holder_evaluation

    keys = ctx.artifacts.get("ckks_keys")
    inputs = load_run(run, ctx.cohort if ctx.cohort.is_dir() else None, assessments, dhi_tables=dhi)
    # the demo plays the PI (key holder): `fedresponse evaluate RUN --keys KEYDIR` decrypts the pooled aggregate
    heldout = key_holder_evaluation(run, Path(keys) if keys else None)
    produced, metrics = _write_and_print(ctx, inputs, ctx.out / "evaluation_federated",
                                         _ckks_codec(keys) if keys else None, heldout, "federated")
    line = federated_line(metrics, centralized)
    ctx.console.print(line)
    produced["federated vs centralized (pooled; federated on held-out patients)"] = line
    if heldout is not None:
        produced["federated pooled held-out AUC"] = heldout_line(heldout)
    return produced


def federated_line(federated: dict[str, Any], centralized: dict[str, Any]) -> str:
    """``pooled AUC early: federated a (lo–hi) vs centralized b (lo–hi); full: …`` from two metrics.json."""
    def auc(metrics: dict[str, Any], mode: str) -> str:
        return fmt_estimate(metrics["pooled"][mode], "auc", 3)

    return "pooled AUC " + "; ".join(f"{mode}: federated {auc(federated, mode)} vs centralized "
                                     f"{auc(centralized, mode)}" for mode in ("early", "full"))
