"""The researcher notebooks execute top to bottom (nbclient, real kernel) on a seeded run directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "evaluation"))

from synthetic_run import make_run  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_run(tmp_path_factory.mktemp("nb"), seed=5, n_sites=2, n_per_site=12)["run"]
    lines = [{"round": r, "sent": 2, "accepted": ["S01", "S02"], "rejected": {"S02": "stale round"} if r == 2 else {},
              "errors": [], "missing": 0, "bytes_in": 1_200_000, "bytes_out": 2_400_000, "train_loss": 0.7 - 0.1 * r,
              "seconds": 4.2, "epsilon": {"S01": 0.9 * r + 0.3, "S02": 0.9 * r + 0.6}} for r in (1, 2, 3)]
    (run / "rounds.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run


def _execute(name: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    book = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(book, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    return book


def _text(book: nbformat.NotebookNode) -> str:
    out = []
    for cell in book.cells:
        for output in cell.get("outputs", []):
            out.append(output.get("text", "") + json.dumps(output.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


def test_federated_run_notebook_follows_rounds_and_budget(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    book = _execute("01_federated_run.ipynb", {"FEDRESPONSE_RUN": str(run_dir), "FEDRESPONSE_LAUNCH": "0"},
                    monkeypatch)
    text = _text(book)
    assert "round 2: update from S02 rejected — stale round" in text
    assert "sites over budget: none" in text
    assert any(o.get("output_type") == "display_data" for c in book.cells for o in c.get("outputs", []))


def test_evaluation_notebook_recomputes_pooled_within_bound(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    book = _execute("02_explore_evaluation.ipynb", {"FEDRESPONSE_RUN": str(run_dir),
                                                    "FEDRESPONSE_EVAL": str(run_dir / "no-eval")}, monkeypatch)
    text = _text(book)
    assert "2 sites; cut-offs" in text and "<= bound" in text and "median PFS" in text
    assert "fedresponse evaluate" in text
    assert any(o.get("output_type") == "display_data" for c in book.cells for o in c.get("outputs", []))
