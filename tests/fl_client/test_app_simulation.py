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
              "site-keys": str(tmp_path / "keys" / "site"), "site-input-root": "",
              "cutoff-source": "training-histograms"}  # the histogram path through Flower (the default: protocol)
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


def _toy_cli(tmp_path: Path, name: str, budget: float, *extra: str) -> tuple[int, str, Path]:
    """``fedresponse train`` (federated) on the toy task: 2 sites, 5 configured rounds, RDP, the given budget."""
    from typer.testing import CliRunner

    from fedresponse.cli import app

    config = tmp_path / f"{name}.yaml"
    config.write_text(f"federation:\n  num-server-rounds: 5\n  mode: dp-he\n  min-updates: 2\n  local-epochs: 1\n"
                      f"  batch-size: 8\n  accountant: rdp\n  epsilon-budget: {budget!r}\n  seed: 3\n"
                      "  task: federated_toy:toy_task\n")
    run = tmp_path / name
    result = CliRunner().invoke(app, ["train", "--cohort", str(tmp_path / "cohort"), "--keys", str(tmp_path / "keys"),
                                      "--out", str(run), "--config", str(config), *extra])
    return result.exit_code, " ".join(str(result.output).split()), run


@pytest.mark.slow
def test_a_run_that_hits_the_budget_ends_successfully(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14: the defaults asked for more rounds than the budget pays for and the run failed at round 2.

    Now the handshake's accounting inputs shorten the run up front; it ends with exit 0, a checkpointed model,
    the sites' predictions, the encrypted pooled evaluation and a summary saying why it stopped. With
    ``--strict-rounds`` the same run is refused before any privacy is spent, naming the affordable number.
    """
    from fedresponse.federation import cohort_sites
    from privacy.accounting import epsilon_of

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TOY_DIR, os.environ.get("PYTHONPATH", "")]))
    for site in ("S01", "S02"):
        (tmp_path / "cohort" / site).mkdir(parents=True)
    assert cohort_sites(tmp_path / "cohort") == ["S01", "S02"]
    write_key_files(tmp_path / "keys")
    # toy S01: 30 patients, batch 8 -> 4 Poisson batches (q = 0.25), 4 steps a round; S02: 40 -> q = 0.2, 5 steps
    one = [(1.0, 0.25, 4)]
    budget = (epsilon_of(one * 2, 1e-5, "rdp") + epsilon_of(one * 3, 1e-5, "rdp")) / 2  # S01 pays for 2 rounds

    code, text, strict = _toy_cli(tmp_path, "strict", budget, "--strict-rounds")
    assert code == 1 and "allow 2 more round(s)" in text and "num-server-rounds = 2" in text
    assert not (strict / "privacy_ledger.csv").exists()  # refused before any privacy was spent
    assert not (strict / "sites" / "S01" / "privacy_ledger.csv").exists()

    code, text, run = _toy_cli(tmp_path, "run", budget)
    assert code == 0, text
    assert "stopped after round 2 of 5: privacy budget" in text
    summary = json.loads((run / "run_summary.json").read_text())
    assert {k: summary[k] for k in ("rounds_configured", "rounds_planned", "rounds_completed", "stop_reason")} == \
        {"rounds_configured": 5, "rounds_planned": 2, "rounds_completed": 2, "stop_reason": "privacy budget"}
    assert summary["affordable_rounds"]["S01"] == 2 and summary["affordable_rounds"]["S02"] >= 2
    assert (run / "checkpoints" / "LATEST").read_text().strip() == "2"
    ledger = read_ledger(run / "privacy_ledger.csv")
    assert {r.round for r in ledger} == {1, 2} and all(r.epsilon <= budget for r in ledger)
    s01 = [r for r in ledger if r.site == "S01"]
    assert epsilon_of([(r.noise_multiplier, r.sample_rate, r.steps) for r in s01] + one, 1e-5, "rdp") > budget
    for site in ("S01", "S02"):
        assert (run / "sites" / site / "predictions.csv").exists()
    assert (run / "pooled_aggregate.json").exists() and (run / "comparison.json").exists()
    privacy = json.loads((run / "privacy.json").read_text())
    assert privacy["stop"] == "stopped after round 2 of 5: privacy budget"
    server_log = (run / "server_audit.jsonl").read_text()
    assert "fl.run.planned" in server_log and "fl.run.stopped" in server_log
    assert verify_chain(run / "server_audit.jsonl") == []
