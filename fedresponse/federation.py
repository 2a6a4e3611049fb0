"""Federated training entry points that need both sides: simulation (one Flower node per site).

``fl_server`` never imports ``fl_client``; only this entry-point module (like the CLI) sees both.
:func:`simulate` runs the ServerApp and one ClientApp per site in Flower's simulation runtime;
:func:`train_federated` is what ``fedresponse train --cohort DIR --keys KEYDIR --out RUN`` calls.
The run configuration is data: ``configs/federation.yaml`` (kebab-case keys, the same keys as
``[tool.flwr.app.config]``), overridden by ``--config FILE``, and saved resolved as
``RUN/federation.resolved.yaml``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

CONFIG_NAME = "federation.yaml"


def configs_dir() -> Path:
    """The repository's (or installed package's) ``configs`` folder."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "configs", here / "configs"):
        if (candidate / CONFIG_NAME).exists():
            return candidate
    raise FileNotFoundError(f"cannot find configs/{CONFIG_NAME} next to {here}; reinstall the package.")


def load_federation_config(path: Path | None = None) -> dict[str, Any]:
    """Defaults from ``configs/federation.yaml`` overridden by ``path`` (both flat, kebab-case)."""
    config: dict[str, Any] = yaml.safe_load((configs_dir() / CONFIG_NAME).read_text(encoding="utf-8"))["federation"]
    if path is not None:
        override = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("federation", {})
        unknown = sorted(set(override) - set(config))
        if unknown:
            raise ValueError(f"{path}: unknown federation setting(s) {unknown}; known: {sorted(config)}.")
        config.update(override)
    return config


def simulate(run_config: dict[str, Any], sites: list[str], client_mods: list[Any] | None = None) -> list[Any]:
    """Run the federation in Flower's simulation runtime, one node per site; returns the round reports.

    ``run_config`` must name ``run-dir``, ``site-root`` and (CKKS modes) ``server-keys`` / ``site-keys``;
    ``client_mods`` wrap every site's ClientApp (Flower mods, e.g. a test's fault injection).
    """
    from flwr.app import Context
    from flwr.simulation import run_simulation

    from fl_client.app import make_client_app, node_spec, settings_from_run_config
    from fl_server.app import ServerSettings, make_server_app, serve

    config = {**run_config, "sites": ",".join(sites), "min-nodes": len(sites)}
    settings = ServerSettings.from_run_config(config)
    reports: list[Any] = []
    server = make_server_app(settings)

    @server.main()
    def _main(grid: Any, context: Context) -> None:
        reports.extend(serve(grid, settings))

    def resolve(context: Context) -> tuple[Any, Any, str]:
        return (node_spec(dict(context.node_config), config), settings_from_run_config(config), str(config["task"]))

    cpus = max(1, min(len(sites), os.cpu_count() or 1))
    backend: dict[str, Any] = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": cpus, "include_dashboard": False, "logging_level": "warning"}}
    run_simulation(server_app=server, client_app=make_client_app(resolve, client_mods), num_supernodes=len(sites),
                   backend_config=backend)
    return reports


def cohort_sites(cohort: Path) -> list[str]:
    """Site ids of a synthetic cohort (``cohort.json``) or, failing that, its ``S*`` folders."""
    meta = cohort / "cohort.json"
    if meta.exists():
        data = json.loads(meta.read_text(encoding="utf-8"))
        for key in ("site_ids", "sites"):
            if isinstance(data.get(key), list) and data[key]:
                return [str(s if isinstance(s, str) else s.get("site_id", s.get("id"))) for s in data[key]]
    sites = sorted(p.name for p in cohort.iterdir() if p.is_dir() and p.name.startswith("S"))
    if not sites:
        raise FileNotFoundError(f"{cohort} holds no cohort.json and no S01/S02/... site folders; pass a cohort DIR.")
    return sites


def site_inputs(cohort: Path) -> dict[str, Path]:
    """Site id → ``model_inputs.pt`` for every model-input file under ``cohort`` (featurize stage output)."""
    import torch

    found: dict[str, Path] = {}
    for path in sorted(cohort.rglob("model_inputs.pt")):
        payload = torch.load(path, weights_only=True)
        site = str(payload.get("site")) if isinstance(payload, dict) else ""
        if site in found:
            raise ValueError(f"two model-input files for site {site}: {found[site]} and {path}; keep one per site.")
        if site:
            found[site] = path
    return found


def _featurize_stores(cohort: Path, seed: int) -> dict[str, Path]:
    """Each assessed site store under ``cohort`` prepares its own ``model_inputs.pt`` (inside the store)."""
    from fedresponse.featurize import featurize_stores
    from fedresponse.progress import progress_bars

    with progress_bars("featurize") as sink:
        paths = featurize_stores(cohort, seed=seed, progress=sink)
    return site_inputs(cohort) if paths else {}


def train_federated(cohort: Path, keys: Path, out: Path, config_path: Path | None = None,
                    overrides: dict[str, Any] | None = None, inputs: dict[str, Path] | None = None,
                    centralized: Path | None = None) -> list[Any]:
    """``fedresponse train`` (federated): simulate one node per site of ``cohort`` with the keys in ``keys``.

    Writes under ``out``: ``federation.resolved.yaml``, ``checkpoints/``, ``privacy_ledger.csv`` (from the
    sites' reported rows), ``rounds.jsonl``, ``server_audit.jsonl``, ``site_metrics.json``, and per site
    ``sites/<SITE>/`` (the site-local state a hospital would keep: its ledger, audit log, ``predictions.csv``),
    the server's ``cutoffs.json`` and encrypted ``pooled_aggregate.ckks``/``.json``, and — decrypted with
    ``keys/site`` by this process acting as the key holder (:func:`pooled_summary`) — ``pooled_metrics.json``
    and ``comparison.json`` (against ``centralized``, a centralized run of the same stores, when given).
    """
    config = load_federation_config(config_path)
    config.update(overrides or {})
    out.mkdir(parents=True, exist_ok=True)
    config.update({"run-dir": str(out), "site-root": str(out / "sites"), "server-keys": str(keys / "server"),
                   "site-keys": str(keys / "site"), "site-input-root": str(config.get("site-input-root") or cohort)})
    if inputs is None:
        inputs = site_inputs(cohort) if config.get("task") == "fl_client.federated:fusion_task" else {}
    if not inputs and config.get("task") == "fl_client.federated:fusion_task":
        inputs = _featurize_stores(cohort, int(config.get("seed", 7)))
    if inputs:
        config["site-inputs"] = ",".join(f"{site}={path}" for site, path in sorted(inputs.items()))
    elif config.get("task") == "fl_client.federated:fusion_task":
        raise FileNotFoundError(f"no model_inputs.pt under {cohort}; featurize each site first "
                                "(ingest → assess → radiomics), see docs/models.md.")
    sites = sorted(inputs) or cohort_sites(cohort)
    resolved = {"federation": config, "sites": sites, "model": product_kind()}  # model: what the sites train
    (out / "federation.resolved.yaml").write_text(yaml.safe_dump(resolved))
    log.info("federated training over %d site(s) %s, mode %s, %s rounds", len(sites), sites, config["mode"],
             config["num-server-rounds"])
    reports = simulate(config, sites)
    pooled_summary(out, centralized, keys)
    return reports


def product_kind() -> str:
    """The product model (``model.kind`` of ``configs/model.yaml``): what the federated task trains."""
    from evaluation.protocol import configs_dir
    from models.config import load_model_config

    return load_model_config(configs_dir() / "model.yaml").model.kind


def run_kind(run: Path) -> str:
    """The product model a federated run trained (``model`` of its ``federation.resolved.yaml``; the
    configured ``model.kind`` for a run that does not record it)."""
    resolved = run / "federation.resolved.yaml"
    recorded = (yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}).get("model") if resolved.exists() else None
    return str(recorded) if recorded else product_kind()


def _centralized_product(centralized: Path | None) -> dict[str, Any] | None:
    """The centralized run's product-model AUC and DeLong CI per mode, against the same reference as the
    federated one.

    Both sides judge each mode against its own task's label, the predictions' ``LABEL`` of that mode's rows
    (early: response; full: durable benefit; the :mod:`evaluation.metrics` convention), from the centralized
    run's out-of-fold ``predictions.csv`` (a centralized run holds the pooled data by definition; its rows are
    its product model's, ``model`` of its ``metrics.json`` — ``fusion`` for runs written before ``model.kind``
    existed). Its training ``metrics.json`` figures are kept under ``metrics_json``.
    """
    if centralized is None or not centralized.is_dir():
        return None
    import pandas as pd

    from evaluation.metrics import read_predictions
    from evaluation.stats import delong_auc_ci

    path = centralized / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    kind = metrics.get("model", "fusion")
    out: dict[str, Any] = {"run": str(centralized), "model": kind,
                           "evaluation": "patient-level stratified CV, out-of-fold, all patients; reference LABEL"}
    paths = sorted(centralized.rglob("predictions.csv"))
    rows = pd.concat([read_predictions(p) for p in paths]) if paths else None
    for mode in ("early", "full"):
        part = rows[rows["MODE"] == mode] if rows is not None else None
        # a patient outside the mode's task population (e.g. no T2 scan: no full-mode label) has no LABEL
        part = part[part["LABEL"].notna()] if part is not None else None
        if part is not None and part["LABEL"].nunique() == 2:
            auc, ci = delong_auc_ci(part["LABEL"].to_numpy(int), part["SCORE"].to_numpy(float))
            out[mode] = {"auc": auc, "auc_ci": list(ci), "n": len(part)}
    if metrics:
        blocks = {mode: metrics[mode][kind] for mode in ("early", "full") if kind in metrics.get(mode, {})}
        out["metrics_json"] = {mode: {"auc": block["auc"], "auc_ci": block["auc_ci"],
                                      "reference": "the mode's own label (full: durable benefit)"}
                               for mode, block in blocks.items()}
    return out


def _site_context(keys: Path | None, key_id: str) -> Any:
    """The key holder's secret context (``KEYDIR/site``), checked against the aggregate's ceremony."""
    from privacy.ckks import SECRET_CONTEXT, KeyInfo, load_site_context
    from privacy.exceptions import ContextMismatchError

    if keys is None:
        raise FileNotFoundError("the pooled aggregate is CKKS-encrypted: pass the key holder's KEYDIR (keys=...).")
    info = KeyInfo.read(keys / SECRET_CONTEXT.parent / "keyinfo.json")
    if info.key_id != key_id:
        raise ContextMismatchError(f"the pooled aggregate was made under key {key_id[:12]}…, {keys} holds "
                                   f"{info.key_id[:12]}…; use the run's KEYDIR.")
    return load_site_context(keys / SECRET_CONTEXT)


def pooled_summary(run: Path, centralized: Path | None = None, keys: Path | None = None) -> dict[str, Any] | None:
    """As the key holder: decrypt ``RUN/pooled_aggregate.ckks`` into ``pooled_metrics.json`` and ``comparison.json``.

    The server only summed the sites' encrypted held-out aggregates (``fl_server.pooling``); this is the
    PI / a site holding ``KEYDIR/site/secret.ctx`` (in simulation this process plays that role; the server
    never can). :func:`evaluation.pooled.pooled_metrics` turns the sum into AUC (binned, DeLong CI),
    sensitivity/specificity at the sites' agreed cut-offs, ORR, PFS — per mode, on the sites' held-out test
    patients. ``centralized`` (a centralized run of the same stores) adds its product model's AUC and CI per
    mode against the same reference label (:func:`_centralized_product`).
    Returns the comparison, or None when the run has no pooled aggregate (a task without a test split).
    """
    from evaluation.atomic import write_text_atomic
    from evaluation.pooled import AggregateLayout, PlainCodec, pool, pooled_metrics
    from evaluation.report_html import json_safe
    from fl_server.pooling import AGGREGATE_META, load_pooled_aggregate
    from privacy.update import decode_vector

    if not (run / AGGREGATE_META).exists():
        log.info("no %s in %s: the sites pooled no evaluation (no comparison.json)", AGGREGATE_META, run)
        return None
    summed, cutoffs = load_pooled_aggregate(run)
    layout = AggregateLayout()
    context = _site_context(keys, summed.key_id) if summed.encoding == "ckks" else None
    vector = decode_vector(summed.chunks, summed.encoding, context, layout.size)
    # pool() over one vector with the identity codec only rounds the count blocks (CKKS noise ~1e-7)
    metrics = pooled_metrics(pool([vector], PlainCodec(), layout), cutoffs, layout)
    metrics.update(n_test=summed.total_examples, sites=summed.contributors,
                   evaluation="held-out test patients of each site (seeded 75/25 split), encrypted site aggregates")
    write_text_atomic(run / "pooled_metrics.json",
                      lambda stream: json.dump(json_safe(metrics), stream, indent=1, allow_nan=False))
    federated: dict[str, Any] = {"run": str(run), "model": f"{run_kind(run)} (federated)",
                                 "n_test": summed.total_examples,
                                 "evaluation": metrics["evaluation"] + ", binned DeLong CI; reference LABEL"}
    for mode in ("early", "full"):
        block = metrics[mode]
        federated[mode] = {"auc": block["auc"], "auc_ci": block["auc_ci"], "cutoff": block["cutoff"],
                           "auc_binning_bound": block["auc_binning_bound"]}
    comparison = json_safe({"federated": federated, "centralized": _centralized_product(centralized)})
    write_text_atomic(run / "comparison.json", lambda stream: json.dump(comparison, stream, indent=2, allow_nan=False))
    return dict(comparison)


def comparison_line(comparison: dict[str, Any]) -> str:
    """``AUC early federated a (lo–hi) vs centralized b (lo–hi); full …`` for the console."""
    def fmt(block: dict[str, Any] | None, mode: str) -> str:
        entry = (block or {}).get(mode)
        if not isinstance(entry, dict) or entry.get("auc") is None:
            return "n/a"
        ci = entry.get("auc_ci")
        return f"{entry['auc']:.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci and None not in ci else "")

    return "; ".join(f"{mode} AUC federated {fmt(comparison['federated'], mode)} vs centralized "
                     f"{fmt(comparison['centralized'], mode)}" for mode in ("early", "full"))


def budget_phrase(summary: dict[str, Any]) -> str:
    """What the plan in ``RUN/run_summary.json`` says of the privacy budgets. The plan caps each site's affordable
    count at the rounds asked for, so the per-site counts are shown only when the plan shortened the run."""
    if not summary["affordable_rounds"]:
        return "no privacy limit in this mode"
    if summary["rounds_planned"] >= summary["rounds_configured"]:
        return f"every site's privacy budget pays for the {summary['rounds_configured']} configured round(s)"
    return f"affordable rounds per site: {summary['affordable_rounds']}"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """What the ``train`` console says of ``RUN/run_summary.json``: how the run stopped, the rounds each site could
    afford, and every site the handshake excluded with its reason (also in the summary, audit log and report)."""
    from rich.markup import escape

    from fl_server.handshake import Exclusion

    lines = [f"{summary['stop']} ({budget_phrase(summary)})"]
    excluded = summary.get("excluded_sites") or []
    lines += [f"[yellow]excluded at the handshake:[/] {escape(str(Exclusion(**e)))}" for e in excluded]
    return lines


def train_command(cohort: Path, keys: Path | None, out: Path, config_path: Path | None,
                  strict_rounds: bool = False) -> int:
    """The federated branch of ``fedresponse train``: run, then print the per-round table; returns an exit code.

    ``strict_rounds`` refuses a run whose configured rounds the sites' budgets cannot pay for (exit 1, naming
    the affordable number) instead of shortening it (:mod:`fl_server.planning`).
    """
    from rich.console import Console
    from rich.table import Table

    from privacy.exceptions import PrivacyError

    console = Console()
    if keys is None:
        console.print("[red]federated training needs --keys KEYDIR (from `fedresponse keys init`).")
        return 2
    try:
        reports = train_federated(cohort, keys, out, config_path,
                                  overrides={"strict-rounds": True} if strict_rounds else None)
    except (FileNotFoundError, ValueError, PrivacyError, RuntimeError) as exc:
        console.print(f"[bold red]federated training failed:[/] {exc}")
        return 1
    table = Table(title="Federated rounds (DP-SGD at each site, CKKS aggregation)")
    for column in ("round", "accepted", "rejected", "no reply", "kB in", "s", "epsilon per site"):
        table.add_column(column)
    for r in reports:
        eps = ", ".join(f"{row.site} {row.epsilon:.2f}" for row in r.ledger)
        table.add_row(str(r.round), ",".join(r.accepted), str(len(r.rejected) + len(r.errors)), str(r.missing),
                      f"{r.bytes_in / 1024:.0f}", f"{r.seconds:.1f}", eps)
    console.print(table)
    if (out / "run_summary.json").exists():
        summary = json.loads((out / "run_summary.json").read_text(encoding="utf-8"))
        for line in summary_lines(summary):
            console.print(line)
    if (out / "comparison.json").exists():
        console.print(comparison_line(json.loads((out / "comparison.json").read_text(encoding="utf-8"))))
    console.print(f"run written to [cyan]{out}[/] (run_summary.json, privacy_ledger.csv, rounds.jsonl, checkpoints/, "
                  "sites/, "
                  "cutoffs.json, pooled_aggregate.ckks, pooled_metrics.json, comparison.json)")
    return 0
