"""``fedresponse audit verify PATH``: check a hash-chained audit log (a site store or a log file)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

audit_app = typer.Typer(help="Inspect and verify hash-chained audit logs.", no_args_is_help=True)

#: Name of the audit log inside a site store (see docs/store.md).
STORE_AUDIT_LOG = "audit.jsonl"


def _resolve_log(path: Path) -> Path:
    if path.is_dir():
        return path / STORE_AUDIT_LOG
    return path


@audit_app.command("verify")
def verify(
    path: Path = typer.Argument(..., help="A site store folder (uses its audit.jsonl) or an audit log file."),
) -> None:
    """Verify every link of the chain; exit 1 and list the problems when it is broken."""
    from privacy.audit import verify_chain

    console = Console()
    log_path = _resolve_log(path)
    problems = verify_chain(log_path)
    if problems:
        console.print(f"[bold red]audit log {log_path} is BROKEN[/] ({len(problems)} problem(s)):")
        for problem in problems:
            console.print(f"  - {problem}")
        raise typer.Exit(code=1)
    from privacy.audit import AuditLog

    entries = AuditLog(log_path).entries()
    head = entries[-1].hash if entries else "-"
    console.print(f"[green]audit log {log_path} intact[/]: {len(entries)} entries, head {head}")


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
