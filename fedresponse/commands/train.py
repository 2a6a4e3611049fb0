"""``fedresponse train``: centralized (pooled) training and evaluation; federated training plugs in here too.

``fedresponse train --centralized --cohort DIR --out RUN`` pools every ``model_inputs.pt`` found under
DIR (one per site, written by the featurize stage; format in docs/models.md), evaluates the product model
(``model.kind``, default ``wide``: the fusion net's linear path), the fusion model, each branch alone and the
baselines (patient-level CV and leave-one-site-out), and writes RUN.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from fedresponse.featurize import pooled_cohort
from fedresponse.progress import progress_bars

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def _device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter("--device cuda was asked for, but no CUDA device is visible; use auto or cpu")
    return torch.device(name)


def oracle_auc(cohort: Path) -> float | None:
    path = cohort / "truth" / "oracle.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    value = data.get("early_oracle_auc", data.get("oracle_auc"))
    return None if value is None else float(value)


def print_metrics(console: Console, metrics: dict[str, object]) -> None:
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
            name = f"{model} (product)" if model == metrics.get("model") else model
            table.add_row(mode, name, f"{row['auc'] or float('nan'):.3f}", f"{ci[0]:.3f}–{ci[1]:.3f}",
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
    strict_rounds: bool = typer.Option(
        False, "--strict-rounds",
        help="Federated: refuse a run whose rounds exceed the sites' privacy budgets (default: shorten it).",
    ),
) -> None:
    """Train and evaluate the response models."""
    from evaluation.protocol import configs_dir
    from fl_client.centralized import run_centralized
    from models.config import load_model_config
    from models.exceptions import ModelConfigError, ModelInputError

    console = Console()
    if not centralized:  # federated: one simulated Flower node per site; --config is the federation config
        from fedresponse.federation import train_command

        raise typer.Exit(code=train_command(cohort, keys, out, config, strict_rounds=strict_rounds))
    try:
        settings = load_model_config(config or configs_dir() / "model.yaml")
        if epochs is not None:
            settings = settings.model_copy(update={"train": settings.train.model_copy(update={"epochs": epochs})})
        with progress_bars("featurize") as sink:
            pooled = pooled_cohort(cohort, device, seed, settings.evaluation.durable_benefit_day, progress=sink)
        metrics = run_centralized(pooled, out, settings, _device(device), seed, oracle_auc(cohort))
    except (ModelInputError, ModelConfigError, FileExistsError) as exc:
        console.print(f"[bold red]train failed:[/] {exc}")
        raise typer.Exit(code=1) from exc
    print_metrics(console, metrics)
    console.print(f"run written to [cyan]{out}[/]")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
