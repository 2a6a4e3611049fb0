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


def simulate(run_config: dict[str, Any], sites: list[str]) -> list[Any]:
    """Run the federation in Flower's simulation runtime, one node per site; returns the round reports.

    ``run_config`` must name ``run-dir``, ``site-root`` and (CKKS modes) ``server-keys`` / ``site-keys``.
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
    run_simulation(server_app=server, client_app=make_client_app(resolve), num_supernodes=len(sites),
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
    from fedresponse.commands.train import featurize_store

    stores = sorted(p.parent for p in cohort.rglob("store.json") if (p.parent / "assessment").is_dir())
    paths = [featurize_store(store, seed=seed) for store in stores]
    return site_inputs(cohort) if paths else {}


def train_federated(cohort: Path, keys: Path, out: Path, config_path: Path | None = None,
                    overrides: dict[str, Any] | None = None, inputs: dict[str, Path] | None = None,
                    centralized: Path | None = None) -> list[Any]:
    """``fedresponse train`` (federated): simulate one node per site of ``cohort`` with the keys in ``keys``.

    Writes under ``out``: ``federation.resolved.yaml``, ``checkpoints/``, ``privacy_ledger.csv`` (from the
    sites' reported rows), ``rounds.jsonl``, ``server_audit.jsonl``, ``site_metrics.json``, and per site
    ``sites/<SITE>/`` (the site-local state a hospital would keep: its ledger, audit log, ``predictions.csv``),
    and, from the sites' pooled score histograms (:func:`pooled_summary`), ``cutoffs.json`` and
    ``comparison.json`` (against ``centralized``, a centralized run of the same stores, when given).
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
    (out / "federation.resolved.yaml").write_text(yaml.safe_dump({"federation": config, "sites": sites}))
    log.info("federated training over %d site(s) %s, mode %s, %s rounds", len(sites), sites, config["mode"],
             config["num-server-rounds"])
    reports = simulate(config, sites)
    if (out / "site_metrics.json").exists():
        pooled_summary(out, centralized)
    return reports


def _summed_histograms(site_metrics: dict[str, Any], split: str) -> tuple[Any, Any] | None:
    """Σ over sites of the early-mode score histograms the sites returned (None when a site sent none)."""
    import numpy as np

    keys = (f"early_hist_pos_{split}", f"early_hist_neg_{split}")
    if not site_metrics or any(k not in m for m in site_metrics.values() for k in keys):
        return None
    return tuple(np.sum([np.asarray(m[k], dtype=np.float64) for m in site_metrics.values()], axis=0) for k in keys)


def _centralized_early_fusion(centralized: Path | None) -> dict[str, Any] | None:
    path = centralized / "metrics.json" if centralized is not None else None
    if path is None or not path.exists():
        return None
    fusion = json.loads(path.read_text(encoding="utf-8"))["early"]["fusion"]
    return {"run": str(centralized), "model": "fusion", "mode": "early", "auc": fusion["auc"],
            "auc_ci": fusion["auc_ci"], "evaluation": "patient-level stratified CV, out-of-fold (metrics.json)"}


def pooled_summary(run: Path, centralized: Path | None = None) -> dict[str, Any] | None:
    """Pool the sites' early-mode histograms (``RUN/site_metrics.json``) into ``cutoffs.json`` and ``comparison.json``.

    Only site-level counts are read (never a site's ``predictions.csv``), through :mod:`evaluation.pooled`:
    the Youden cut-off on the training patients' pooled histograms, the binned AUC and its DeLong 95 % CI on
    the held-out test patients'. ``centralized`` (a ``fedresponse train`` centralized run of the same stores)
    adds its early ``fusion`` AUC and CI. Returns the comparison, or None when the task sent no histograms.
    """
    from evaluation.pooled import auc_binning_bound, binned_auc, binned_youden
    from evaluation.stats import normal_ci

    site_metrics = json.loads((run / "site_metrics.json").read_text(encoding="utf-8"))
    train, test = _summed_histograms(site_metrics, "train"), _summed_histograms(site_metrics, "test")
    if train is None or test is None:
        log.info("the sites returned no score histograms: no cutoffs.json / comparison.json in %s", run)
        return None
    # the federated task trains the early (T0+T1) model only: no full-mode cut-off to fix
    cutoffs = {"early": binned_youden(*train), "source": "Youden on the sites' training patients, pooled histograms"}
    (run / "cutoffs.json").write_text(json.dumps(cutoffs, indent=2), encoding="utf-8")
    auc, variance = binned_auc(*test)
    ci = list(normal_ci(auc, variance)) if auc == auc else None
    federated = {"run": str(run), "model": "fusion (federated)", "mode": "early", "auc": auc, "auc_ci": ci,
                 "n_test": int(test[0].sum() + test[1].sum()), "auc_binning_bound": auc_binning_bound(*test),
                 "cutoff": cutoffs["early"],
                 "evaluation": "held-out test patients of each site (seeded 75/25 split), pooled score histograms, "
                               "binned DeLong CI"}
    comparison = {"federated": federated, "centralized": _centralized_early_fusion(centralized)}
    (run / "comparison.json").write_text(json.dumps(comparison, indent=2), encoding="utf-8")
    return comparison


def comparison_line(comparison: dict[str, Any]) -> str:
    """``federated early AUC a (lo–hi) vs centralized b (lo–hi)`` for the console."""
    def fmt(block: dict[str, Any] | None) -> str:
        if block is None or block.get("auc") is None:
            return "n/a"
        ci = block.get("auc_ci")
        return f"{block['auc']:.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")

    return f"early AUC federated {fmt(comparison['federated'])} vs centralized {fmt(comparison['centralized'])}"


def train_command(cohort: Path, keys: Path | None, out: Path, config_path: Path | None) -> int:
    """The federated branch of ``fedresponse train``: run, then print the per-round table; returns an exit code."""
    from rich.console import Console
    from rich.table import Table

    from privacy.exceptions import PrivacyError

    console = Console()
    if keys is None:
        console.print("[red]federated training needs --keys KEYDIR (from `fedresponse keys init`).")
        return 2
    try:
        reports = train_federated(cohort, keys, out, config_path)
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
    if (out / "comparison.json").exists():
        console.print(comparison_line(json.loads((out / "comparison.json").read_text(encoding="utf-8"))))
    console.print(f"run written to [cyan]{out}[/] (privacy_ledger.csv, rounds.jsonl, checkpoints/, sites/, "
                  "cutoffs.json, comparison.json)")
    return 0


def demo_stage(ctx: Any) -> dict[str, str]:
    """Demo stage ``train(federated)``: a short simulated DP+HE run on the demo cohort's model inputs.

    Uses the featurize stage's ``model_inputs:<SITE>`` artifacts, else the ``model_inputs.pt`` files under
    ``ctx.out``, else featurizes the assessed site stores; writes ``ctx.out/ckks_keys`` and ``ctx.out/federated``
    and records ``federated_run`` in ``ctx.artifacts`` (not ``run:federated``: the federated task has no full
    mode, which ``fedresponse evaluate`` needs); prints the early AUC against ``run:centralized`` when recorded.
    """
    from privacy.ckks import write_key_files

    # the featurize stage's files when it ran; else every assessed site store featurizes itself in place
    inputs = {key.split(":", 1)[1]: Path(path) for key, path in ctx.artifacts.items()
              if key.startswith("model_inputs:")} or None
    keys, run = ctx.out / "ckks_keys", ctx.out / "federated"  # ctx.out/keys holds the PI's re-identification keys
    write_key_files(keys, overwrite=True)
    centralized = ctx.artifacts.get("run:centralized")
    reports = train_federated(ctx.out, keys, run, overrides={"num-server-rounds": 2, "local-epochs": 1,
                                                             "seed": int(ctx.seed)}, inputs=inputs,
                              centralized=Path(centralized) if centralized else None)
    # not "run:federated": `fedresponse evaluate` needs early and full scores per patient, the federated
    # task trains the early model only (docs/federation.md)
    ctx.artifacts["federated_run"] = run
    last = reports[-1] if reports else None
    summary = ", ".join(f"{r.site} ε={r.epsilon:.2f}" for r in last.ledger) if last else "no rounds"
    out = {"privacy ledger": str(run / "privacy_ledger.csv"), "rounds": str(run / "rounds.jsonl"),
           "site metrics": str(run / "site_metrics.json"), f"after round {last.round if last else 0}": summary}
    if (run / "comparison.json").exists():
        line = comparison_line(json.loads((run / "comparison.json").read_text(encoding="utf-8")))
        ctx.console.print(line)
        out.update({"comparison": str(run / "comparison.json"), "federated vs centralized": line})
    return out
