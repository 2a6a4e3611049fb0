"""``fedresponse demo``: every stage that exists, on a fresh ``quick`` cohort."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer
from rich.console import Console


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Output folder (replaced if it exists)."),
    seed: int = typer.Option(7, "--seed", help="Seed for every random draw of the demo."),
) -> None:
    """Synthesize a quick multi-site cohort and run every pipeline stage on it."""
    from fedresponse.demo import run_demo

    console = Console()
    if out.exists():
        shutil.rmtree(out)
    run_demo(out, seed=seed, console=console)
    console.print(f"\n[bold]Demo finished.[/] Everything is under [cyan]{out.resolve()}[/]")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
