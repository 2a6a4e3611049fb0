"""``fedresponse train``: centralized (pooled) training and evaluation; federated training plugs in here too.

``fedresponse train --centralized --cohort DIR --out RUN`` pools every ``model_inputs.pt`` found under
DIR (one per site, written by the featurize stage; format in docs/models.md), evaluates the fusion
model, each branch alone and the baselines (patient-level CV and leave-one-site-out), and writes RUN.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import torch

    from fedresponse.demo import DemoContext
    from fl_client.centralized import PooledCohort
    from fl_client.train import SiteInputs

log = logging.getLogger(__name__)


def _device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter("--device cuda was asked for, but no CUDA device is visible; use auto or cpu")
    return torch.device(name)


def _oracle_auc(cohort: Path) -> float | None:
    path = cohort / "truth" / "oracle.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    value = data.get("early_oracle_auc", data.get("oracle_auc"))
    return None if value is None else float(value)


def featurize_store(
    store_dir: Path, out: Path | None = None, device: str = "auto", seed: int = 0, graphs_file: Path | None = None,
    dhi_file: Path | None = None, durable_day: int = 183,
) -> Path:
    """Write a site store's ``model_inputs.pt`` (default ``STORE/model_inputs.pt``).

    Uses the store's assessment (``STORE/assessment/reference.csv``, ``visits.csv``; `fedresponse assess`)
    and the sub-region graphs and DHI table (default ``STORE/radiomics/``; built here when absent).
    """
    import pandas as pd

    from fedresponse.commands.radiomics_graphs import build_site_graphs, site_dhi
    from fl_client.featurize import site_inputs
    from fl_client.store import SiteStore
    from fl_client.train import save_site_inputs
    from models.exceptions import ModelInputError
    from radiomics.graphs import load_graphs

    assessment = store_dir / "assessment"
    if not (assessment / "reference.csv").exists():
        raise ModelInputError(
            f"{store_dir} has no assessment/reference.csv; run `fedresponse assess {store_dir}` first"
        )
    graphs_file = graphs_file or store_dir / "radiomics" / "subregion_graphs.pt"
    dhi_file = dhi_file or store_dir / "radiomics" / "dhi.csv"
    if not graphs_file.exists():
        build_site_graphs(store_dir, graphs_file, device)
    if not dhi_file.exists():
        site_dhi(store_dir, dhi_file, seed=seed, device=device)
    read = {"keep_default_na": False, "na_values": [""]}
    store = SiteStore(store_dir)
    inputs = site_inputs(store.site, load_graphs(graphs_file), store.crf(), pd.read_csv(assessment / "reference.csv",
                         **read), pd.read_csv(assessment / "visits.csv", **read), pd.read_csv(dhi_file), durable_day)
    out = out or store_dir / "model_inputs.pt"
    save_site_inputs(inputs, out)
    log.info("site %s: model inputs of %d patients written to %s", store.site, len(inputs.records), out)
    return out


def _pooled(cohort: Path, device: str = "auto", seed: int = 0, durable_day: int = 183) -> PooledCohort:
    from fl_client.centralized import PooledCohort
    from models.exceptions import ModelInputError

    paths = sorted(cohort.rglob("model_inputs.pt"))
    if not paths:  # featurize every assessed site store found under the folder
        stores = sorted(p.parent for p in cohort.rglob("store.json") if (p.parent / "assessment").is_dir())
        paths = [featurize_store(s, device=device, seed=seed, durable_day=durable_day) for s in stores]
    if not paths:
        raise ModelInputError(
            f"no model_inputs.pt and no assessed site store under {cohort}; run ingest and assess for each site "
            "first, see docs/models.md"
        )
    sites = [_current(p, device, seed, durable_day) for p in paths]
    first = sites[0]
    for other in sites[1:]:
        if (other.global_names, other.clinical_names) != (first.global_names, first.clinical_names):
            raise ModelInputError(
                f"site {other.site} has different feature columns than site {first.site}; featurize every site "
                "with the same radiomics configuration"
            )
    records = [r for site in sites for r in site.records]
    return PooledCohort(records, first.global_names, first.global_groups, first.clinical_names)


def _current(path: Path, device: str, seed: int, durable_day: int) -> SiteInputs:
    """Load ``path``; a file written by an older featurizer is re-featurized when it sits in its site store
    (graphs and DHI are reused, so this is cheap) and refused otherwise."""
    from fl_client.featurize import stale_columns
    from fl_client.train import load_site_inputs
    from models.exceptions import ModelInputError

    inputs = load_site_inputs(path)
    reason = stale_columns(inputs)
    if reason is None:
        return inputs
    if (path.parent / "store.json").exists() and (path.parent / "assessment").is_dir():
        log.warning("%s; re-featurizing %s", reason, path.parent)
        return load_site_inputs(featurize_store(path.parent, out=path, device=device, seed=seed,
                                                durable_day=durable_day))
    raise ModelInputError(f"{reason}; re-run the featurize step (fedresponse.commands.train.featurize_store) "
                          f"for {path}")


def _print_metrics(console: Console, metrics: dict[str, object]) -> None:
    table = Table(title="Held-out AUC (patient-level CV)")
    for column in ("mode", "model", "AUC", "95 % CI", "sens", "spec", "C-index", "n"):
        table.add_column(column)
    for mode in ("early", "full"):
        block = metrics.get(mode)
        if not isinstance(block, dict):
            continue
        for model, row in block.items():
            if not isinstance(row, dict):
                continue
            ci = row.get("auc_ci") or [float("nan")] * 2
            c_index = row.get("c_index")
            table.add_row(mode, model, f"{row['auc'] or float('nan'):.3f}", f"{ci[0]:.3f}–{ci[1]:.3f}",
                          f"{row['sensitivity']:.2f}", f"{row['specificity']:.2f}",
                          "" if c_index is None else f"{c_index:.3f}", str(row["n"]))
    console.print(table)
    if metrics.get("oracle_auc") is not None:
        console.print(f"generator oracle AUC (early): {metrics['oracle_auc']:.3f}")


def train(
    cohort: Path = typer.Option(..., "--cohort", help="Cohort or folder of site stores holding model_inputs.pt."),
    out: Path = typer.Option(..., "--out", help="Run directory to create (must not exist)."),
    centralized: bool = typer.Option(False, "--centralized", help="Pool all sites' data (the ceiling baseline)."),
    config: Path | None = typer.Option(
        None, "--config", help="--centralized: model presets (configs/model.yaml); federated: federation settings."
    ),
    seed: int = typer.Option(7, "--seed", help="Seed of every random draw (folds, init, batches)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    epochs: int | None = typer.Option(None, "--epochs", help="Override train.epochs of the config."),
    keys: Path | None = typer.Option(None, "--keys", help="KEYDIR of `fedresponse keys init` (federated training)."),
) -> None:
    """Train and evaluate the response models."""
    from evaluation.protocol import configs_dir
    from fl_client.centralized import run_centralized
    from models.config import load_model_config
    from models.exceptions import ModelConfigError, ModelInputError

    console = Console()
    if not centralized:  # federated: one simulated Flower node per site; --config is the federation config
        from fedresponse.federation import train_command

        raise typer.Exit(code=train_command(cohort, keys, out, config))
    try:
        settings = load_model_config(config or configs_dir() / "model.yaml")
        if epochs is not None:
            settings = settings.model_copy(update={"train": settings.train.model_copy(update={"epochs": epochs})})
        pooled = _pooled(cohort, device, seed, settings.evaluation.durable_benefit_day)
        metrics = run_centralized(pooled, out, settings, _device(device), seed, _oracle_auc(cohort))
    except (ModelInputError, ModelConfigError, FileExistsError) as exc:
        console.print(f"[bold red]train failed:[/] {exc}")
        raise typer.Exit(code=1) from exc
    _print_metrics(console, metrics)
    console.print(f"run written to [cyan]{out}[/]")


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def demo_stage(ctx: DemoContext) -> dict[str, str]:
    """Demo stage ``train (centralized)``: featurize every assessed site, then the pooled evaluation.

    Reuses the ``radiomics`` stage's graphs and DHI tables when it ran (artifacts ``graphs:`` / ``dhi:``),
    else builds them at the same place. Artifacts: ``model_inputs:<SITE>``, ``run:centralized``.
    """
    import torch

    from evaluation.protocol import configs_dir
    from fl_client.centralized import run_centralized
    from models.config import load_model_config

    settings = load_model_config(configs_dir() / "model.yaml")
    settings = settings.model_copy(update={
        "train": settings.train.model_copy(update={"epochs": 15}),
        "evaluation": settings.evaluation.model_copy(update={"cv_folds": 3}),
    })
    produced: dict[str, str] = {}
    for key, store in sorted(ctx.artifacts.items()):
        site = key.split(":", 1)[1]
        if not key.startswith("store:") or f"assessment:{site}" not in ctx.artifacts:
            continue
        radiomics_dir = ctx.out / "radiomics" / site
        path = featurize_store(
            store, out=ctx.out / "model_inputs" / site / "model_inputs.pt", device="auto", seed=ctx.seed,
            graphs_file=ctx.artifacts.get(f"graphs:{site}", radiomics_dir / "subregion_graphs.pt"),
            dhi_file=ctx.artifacts.get(f"dhi:{site}", radiomics_dir / "dhi.csv"),
            durable_day=settings.evaluation.durable_benefit_day,
        )
        ctx.artifacts[f"model_inputs:{site}"] = path
        produced[f"model inputs {site}"] = str(path)
    run = ctx.out / "runs" / "centralized"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    metrics = run_centralized(_pooled(ctx.out / "model_inputs"), run, settings, device, ctx.seed,
                              _oracle_auc(ctx.cohort))
    _print_metrics(ctx.console, metrics)
    ctx.artifacts["run:centralized"] = run
    produced["centralized metrics"] = str(run / "metrics.json")
    produced["attributions (S01, early)"] = str(run / "sites" / "S01" / "attributions_early.png")
    return produced
