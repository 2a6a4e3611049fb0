"""The ``fedresponse`` command line (Typer, rich output).

Each command lives in its own module under :mod:`fedresponse.commands` and exposes
``register(app)``; this file only assembles them. Command modules import heavy libraries
(torch, tenseal, flwr) inside the command functions so that ``fedresponse --help`` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import os

import typer
from rich.logging import RichHandler

# Order is the order shown by --help. Add a module name here when a command exists;
# no placeholder commands (ARCHITECTURE: "--help lists what works").
COMMAND_MODULES: tuple[str, ...] = (
    "synth",
    "ingest",
    "pacs",
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


#: Our packages: their INFO lines are the progress a user reads.
OWN_PACKAGES: tuple[str, ...] = ("fedresponse", "synth", "fl_client", "fl_server", "privacy", "models", "radiomics",
                                 "evaluation")


def configure_logging(verbose: bool) -> None:
    """Our packages log at INFO (DEBUG with ``verbose``); third-party libraries only from WARNING unless ``verbose``.

    Libraries such as highdicom log hundreds of INFO lines per synthesized cohort ("copy attributes ...");
    the root logger's level keeps them out. Flower sets its own logger to DEBUG with its own console handler
    (and reads ``FLWR_LOG_LEVEL`` at import, also in the simulation's worker processes), so it is capped
    separately.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=True)],
        force=True,
    )
    for name in OWN_PACKAGES:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        os.environ.setdefault("FLWR_LOG_LEVEL", "WARNING")
    logging.getLogger("flwr").setLevel(logging.DEBUG if verbose else logging.WARNING)  # DEBUG: Flower's default


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging, third-party INFO too.")) -> None:
    """Set up logging once, at the entry point."""
    configure_logging(verbose)


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"fedresponse.commands.{name}")
        module.register(app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    app()
