"""The Flower apps in the simulation runtime (Ray): real ServerApp, one ClientApp per site, DP+HE."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fedresponse.federation import simulate
from privacy.accounting import read_ledger
from privacy.audit import verify_chain
from privacy.ckks import write_key_files

TOY_DIR = str(Path(__file__).resolve().parent)


@pytest.mark.slow
def test_two_dp_he_rounds_in_simulation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # simulation workers import the toy task by module name
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TOY_DIR, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FEDRESPONSE_TOY_FAIL", "S03")  # one site crashes mid-round: the round goes on
    write_key_files(tmp_path / "keys")
    run = tmp_path / "run"
    config = {"num-server-rounds": 2, "mode": "dp-he", "min-updates": 2, "round-timeout": 120.0, "node-wait": 60.0,
              "local-epochs": 1, "batch-size": 8, "noise-multiplier": 1.0, "max-grad-norm": 1.0, "delta": 1e-5,
              "epsilon-budget": 30.0, "accountant": "rdp", "seed": 3, "task": "federated_toy:toy_task",
              "run-dir": str(run), "site-root": str(run / "sites"), "server-keys": str(tmp_path / "keys" / "server"),
              "site-keys": str(tmp_path / "keys" / "site"), "site-input-root": ""}
    reports = simulate(config, ["S01", "S02", "S03"])
    assert [r.round for r in reports] == [1, 2]
    assert all(r.accepted == ["S01", "S02"] and len(r.errors) == 1 for r in reports)
    ledger = read_ledger(run / "privacy_ledger.csv")
    assert [(r.site, r.round) for r in ledger] == [("S01", 1), ("S02", 1), ("S01", 2), ("S02", 2)]
    for site in ("S01", "S02"):
        assert read_ledger(run / "sites" / site / "privacy_ledger.csv") == [r for r in ledger if r.site == site]
        assert verify_chain(run / "sites" / site / "federation_audit.jsonl") == []
    assert verify_chain(run / "server_audit.jsonl") == []
    assert (run / "checkpoints" / "LATEST").read_text().strip() == "2"
    metrics = json.loads((run / "site_metrics.json").read_text())
    assert set(metrics) >= {"S01", "S02"} and all(0.0 <= m["auc"] <= 1.0 for m in metrics.values())
