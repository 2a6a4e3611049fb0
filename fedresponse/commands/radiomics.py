"""``fedresponse radiomics``: IBSI-compliant radiomics (compliance check against the IBSI-1 reference)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

radiomics_app = typer.Typer(
    name="radiomics",
    help="IBSI-compliant radiomics features (PyTorch, CPU/CUDA) and their compliance check.",
    no_args_is_help=True,
)

_CONFIGS = ("dig", "A", "B", "C", "D", "E")


@radiomics_app.command("ibsi")
def ibsi(
    out: Path | None = typer.Option(None, "--out", help="Also write config,tag,value,reference,tolerance,match CSV."),
    data: Path | None = typer.Option(None, "--data", help="IBSI data folder (default ../shared/data/ibsi)."),
    config: list[str] | None = typer.Option(None, "--config", "-c", help="Configurations (dig, A-E); default all."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
) -> None:
    """Compute the IBSI-1 digital phantom and CT phantom (configs A-E) and count matched reference values."""
    from radiomics.ibsi import run_compliance, summarise, write_csv

    configs = tuple(config) if config else _CONFIGS
    bad = [c for c in configs if c not in _CONFIGS]
    if bad:
        raise typer.BadParameter(f"unknown configuration(s) {bad}; choose from {', '.join(_CONFIGS)}")
    try:
        rows = run_compliance(data_dir=data, configs=configs, device=device)
    except FileNotFoundError as err:
        raise typer.BadParameter(str(err)) from err
    summary = summarise(rows)
    console = Console()
    table = Table(title="IBSI-1 compliance: reference values matched within tolerance")
    table.add_column("family")
    for c in configs:
        table.add_column(c, justify="right")
    families = sorted({fam for fam, _ in summary})
    for fam in families:
        cells = []
        for c in configs:
            m, n = summary.get((fam, c), (0, 0))
            cells.append(f"{m}/{n}" if n else "-")
        table.add_row(fam, *cells)
    matched = sum(m for m, _ in summary.values())
    total = sum(n for _, n in summary.values())
    table.add_row("[bold]all[/]", *[f"{sum(summary.get((f, c), (0, 0))[0] for f in families)}/"
                                    f"{sum(summary.get((f, c), (0, 0))[1] for f in families)}" for c in configs])
    console.print(table)
    console.print(f"matched {matched} of {total} reference values with a consensus value")
    if out is not None:
        write_csv(rows, out)
        console.print(f"wrote {len(rows)} rows to [cyan]{out}[/]")


def register(app: typer.Typer) -> None:
    from fedresponse.commands.radiomics_graphs import add_to  # sub-region graphs and DHI (their own module)

    add_to(radiomics_app)
    app.add_typer(radiomics_app, name="radiomics")
