"""``fedresponse pacs query|pull``: the enrolled patients' protocol CT, from the hospital PACS to an inbox.

``query`` lists what the PACS holds for the enrolment log (studies, series, instances, and how many are
already in the inbox) without retrieving; ``pull`` fetches what is missing, over DIMSE (C-FIND + C-MOVE or
C-GET) or DICOMweb (QIDO-RS + WADO-RS), into an inbox that ``fedresponse ingest`` reads. docs/pacs.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

pacs_app = typer.Typer(help="Query and pull the enrolled patients' CT from the hospital PACS (docs/pacs.md).",
                       no_args_is_help=True)

_CONFIG = typer.Option(..., "--config", help="The site's PACS configuration (YAML; docs/pacs.md).")
_TABLES = typer.Option(..., "--tables", help="Folder with enrolment_log.csv (and crf.csv, reads.csv).")
_ROUTE = typer.Option("dimse", "--route", help="dimse (C-FIND + C-MOVE/C-GET) or dicomweb (QIDO-RS + WADO-RS).")


def _quiet_protocol_logs() -> None:
    """pynetdicom and dicomweb-client log every PDU/request at INFO: keep them for --verbose (DEBUG)."""
    level = logging.DEBUG if logging.getLogger().level <= logging.DEBUG else logging.WARNING
    for name in ("pynetdicom", "dicomweb_client"):
        logging.getLogger(name).setLevel(level)


@pacs_app.command("pull")
def pull(
    config: Path = _CONFIG,
    tables: Path = _TABLES,
    inbox: Path = typer.Option(..., "--inbox", help="The inbox folder (created; give it to `fedresponse ingest`)."),
    route: str = _ROUTE,
) -> None:
    """Fetch every protocol study of the enrolled patients that the inbox lacks (resumable)."""
    from fedresponse.progress import progress_bars
    from fl_client.exceptions import FlClientError
    from fl_client.pacs.config import load_pacs_config
    from fl_client.pacs.pull import pull as run_pull

    console = Console()
    _quiet_protocol_logs()
    try:
        site_config = load_pacs_config(config)
        with progress_bars(f"pull {route}") as sink:
            summary = run_pull(site_config, tables, inbox, route, progress=sink)
    except FlClientError as exc:
        console.print(f"[bold red]pull failed:[/] {exc}")
        raise typer.Exit(code=1) from exc
    table = Table(title=f"PACS pull ({route}) of site {site_config.site} → {inbox}")
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, value in (("patients", summary.patients), ("studies", summary.studies), ("series", summary.series),
                         ("instances listed by the PACS", summary.requested),
                         ("already in the inbox", summary.already_present), ("received now", summary.received),
                         ("missing", summary.missing), ("counted by the PACS but not listed", summary.unlisted)):
        table.add_row(label, str(value))
    console.print(table)
    console.print(f"{summary.seconds:.1f} s; every instance is accounted for in {inbox / 'pacs_pull.csv'}")
    if not summary.complete:
        for problem in summary.problems:
            console.print(f"[yellow]partial:[/] {problem}")
        if summary.missing:
            console.print(f"[bold yellow]{summary.missing} instance(s) missing:[/] run the same pull again to fetch "
                          "only those")
        if summary.unlisted:
            console.print(f"[bold yellow]{summary.unlisted} series or instance(s) the PACS counts were not listed:[/] "
                          "the pull cannot ask for them; see the reasons above, then run the same pull again")
        raise typer.Exit(code=3)
    console.print(f"next: fedresponse ingest {inbox} --site {site_config.site} --out STORE")


@pacs_app.command("query")
def query(config: Path = _CONFIG, tables: Path = _TABLES, route: str = _ROUTE,
          inbox: Path | None = typer.Option(None, "--inbox", help="Count what this inbox already holds.")) -> None:
    """List, per enrolled patient, the studies, series and instances the PACS holds in the protocol windows."""
    from fl_client.exceptions import FlClientError
    from fl_client.pacs.config import load_pacs_config
    from fl_client.pacs.pull import survey

    console = Console()
    _quiet_protocol_logs()
    try:
        rows = survey(load_pacs_config(config), tables, route, inbox)
    except FlClientError as exc:
        console.print(f"[bold red]query failed:[/] {exc}")
        raise typer.Exit(code=1) from exc
    table = Table(title=f"PACS holdings in the protocol windows ({route})")
    for column in ("USUBJID", "visit", "study date", "series", "instances", "in inbox"):
        table.add_column(column, justify="right" if column in ("series", "instances", "in inbox") else "left")
    for row in rows:
        table.add_row(row.usubjid, row.visit, row.study_date, str(row.series), str(row.instances), str(row.in_inbox))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(pacs_app, name="pacs")
