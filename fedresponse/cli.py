"""The ``fedresponse`` command line (Typer, rich output).

Each command lives in its own module under :mod:`fedresponse.commands` and exposes
``register(app)``; this file only assembles them. Command modules import heavy libraries
(torch, tenseal, flwr) inside the command functions so that ``fedresponse --help`` stays fast.
"""

from __future__ import annotations

import importlib
import logging

import typer
from rich.logging import RichHandler

# Order is the order shown by --help. Add a module name here when a command exists;
# no placeholder commands (ARCHITECTURE: "--help lists what works").
COMMAND_MODULES: tuple[str, ...] = (
    "synth",
    "ingest",
    "assess",
    "radiomics",
    "train",
    "audit",
    "keys",
    "deploy",
    "evaluate",
    "export_cdisc",
    "demo",
)

app = typer.Typer(
    name="fedresponse",
    help="Federated assessment of NSCLC response to immunochemotherapy from serial CT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    """Set up logging once, at the entry point."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=True)],
        force=True,
    )


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"fedresponse.commands.{name}")
        module.register(app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    app()
