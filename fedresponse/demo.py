"""The demo pipeline: every stage that exists, in order, on a freshly synthesized ``quick`` cohort.

A stage is a plain function ``run(ctx: DemoContext) -> dict[str, str]``, one module per stage in
:mod:`fedresponse.stages` (the CLI package: library packages never import the demo); it returns a mapping
of "what" → "where" that the demo prints at the end. Each capability adds one line to :data:`STAGES`
(``"name", "module:function"``).
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rich.console import Console
from rich.panel import Panel
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
    lines = final_lines(ctx.artifacts)
    if lines:
        console.print(Panel("\n".join(lines), title="Result", expand=False))
    return produced


def final_lines(artifacts: dict[str, Path]) -> list[str]:
    """The demo's last screen: the central report's headline, and what the federated figures rest on.

    Reads what the stages recorded: ``evaluation`` (the central PI report's folder, its ``metrics.json``) and
    ``run:federated`` (the federated run: ``pooled_metrics.json``, ``pooled_aggregate.json``, ``rounds.jsonl``,
    ``federation.resolved.yaml``). A line whose inputs are missing is left out.
    """
    from fedresponse.headline import headline

    lines = []
    central = artifacts.get("evaluation")
    if central is not None and (Path(central) / "metrics.json").exists():
        metrics = json.loads((Path(central) / "metrics.json").read_text(encoding="utf-8"))
        lines.append(f"Central report ({Path(central) / 'report.html'}): {headline(metrics)}")
    run = artifacts.get("run:federated")
    basis = federated_basis(Path(run)) if run is not None else None
    if basis is not None:
        lines.append(basis)
    return lines


def federated_basis(run: Path) -> str | None:
    """One line: held-out patients and sites the federated figures rest on, how they were pooled, after how
    many rounds; None when ``run`` has no pooled evaluation."""
    pooled = run / "pooled_metrics.json"
    if not pooled.exists():
        return None
    metrics = json.loads(pooled.read_text(encoding="utf-8"))
    sites = metrics.get("sites") or []
    aggregate = run / "pooled_aggregate.json"
    encoding = json.loads(aggregate.read_text(encoding="utf-8"))["aggregate"]["encoding"] if aggregate.exists() \
        else "unknown"
    codec = "CKKS ciphertexts the server only added" if encoding == "ckks" else f"{encoding} (not encrypted)"
    rounds_file = run / "rounds.jsonl"
    rounds = [json.loads(line) for line in rounds_file.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if rounds_file.exists() else []
    epsilon = max((rounds[-1].get("epsilon") or {}).values(), default=None) if rounds else None
    spent = f", ε ≤ {epsilon:.2f} per site" if isinstance(epsilon, int | float) else ""
    resolved_file = run / "federation.resolved.yaml"
    resolved = yaml.safe_load(resolved_file.read_text(encoding="utf-8")) if resolved_file.exists() else {}
    mode = str(resolved["federation"].get("mode", "")) if resolved else ""
    training = "DP-SGD" if "dp" in mode.split("-") else "local training (no DP)"
    if resolved.get("model"):  # the product model the sites trained (model.kind; absent in older runs)
        training += f" of the {resolved['model']} model"
    return (f"Federated figures rest on {metrics.get('n_test', '?')} held-out test patients of {len(sites)} sites "
            f"({', '.join(sites)}), pooled as {codec}, after {len(rounds)} rounds of {training}{spent}.")


def _print_outputs(console: Console, produced: dict[str, dict[str, str]]) -> None:
    table = Table(title="Demo outputs")
    table.add_column("stage")
    table.add_column("what")
    table.add_column("where")
    for stage, items in produced.items():
        for what, where in items.items():
            table.add_row(stage, what, where)
    console.print(table)
