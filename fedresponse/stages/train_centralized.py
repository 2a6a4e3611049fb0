"""Demo stage ``train (centralized)``: featurize every assessed site store, then pooled training and evaluation

(what ``fedresponse train --centralized --cohort DIR --out RUN`` runs, with a short schedule: 15 epochs, 3 folds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedresponse.demo import DemoContext


def run(ctx: DemoContext) -> dict[str, str]:
    """Featurize every assessed site, then the pooled evaluation.

    Reuses the ``radiomics`` stage's graphs and DHI tables when it ran (artifacts ``graphs:`` / ``dhi:``),
    else builds them at the same place. Artifacts: ``model_inputs:<SITE>``, ``run:centralized``.
    """
    import torch

    from evaluation.protocol import configs_dir
    from fedresponse.commands.train import oracle_auc, print_metrics
    from fedresponse.featurize import featurize_store, pooled_cohort
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
    metrics = run_centralized(pooled_cohort(ctx.out / "model_inputs"), run, settings, device, ctx.seed,
                              oracle_auc(ctx.cohort))
    print_metrics(ctx.console, metrics)
    ctx.artifacts["run:centralized"] = run
    produced["centralized metrics"] = str(run / "metrics.json")
    produced["attributions (S01, early)"] = str(run / "sites" / "S01" / "attributions_early.png")
    return produced
