"""The researcher notebooks execute top to bottom (nbclient, real kernel) on the quick cohort.

A small ``quick``-preset cohort (2 sites x 6 patients) is synthesized, ingested and assessed by the demo's own
stages; notebook 01 then launches a real, short federated simulation (Flower, DP-SGD, CKKS; 2 rounds, 1 local
epoch) and follows its rounds, and notebook 02 evaluates the finished run as ``fedresponse evaluate`` does
and explores it. Everything runs once per module (about 3-4 minutes on 2 cores).
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient
from rich.console import Console

ROOT = Path(__file__).resolve().parents[2]
SEED = 3
ROUNDS = 2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``fedresponse synth OUT --preset quick --sites 2 --patients-per-site 6``, then the ingest and assess
    demo stages: ``study/cohort`` and ``study/stores/<SITE>`` (with ``assessment/``)."""
    from fedresponse.demo import DemoContext
    from fedresponse.stages import assess as assess_stage
    from fedresponse.stages import ingest as ingest_stage
    from synth.cohort import synthesize

    ctx = DemoContext(out=tmp_path_factory.mktemp("nb_study"), seed=SEED, console=Console(quiet=True))
    synthesize(ctx.cohort, n_sites=2, patients_per_site=6, seed=SEED, preset_name="quick", workers=1)
    ingest_stage.run(ctx)
    assess_stage.run(ctx)
    return ctx.out


def _execute(name: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    book = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    return book


def _text(book: nbformat.NotebookNode) -> str:
    out = []
    for cell in book.cells:
        for output in cell.get("outputs", []):
            out.append(output.get("text", "") + json.dumps(output.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


def _has_image(book: nbformat.NotebookNode) -> bool:
    return any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in book.cells for o in c.get("outputs", []))


@pytest.fixture(scope="module")
def launched(study: Path) -> tuple[nbformat.NotebookNode, Path]:
    """Notebook 01 executed with a real launch; returns the executed notebook and the run directory."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        run = study / "federated"
        book = _execute("01_federated_run.ipynb", {
            "FEDRESPONSE_RUN": str(run), "FEDRESPONSE_COHORT": str(study), "FEDRESPONSE_KEYS": str(study / "ckks_keys"),
            "FEDRESPONSE_LAUNCH": "1", "FEDRESPONSE_ROUNDS": str(ROUNDS), "FEDRESPONSE_LOCAL_EPOCHS": "1",
            "FEDRESPONSE_SEED": str(SEED), "FEDRESPONSE_TIMEOUT": "480"}, monkeypatch)
    return book, run


def test_notebook_launches_a_federated_run_and_follows_its_rounds(launched: tuple[nbformat.NotebookNode, Path]) -> None:
    book, run = launched
    text = _text(book)
    assert "launched train_federated" in text
    for r in range(1, ROUNDS + 1):  # each round printed as the server wrote it, both sites accepted
        assert f"round {r} done: 2/2 updates accepted" in text
    assert f"rounds completed: {list(range(1, ROUNDS + 1))}" in text
    ledger = pd.read_csv(run / "privacy_ledger.csv")
    assert sorted(ledger["site"].unique()) == ["S01", "S02"] and ledger["round"].max() == ROUNDS
    assert ledger.groupby("site")["epsilon"].is_monotonic_increasing.all()  # ε only accumulates
    budget = json.loads((run / "privacy.json").read_text())["sites"]["S01"]["budget"]
    over = sorted(ledger.loc[ledger["epsilon"] > budget, "site"].unique())
    assert f"sites over budget: {over or 'none'}" in text
    assert "site-local predictions kept at 2 site(s)" in text
    assert _has_image(book)


def test_notebook_evaluates_the_finished_run_and_explores_it(study: Path, launched: tuple[nbformat.NotebookNode, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _, run = launched
    out = study / "evaluation"
    book = _execute("02_explore_evaluation.ipynb", {
        "FEDRESPONSE_RUN": str(run), "FEDRESPONSE_EVAL": str(out), "FEDRESPONSE_COHORT": str(study),
        "FEDRESPONSE_KEYS": str(study / "ckks_keys")}, monkeypatch)
    text = _text(book)
    assert "2 sites; cut-offs" in text and "2 assessments, 2 DHI tables" in text
    assert f"fedresponse evaluate {run} --out {out}" in text and "pooling codec: CkksCodec" in text
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = pd.concat([pd.read_csv(p) for p in sorted(run.glob("sites/*/predictions.csv"))])
    # the pooled analysed n counts the sites whose ORR denominator passed the protocol's small-cell rule
    withheld = {row["site"] for row in metrics["pooled"]["suppressed"] if row["statistic"] == "orr"}
    kept = predictions[~predictions["USUBJID"].str.split("-").str[1].isin(withheld)]
    assert metrics["pooled"]["n"] == kept["USUBJID"].nunique() and set(metrics["sites"]) == {"S01", "S02"}
    assert "median PFS" in text and "pooled DHI HR" in text
    assert "<= bound" in text or "one reference class only" in text
    assert (out / "report.html").exists() and "embedded images" in text
    assert _has_image(book)
