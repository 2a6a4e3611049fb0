"""The demo pipeline: every stage that exists, in order, on a freshly synthesized ``quick`` cohort.

A stage is a plain function ``run(ctx: DemoContext) -> dict[str, str]``, one module per stage in
:mod:`fedresponse.stages` (the CLI package: library packages never import the demo); it returns a mapping
of "what" → "where" that the demo prints at the end. Each capability adds one line to :data:`STAGES`
(``"name", "module:function"``).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

log = logging.getLogger(__name__)

# (stage name, "module:function"). Stages run in this order; a later stage may read what an
# earlier one recorded in ``ctx.artifacts``.
STAGES: list[tuple[str, str]] = [
    ("synth", "fedresponse.stages.synth:run"),
    ("ingest", "fedresponse.stages.ingest:run"),
    ("assess", "fedresponse.stages.assess:run"),
    ("subregion-graphs", "fedresponse.stages.graphs:run"),
    ("train (centralized)", "fedresponse.stages.train_centralized:run"),
    ("train (federated)", "fedresponse.stages.train_federated:run"),
    ("evaluate", "fedresponse.stages.evaluate:run"),
    ("export-cdisc", "fedresponse.stages.export_cdisc:run"),
]


@dataclass
class DemoContext:
    """What every demo stage receives.

    Attributes
    ----------
    out : Path
        The demo output folder (everything the demo writes goes below it).
    cohort : Path
        The synthesized cohort (``out / "cohort"``), written by the ``synth`` stage.
    seed : int
        The demo seed; stages derive their own generators from ``(seed, purpose)``.
    console : Console
        Where stages report progress.
    artifacts : dict[str, Path]
        Paths recorded by earlier stages for later ones (for example ``"store:S01"``).
    """

    out: Path
    seed: int
    console: Console
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def cohort(self) -> Path:
        return self.out / "cohort"


def _resolve(spec: str) -> Callable[[DemoContext], dict[str, str]]:
    module_name, func_name = spec.split(":")
    func: Callable[[DemoContext], dict[str, str]] = getattr(importlib.import_module(module_name), func_name)
    return func


def run_demo(out: Path, seed: int = 7, console: Console | None = None) -> dict[str, dict[str, str]]:
    """Run every registered stage in order and return, per stage, what it produced and where."""
    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out=out, seed=seed, console=console)
    produced: dict[str, dict[str, str]] = {}
    for index, (name, spec) in enumerate(STAGES, start=1):
        console.rule(f"[bold]Stage {index}/{len(STAGES)}: {name}")
        start = time.perf_counter()
        produced[name] = _resolve(spec)(ctx)
        console.print(f"[green]✓[/] {name} finished in {time.perf_counter() - start:.1f} s")
    _print_outputs(console, produced)
    return produced


def _print_outputs(console: Console, produced: dict[str, dict[str, str]]) -> None:
    table = Table(title="Demo outputs")
    table.add_column("stage")
    table.add_column("what")
    table.add_column("where")
    for stage, items in produced.items():
        for what, where in items.items():
            table.add_row(stage, what, where)
    console.print(table)
