"""``fedresponse export-cdisc SRC --out DIR``: SDTM (``DIR/sdtm``) + ADaM (``DIR/adam``) as SAS XPT v5, each with a
Define-XML 2.1 define.xml, the standalone regeneration programs and a reviewer's guide (docs/cdisc.md)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def export_cdisc(
    src: Path = typer.Argument(..., help="A site store, a cohort site folder, or a whole synthesized cohort."),
    out: Path = typer.Option(..., "--out", help="Output folder (replaced atomically when complete)."),
    labels: str = typer.Option("en", "--labels", help="Label language: en or zh (≤ 40 bytes each)."),
    encoding: str = typer.Option("utf-8", "--encoding", help="Encoding of labels and text values in the XPT files."),
) -> None:
    """Export SDTM (DM TU TR RS CM CE) and ADaM (ADSL ADRS ADTTE) for submission, with define.xml files."""
    from evaluation.cdisc.export import export_cdisc as run_export
    from evaluation.exceptions import CdiscExportError, EvaluationError

    console = Console()
    if labels not in ("en", "zh"):
        console.print(f"[red]--labels must be 'en' or 'zh', but was {labels!r}[/]")
        raise typer.Exit(code=2)
    try:
        paths = run_export(src, out, labels=labels, encoding=encoding)
    except (CdiscExportError, EvaluationError, LookupError) as exc:
        console.print(f"[bold red]export-cdisc failed:[/] {exc}")
        raise typer.Exit(code=2) from exc
    for name, path in paths.items():
        if name != "define":  # the SDTM define, listed as define_sdtm
            console.print(f"  {name:<11} {path}")


def register(app: typer.Typer) -> None:
    app.command("export-cdisc")(export_cdisc)
