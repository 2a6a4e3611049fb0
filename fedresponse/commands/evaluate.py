"""``fedresponse evaluate RUN --out DIR``: metrics.json, a self-contained report.html and the figures.

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
    run: Path = typer.Argument(..., help="Run directory of `fedresponse train` (holds the sites' predictions)."),
    out: Path = typer.Option(..., "--out", help="Output folder (replaced atomically when complete)."),
    cohort: Path | None = typer.Option(None, "--cohort", help="Cohort or site folder with crf.csv/reads.csv "
                                       "(CONSORT flow and reader agreement)."),
    assessment: list[Path] = typer.Option([], "--assessment", help="Output folder of `fedresponse assess` for a "
                                          "site (visits.csv, subjects.csv); repeat per site."),
    epsilon_budget: float | None = typer.Option(None, "--epsilon-budget", help="Per-site ε budget of the run "
                                                "(the Flower run config's epsilon-budget), drawn on the privacy bars."),
    dhi: list[Path] = typer.Option([], "--dhi", help="A site's `radiomics dhi` table (one DHI per patient = mean "
                                   "over lesions and intervals); repeat per site."),
    keys: Path | None = typer.Option(None, "--keys", help="Key directory of `fedresponse keys init`: pool the site "
                                     "aggregates under CKKS (sites encrypt, the server adds with the public context) "
                                     "and, on a federated run, decrypt its pooled held-out aggregate with KEYDIR/site "
                                     "(refreshes RUN/pooled_metrics.json and RUN/comparison.json)."),
    centralized: Path | None = typer.Option(None, "--centralized", help="A centralized run of the same data, for "
                                            "comparison.json (default: the one RUN/comparison.json names)."),
) -> None:
    """Evaluate a finished run: per-site and pooled AUC, sensitivity, ORR, PFS, DHI; write the PI report."""
    from evaluation.evaluate import load_run
    from evaluation.exceptions import EvaluationError
    from evaluation.report import write_evaluation
    from privacy.exceptions import PrivacyError

    console = Console()
    try:
        inputs = load_run(run, cohort, assessment, epsilon_budget, dhi)
        codec = _ckks_codec(keys) if keys is not None else None
        heldout = key_holder_evaluation(run, keys, centralized)
        paths = write_evaluation(inputs, out, codec=codec, heldout=heldout)
    except (EvaluationError, PrivacyError, FileNotFoundError) as exc:
        console.print(f"[bold red]evaluate failed:[/] {exc}")
        raise typer.Exit(code=2) from exc
    from fedresponse.headline import headline

    console.print(f"[green]report[/] {paths['report']}")
    console.print(headline(json.loads(paths["metrics"].read_text(encoding="utf-8"))))
    if heldout is not None:
        console.print(heldout_line(heldout))


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
