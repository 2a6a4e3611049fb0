"""The Flower apps in the simulation runtime (Ray): real ServerApp, one ClientApp per site, DP+HE, faults."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fedresponse.federation import pooled_summary, simulate
from privacy.accounting import read_ledger
from privacy.audit import verify_chain
from privacy.ckks import write_key_files

TOY_DIR = str(Path(__file__).resolve().parent)


@pytest.mark.slow
def test_dp_he_rounds_with_a_crash_and_a_straggler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # simulation workers import the toy task by module name and read the fault plan from the environment
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TOY_DIR, os.environ.get("PYTHONPATH", "")]))
    (tmp_path / "toy").mkdir()
    monkeypatch.setenv("FEDRESPONSE_TOY_STATE", str(tmp_path / "toy"))
    monkeypatch.setenv("FEDRESPONSE_TOY_FAIL", "S02:2")  # S02 crashes mid-round in round 2
    monkeypatch.setenv("FEDRESPONSE_TOY_SLOW", "S03:55:2")  # S03 answers round 2 after the 40 s timeout
    write_key_files(tmp_path / "keys")
    run = tmp_path / "run"
    config = {"num-server-rounds": 2, "mode": "dp-he", "min-updates": 1, "round-timeout": 40.0, "node-wait": 300.0,
              "local-epochs": 1, "batch-size": 8, "noise-multiplier": 1.0, "max-grad-norm": 1.0, "delta": 1e-5,
              "epsilon-budget": 30.0, "accountant": "prv", "seed": 3, "task": "federated_toy:toy_task",
              "run-dir": str(run), "site-root": str(run / "sites"), "server-keys": str(tmp_path / "keys" / "server"),
              "site-keys": str(tmp_path / "keys" / "site"), "site-input-root": ""}
    reports = simulate(config, ["S01", "S02", "S03"])
    assert [r.round for r in reports] == [1, 2]
    assert reports[0].accepted == ["S01", "S02", "S03"]
    # round 2: the crash comes back as an error reply, the straggler as no reply; S01 alone meets the minimum
    assert reports[1].accepted == ["S01"] and len(reports[1].errors) == 1 and reports[1].missing == 1
    assert "simulated crash" in reports[1].errors[0]
    ledger = read_ledger(run / "privacy_ledger.csv")
    assert [(r.site, r.round) for r in ledger] == [("S01", 1), ("S02", 1), ("S03", 1), ("S01", 2)]
    assert read_ledger(run / "sites" / "S01" / "privacy_ledger.csv") == [r for r in ledger if r.site == "S01"]
    for site in ("S01", "S02", "S03"):
        assert verify_chain(run / "sites" / site / "federation_audit.jsonl") == []
    assert verify_chain(run / "server_audit.jsonl") == []
    assert (run / "checkpoints" / "LATEST").read_text().strip() == "2"
    privacy = json.loads((run / "privacy.json").read_text())
    assert privacy["sites"]["S01"] == {"epsilon": ledger[-1].epsilon, "budget": 30.0, "rounds": 2, "accountant": "prv"}
    metrics = json.loads((run / "site_metrics.json").read_text())
    assert "S01" in metrics and 0.0 <= metrics["S01"]["auc"] <= 1.0
    assert metrics["S01"]["n_test"] == 8.0 and all(isinstance(v, float) for m in metrics.values() for v in m.values())
    _check_encrypted_pooled_evaluation(run, tmp_path / "keys")


def _check_encrypted_pooled_evaluation(run: Path, keys: Path) -> None:
    """The two evaluate phases went through Flower: ciphertexts only at the server, a key holder reads the sum."""
    from fl_server.pooling import load_pooled_aggregate

    summed, cutoffs = load_pooled_aggregate(run)
    assert summed.encoding == "ckks" and summed.contributors == ["S01", "S02", "S03"]
    assert summed.total_examples == 8 + 10 + 12  # the sites' held-out patients (25 % of 30, 40, 50)
    saved = json.loads((run / "cutoffs.json").read_text())
    assert {m: saved[m] for m in ("early", "full")} == cutoffs
    server_log = (run / "server_audit.jsonl").read_text()
    assert "fl.evaluation.histograms_added" in server_log and "fl.evaluation.pooled" in server_log
    for site in ("S01", "S02", "S03"):
        sent = (run / "sites" / site / "federation_audit.jsonl").read_text()
        assert sent.count("fl.evaluation.aggregate_sent") == 2
    comparison = pooled_summary(run, keys=keys)
    assert comparison is not None
    pooled = json.loads((run / "pooled_metrics.json").read_text())
    assert pooled["n"] == 30 and 0.0 <= pooled["early"]["auc"] <= 1.0
    assert pooled["early"]["auc"] == pooled["full"]["auc"]  # the toy scores both modes alike


def test_federated_train_command_refuses_bad_input(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedresponse.cli import app

    runner = CliRunner()
    (tmp_path / "cohort" / "S01").mkdir(parents=True)
    no_keys = runner.invoke(app, ["train", "--cohort", str(tmp_path / "cohort"), "--out", str(tmp_path / "run")])
    def text(result: object) -> str:  # rich wraps long lines
        return " ".join(str(getattr(result, "output", "")).split())

    assert no_keys.exit_code == 2 and "--keys" in text(no_keys)
    write_key_files(tmp_path / "keys")
    no_inputs = runner.invoke(app, ["train", "--cohort", str(tmp_path / "cohort"), "--keys", str(tmp_path / "keys"),
                                    "--out", str(tmp_path / "run")])
    assert no_inputs.exit_code == 1 and "model_inputs.pt" in text(no_inputs)
    bad = tmp_path / "bad.yaml"
    bad.write_text("federation:\n  rounds: 3\n")
    unknown = runner.invoke(app, ["train", "--cohort", str(tmp_path / "cohort"), "--keys", str(tmp_path / "keys"),
                                  "--out", str(tmp_path / "run2"), "--config", str(bad)])
    assert unknown.exit_code == 1 and "unknown federation setting" in text(unknown)
