"""``fedresponse evaluate``: each site's patient-level report, then the central PI report from aggregates only.

- ``fedresponse evaluate RUN --site S01 --out DIR`` is a hospital's step: the site report (HTML + PDF) and the
  site's hand-off to the centre (``DIR/site_summary.json`` + ``DIR/site_aggregate.bin``);
- ``fedresponse evaluate --central HANDOFF --out EVAL [--keys KEYDIR]`` is the centre's step: the PI report
  built from the hand-off folder alone (``docs/report.md``);
- ``fedresponse evaluate RUN --out EVAL`` plays both on one machine: every site's step into ``EVAL_sites/<SITE>``
  (``--site-out``), then the centre's from the gathered hand-off (kept as ``EVAL/handoff``).

On a federated run (one holding ``RUN/pooled_aggregate.ckks``) this is also the key holder's step: with
``--keys KEYDIR`` it decrypts the sites' encrypted pooled held-out aggregate with ``KEYDIR/site`` (run it on
the PI's or a site's machine with a copy of RUN, never on the server) through
:func:`fedresponse.federation.pooled_summary`, which refreshes ``RUN/pooled_metrics.json`` and
``RUN/comparison.json``, and shows the held-out pooled AUC per mode in the report. Without ``--keys`` the
report says that the encrypted aggregate exists and needs the site key.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from evaluation.pooled import CkksCodec

log = logging.getLogger(__name__)


def evaluate(
    run: Path | None = typer.Argument(None, help="Run directory of `fedresponse train` (holds the sites' "
                                      "predictions); not needed with --central."),
    out: Path = typer.Option(..., "--out", help="Output folder (replaced atomically when complete)."),
    site: str | None = typer.Option(None, "--site", help="Run only this hospital's step: its patient-level site "
                                    "report and its hand-off (site_summary.json + site_aggregate.bin) into OUT."),
    central: Path | None = typer.Option(None, "--central", help="Run only the centre's step: the PI report from a "
                                        "hand-off folder (<SITE>/site_summary.json + site_aggregate.bin per site, "
                                        "optional privacy.json, run.json, run_summary.json); nothing else is read."),
    site_out: Path | None = typer.Option(None, "--site-out", help="Where the site reports go when one machine plays "
                                         "every site (default: OUT_sites beside OUT)."),
    store: list[Path] = typer.Option([], "--store", help="A site study store (its queries.parquet feeds the site "
                                     "report's query listing summary); repeat per site."),
    pdf: bool = typer.Option(True, "--pdf/--no-pdf", help="Print every report to PDF beside its HTML with headless "
                             "Chromium, plus a PNG of the first page (needs chromium and poppler-utils)."),
    cohort: Path | None = typer.Option(None, "--cohort", help="Cohort or site folder with reads.csv (reader "
                                       "agreement); a `fedresponse synth` cohort puts the synthetic banner on."),
    assessment: list[Path] = typer.Option([], "--assessment", help="Output folder of `fedresponse assess` for a "
                                          "site (visits.csv, subjects.csv, populations.csv); repeat per site."),
    epsilon_budget: float | None = typer.Option(None, "--epsilon-budget", help="Per-site ε budget of the run "
                                                "(the Flower run config's epsilon-budget), drawn on the privacy bars."),
    dhi: list[Path] = typer.Option([], "--dhi", help="A site's `radiomics dhi` table (one DHI per patient = mean "
                                   "over lesions and intervals); repeat per site."),
    keys: Path | None = typer.Option(None, "--keys", help="Key directory of `fedresponse keys init`: sites seal their "
                                     "aggregates under CKKS, the centre adds them with the public context and the key "
                                     "holder decrypts the sum; on a federated run also decrypt its pooled held-out "
                                     "aggregate with KEYDIR/site (refreshes RUN/pooled_metrics.json, "
                                     "comparison.json)."),
    centralized: Path | None = typer.Option(None, "--centralized", help="A centralized run of the same data, for "
                                            "comparison.json (default: the one RUN/comparison.json names)."),
) -> None:
    """Evaluate a finished run: each site's patient-level report, then the central PI report from aggregates only."""
    from evaluation.exceptions import EvaluationError
    from privacy.exceptions import PrivacyError

    console = Console()
    metrics_path: Path | None
    try:
        if central is not None:
            reports, metrics_path, heldout = _central_step(central, out, keys), out / "metrics.json", None
        else:
            if run is None:
                raise FileNotFoundError("pass the run directory RUN (or --central HANDOFF for the centre's step)")
            reports, metrics_path, heldout = _site_steps(run, out, site, site_out, store, cohort, assessment,
                                                         epsilon_budget, dhi, keys, centralized)
        if pdf:
            _print_reports(console, reports)
    except (EvaluationError, PrivacyError, FileNotFoundError) as exc:
        console.print(f"[bold red]evaluate failed:[/] {exc}")
        raise typer.Exit(code=2) from exc
    from fedresponse.headline import headline

    for report in reports:
        console.print(f"[green]report[/] {report}")
    if metrics_path is not None:
        console.print(headline(json.loads(metrics_path.read_text(encoding="utf-8"))))
    if heldout is not None:
        console.print(heldout_line(heldout))


def _central_step(handoff: Path, out: Path, keys: Path | None) -> list[Path]:
    from evaluation.central_report import write_central_evaluation

    return [write_central_evaluation(handoff, out, codec=_ckks_codec(keys) if keys is not None else None)["report"]]


def _site_steps(run: Path, out: Path, site: str | None, site_out: Path | None, stores: list[Path],
                cohort: Path | None, assessment: list[Path], epsilon_budget: float | None, dhi: list[Path],
                keys: Path | None, centralized: Path | None) -> tuple[list[Path], Path | None, dict[str, Any] | None]:
    """One site's step (``--site``), or every site's and then the centre's (one machine plays them all)."""
    from evaluation.evaluate import load_run
    from evaluation.exceptions import EvaluationInputError
    from evaluation.report import write_evaluation
    from evaluation.site_report import data_source, write_site_evaluation

    inputs = load_run(run, cohort, assessment, epsilon_budget, dhi)
    codec = _ckks_codec(keys) if keys is not None else None
    by_site = {p.name: p for p in stores}
    source = data_source(cohort)
    if site is not None:
        found = {d.site: d for d in inputs.sites}
        if site not in found:
            raise EvaluationInputError(f"--site {site!r} has no predictions under {run}; sites found: {sorted(found)}")
        paths = write_site_evaluation(found[site], inputs, out, codec, store=by_site.get(site), source=source)
        return [paths["report"]], None, None
    heldout = key_holder_evaluation(run, keys, centralized)
    written = write_evaluation(inputs, out, codec=codec, heldout=heldout, site_out=site_out, stores=by_site,
                               source=source)
    return [written["report"], *(p["report"] for p in written["sites"].values())], written["metrics"], heldout


def _print_reports(console: Console, reports: list[Path]) -> None:
    """PDF + first-page PNG beside each report (headless Chromium); a report with console errors fails."""
    from evaluation.report_browser import chromium_path, print_report

    if chromium_path() is None:
        console.print("[yellow]chromium not installed: no PDF (apt-get install chromium poppler-utils)[/]")
        return
    for report in reports:
        result = print_report(report)
        if result.console_errors or result.images_broken:
            raise FileNotFoundError(f"{report} rendered with errors: {result.console_errors}, "
                                    f"{result.images_broken} broken images")
        console.print(f"[green]pdf[/] {result.pdf} ({result.pdf_pages} pages)")


def key_holder_evaluation(run: Path, keys: Path | None, centralized: Path | None = None) -> dict[str, Any] | None:
    """The federation's pooled held-out evaluation as seen by this key holder; None for a run without one.

    With ``keys`` (or a plaintext-encoded aggregate) the aggregate is decrypted by
    :func:`fedresponse.federation.pooled_summary`, which (re)writes ``RUN/pooled_metrics.json`` and
    ``RUN/comparison.json``; ``centralized`` defaults to the centralized run ``RUN/comparison.json`` already
    names, so a refresh never drops the comparison. Without ``keys`` a CKKS aggregate stays sealed and the
    block says so.

    Returns
    -------
    dict or None
        ``status`` (``decrypted``/``encrypted``), ``source``, and when decrypted ``n_test``, ``sites``,
        ``evaluation``, ``written`` and per mode ``n``, ``auc``, ``auc_ci``, ``auc_binning_bound``, ``cutoff``,
        ``sensitivity``, ``specificity``; when encrypted a ``note`` saying what to do.
    """
    from fl_server.pooling import AGGREGATE_BIN, AGGREGATE_META

    index_path = run / AGGREGATE_META
    if not index_path.exists():
        return None
    from fedresponse.federation import pooled_summary

    try:
        encoding = json.loads(index_path.read_text(encoding="utf-8"))["aggregate"]["encoding"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FileNotFoundError(f"{index_path} is unreadable ({exc}); the run's final evaluation did not complete: "
                                "re-run training or check RUN/server_audit.jsonl") from exc
    source = str(run / AGGREGATE_BIN)
    if keys is None and encoding == "ckks":
        return {"status": "encrypted", "source": source,
                "note": f"The federation's pooled evaluation of the held-out patients exists, CKKS-encrypted, in "
                        f"{source}; only a key holder can read it: re-run with --keys KEYDIR (the site key, "
                        "KEYDIR/site/secret.ctx) on the PI's or a site's machine, never on the server."}
    earlier = _read_json(run / "comparison.json")
    pooled_summary(run, centralized or _named_centralized(earlier), keys)
    _keep_earlier_centralized(run / "comparison.json", earlier)
    metrics = json.loads((run / "pooled_metrics.json").read_text(encoding="utf-8"))
    keep = ("n", "auc", "auc_ci", "auc_binning_bound", "cutoff", "sensitivity", "specificity")
    block: dict[str, Any] = {"status": "decrypted", "source": source, "n_test": metrics.get("n_test"),
                             "sites": metrics.get("sites", []), "evaluation": metrics.get("evaluation"),
                             "written": [str(run / "pooled_metrics.json"), str(run / "comparison.json")]}
    block |= {mode: {k: metrics[mode].get(k) for k in keep} for mode in ("early", "full")}
    log.info("decrypted the pooled held-out aggregate of %s (%s held-out patients)", run, block["n_test"])
    return block


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _named_centralized(comparison: dict[str, Any]) -> Path | None:
    """The centralized run an earlier ``comparison.json`` compared against, when it still exists."""
    named = (comparison.get("centralized") or {}).get("run")
    return Path(named) if isinstance(named, str) and Path(named).is_dir() else None


def _keep_earlier_centralized(path: Path, earlier: dict[str, Any]) -> None:
    """A refresh without the centralized run at hand keeps the earlier comparison's centralized figures."""
    from evaluation.atomic import write_text_atomic

    current = _read_json(path)
    if current and current.get("centralized") is None and earlier.get("centralized"):
        kept = {**earlier["centralized"], "note": "kept from the earlier comparison.json (run not found now)"}
        text = json.dumps({**current, "centralized": kept}, indent=2, allow_nan=False)
        write_text_atomic(path, lambda stream: stream.write(text))


def heldout_line(block: dict[str, Any]) -> str:
    """One console line: the held-out pooled AUC per mode, or what is needed to read it."""
    if block.get("status") != "decrypted":
        return str(block.get("note"))

    def auc(mode: str) -> str:
        entry = block[mode]
        ci = entry.get("auc_ci") or [None, None]
        if entry.get("auc") is None or None in ci:
            return f"{mode} n/a"
        return f"{mode} {entry['auc']:.3f} ({ci[0]:.3f}–{ci[1]:.3f})"

    return f"federated pooled held-out AUC (n={block.get('n_test')}): {auc('early')}; {auc('full')}"


def _ckks_codec(keys: Path) -> CkksCodec:
    from evaluation.pooled import CkksCodec
    from privacy.ckks import PUBLIC_CONTEXT, SECRET_CONTEXT, KeyInfo, load_public_context, load_site_context

    info = KeyInfo.read(keys / SECRET_CONTEXT.parent / "keyinfo.json")
    return CkksCodec(load_site_context(keys / SECRET_CONTEXT), load_public_context(keys / PUBLIC_CONTEXT), info.params)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
