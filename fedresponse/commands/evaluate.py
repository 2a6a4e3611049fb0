"""``fedresponse evaluate RUN --out DIR``: metrics.json, a self-contained report.html and the figures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from evaluation.pooled import CkksCodec


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
                                     "aggregates under CKKS (sites encrypt, the server adds with the public context)."),
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
        paths = write_evaluation(inputs, out, codec=codec)
    except (EvaluationError, PrivacyError) as exc:
        console.print(f"[bold red]evaluate failed:[/] {exc}")
        raise typer.Exit(code=2) from exc
    import json

    from evaluation.demo_stage import headline

    console.print(f"[green]report[/] {paths['report']}")
    console.print(headline(json.loads(paths["metrics"].read_text(encoding="utf-8"))))


def _ckks_codec(keys: Path) -> CkksCodec:
    from evaluation.pooled import CkksCodec
    from privacy.ckks import PUBLIC_CONTEXT, SECRET_CONTEXT, KeyInfo, load_public_context, load_site_context

    info = KeyInfo.read(keys / SECRET_CONTEXT.parent / "keyinfo.json")
    return CkksCodec(load_site_context(keys / SECRET_CONTEXT), load_public_context(keys / PUBLIC_CONTEXT), info.params)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
