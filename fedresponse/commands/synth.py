"""``fedresponse synth``: write the built-in synthetic multi-site cohort."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def synth(
    out: Path = typer.Argument(..., help="Output folder for the cohort (must be new or empty)."),
    sites: int = typer.Option(3, "--sites", min=1, help="Number of hospitals."),
    patients_per_site: int | None = typer.Option(
        None, "--patients-per-site", min=1, help="Patients per site (default: from the preset)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed gives the same cohort."),
    preset: str = typer.Option("quick", "--preset", help="quick (tests, demo), trial (500 patients) or chest "
                                                         "(whole chest, 512 x 512, 300-450 slices: a few patients)."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Worker processes (default: CPU cores)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    site_codes: str = typer.Option("", "--site-codes", help="Comma-separated SITEIDs, one per site "
                                                              "(2-8 capitals/digits; default S01, S02, ...)."),
) -> None:
    """Synthesize PACS exports, annotations, CRF and reads for N sites (see docs/cohort.md)."""
    from synth.cohort import plan_cohort, synthesize
    from synth.presets import get_preset

    console = Console()
    try:
        preset_obj = get_preset(preset)
        codes = [c.strip() for c in site_codes.split(",") if c.strip()] or None
        n_total = sum(len(p) for p in plan_cohort(sites, patients_per_site, seed, preset_obj, codes).values())
    except ValueError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from error
    start = time.perf_counter()
    with Progress(TextColumn("[bold]rendering patients"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("render", total=n_total)
        try:
            summary = synthesize(out, sites, patients_per_site, seed, preset, workers=workers,
                                 on_patient=lambda: progress.advance(task), force=force, site_codes=codes)
        except FileExistsError as error:
            console.print(f"[red]error:[/] {error}")
            raise typer.Exit(2) from error
    table = Table(title=f"Synthetic cohort ({preset}, seed {seed})")
    for column in ("sites", "patients", "responders", "files", "oracle AUC", "seconds"):
        table.add_column(column)
    table.add_row(" ".join(summary.sites), str(summary.patients), str(summary.responders), str(summary.files),
                  f"{summary.oracle_auc:.3f}", f"{time.perf_counter() - start:.1f}")
    console.print(table)
    console.print(f"Cohort written to [cyan]{summary.out}[/]")


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
