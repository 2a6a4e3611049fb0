"""``fedresponse ingest SRC --site S01 --out STORE``: a PACS export → the site study store."""

from __future__ import annotations

import getpass
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def ingest(
    src: Path = typer.Argument(..., help="The site's export folder (pacs/, annotations/, crf.csv, reads.csv, ...)."),
    site: str = typer.Option(..., "--site", help="SITEID: 2-8 capitals or digits, e.g. S01 or QY."),
    out: Path = typer.Option(..., "--out", help="The site store folder (created or updated)."),
    key_file: Path | None = typer.Option(None, "--key-file",
                                         help="Encrypted re-identification key (default: OUT/../SITE.reid.enc)."),
    passphrase_file: Path | None = typer.Option(
        None, "--passphrase-file", help="File whose first line is the PI's passphrase "
                                        "(default: $FEDRESPONSE_REID_PASSPHRASE)."),
    who: str = typer.Option("", "--who", help="Who runs the ingest (audit log; default: the login name)."),
    why: str = typer.Option("site ingest of a PACS export", "--why", help="Why (audit log)."),
) -> None:
    """De-identify, assemble, QC and validate one site's export into its study store."""
    from fedresponse.progress import progress_bars
    from fl_client.exceptions import FlClientError
    from fl_client.ingest.pipeline import IngestConfig, ingest_site
    from fl_client.ingest.reid import passphrase_from

    console = Console()
    try:
        with progress_bars(f"ingest {site}") as sink:
            config = IngestConfig(site=site, passphrase=passphrase_from(passphrase_file),
                                  who=who or getpass.getuser(), why=why, key_file=key_file, progress=sink)
            summary = ingest_site(src, out, config)
    except FlClientError as exc:
        console.print(f"[bold red]ingest failed:[/] {exc}")
        raise typer.Exit(code=1) from exc
    table = Table(title=f"Ingest of site {site} → {out}")
    table.add_column("what")
    table.add_column("count", justify="right")
    for status, count in sorted(summary.files.items()):
        table.add_row(f"files {status.lower()}", str(count))
    for label, value in (("new files this run", summary.new_files), ("subjects", summary.subjects),
                         ("subjects rebuilt", summary.rebuilt_subjects), ("series", summary.series),
                         ("visits with a protocol CT", summary.visits), ("slices read", summary.slices),
                         ("CRF queries", summary.queries), ("eligible subjects", summary.eligible),
                         ("QC rejections", summary.rejects)):
        table.add_row(label, str(value))
    console.print(table)
    rate = summary.slices / summary.seconds if summary.seconds else 0.0
    console.print(f"{summary.seconds:.1f} s ({rate:.0f} slices/s); audit head {summary.audit_hash}")


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
