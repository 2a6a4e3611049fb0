"""Issue 14 through real Flower processes (simulation runtime): one bad site costs the run that site, not the run.

* A site whose handshake reply is malformed (an older fedresponse version without ``budget`` in its accounting
  inputs) or an error (its ledger comes from a run with another accountant) is excluded with its reason before
  any privacy is spent; the other sites train every round.
* A site whose data shrank after the handshake (patients withdrew consent: a larger sample rate, more ε per round
  than the plan assumed) refuses round 3 itself (``PrivacyBudgetExhausted``, the last line of defence); the run
  ends successfully after round 2 with the final model, predictions, the pooled evaluation and the stop sentence.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from flwr.app import Context, Message, MessageType
from test_app_simulation import TOY_DIR, _toy_cli

from fedresponse.federation import simulate
from privacy.accounting import LedgerRow, epsilon_of, read_ledger, write_ledger
from privacy.audit import verify_chain
from privacy.ckks import write_key_files


def _hello_of_an_older_version(msg: Message, context: Context, call_next: Any) -> Message:
    """Client mod (on the wire, after the real handler): S03's accounting inputs arrive without ``budget``."""
    reply = call_next(msg, context)
    if msg.metadata.message_type == MessageType.QUERY and not reply.has_error() and \
            reply.content["hello"]["site"] == "S03":
        del reply.content["accounting"]["budget"]
    return reply


@pytest.mark.slow
def test_a_malformed_or_failing_hello_excludes_that_site_and_the_run_goes_on(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TOY_DIR, os.environ.get("PYTHONPATH", "")]))
    run = tmp_path / "run"
    # S04 kept its state folder from a run under another accountant: its handshake raises at the site
    foreign = LedgerRow("S04", 1, 6, 1 / 6, 1.0, 1e-5, 3.0, "prv")
    write_ledger(run / "sites" / "S04" / "privacy_ledger.csv", [foreign])
    config = {"num-server-rounds": 2, "mode": "dp", "min-updates": 2, "round-timeout": 120.0, "node-wait": 120.0,
              "local-epochs": 1, "batch-size": 8, "noise-multiplier": 1.0, "max-grad-norm": 1.0, "delta": 1e-5,
              "epsilon-budget": 30.0, "accountant": "rdp", "seed": 3, "task": "federated_toy:toy_task",
              "run-dir": str(run), "site-root": str(run / "sites"), "site-input-root": ""}
    simulate(config, ["S01", "S02", "S03", "S04"], client_mods=[_hello_of_an_older_version])

    summary = json.loads((run / "run_summary.json").read_text())
    assert (summary["stop_reason"], summary["rounds_completed"], summary["stop"]) == \
        ("completed", 2, "completed 2 of 2 rounds")
    excluded = {e["site"]: e for e in summary["excluded_sites"]}
    assert set(excluded) == {"S03", None}
    assert excluded["S03"]["reason"] == ("malformed hello: accounting: budget is missing; the site runs another "
                                         "fedresponse version.")
    assert excluded[None]["reason"] == (  # an error reply names no site: its reason does (the site's own message)
        "error reply: ledger row of round 1 for S04 used accountant='prv', delta=1e-05 but this run is configured "
        "with 'rdp', 1e-05; resume with the original settings.")
    assert all(isinstance(e["node"], int) for e in summary["excluded_sites"])
    assert set(summary["affordable_rounds"]) == {"S01", "S02"}
    rounds = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    assert [(r["round"], r["accepted"], r["sent"]) for r in rounds] == [(1, ["S01", "S02"], 2), (2, ["S01", "S02"], 2)]
    assert {(r.site, r.round) for r in read_ledger(run / "privacy_ledger.csv")} == \
        {(s, k) for s in ("S01", "S02") for k in (1, 2)}
    for site in ("S01", "S02"):
        assert (run / "sites" / site / "predictions.csv").exists()
    assert not (run / "sites" / "S03").exists()  # never trained, never scored
    assert read_ledger(run / "sites" / "S04" / "privacy_ledger.csv") == [foreign]
    entries = [json.loads(line) for line in (run / "server_audit.jsonl").read_text().splitlines()]
    assert sorted(str(e["details"]["site"]) for e in entries if e["action"] == "fl.site.excluded") == ["None", "S03"]
    planned = next(e for e in entries if e["action"] == "fl.run.planned")
    assert planned["details"]["sites"] == ["S01", "S02"] and planned["details"]["excluded_sites"] == \
        summary["excluded_sites"]
    assert verify_chain(run / "server_audit.jsonl") == []


@pytest.mark.slow
def test_a_site_that_refuses_a_round_on_its_budget_ends_the_run_after_the_previous_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TOY_DIR, os.environ.get("PYTHONPATH", "")]))
    (tmp_path / "toy").mkdir()
    monkeypatch.setenv("FEDRESPONSE_TOY_STATE", str(tmp_path / "toy"))
    monkeypatch.setenv("FEDRESPONSE_TOY_SHRINK", "S01:16:2")  # after 2 rounds S01 keeps 16 of its 30 patients
    for site in ("S01", "S02"):
        (tmp_path / "cohort" / site).mkdir(parents=True)
    write_key_files(tmp_path / "keys")
    # toy S01 at the handshake: 30 patients, batch 8 -> q = 0.25, 4 steps a round; with 16: q = 0.5, 2 steps
    full, shrunk = (1.0, 0.25, 4), (1.0, 0.5, 2)
    low, high = epsilon_of([full] * 3, 1e-5, "rdp"), epsilon_of([full] * 2 + [shrunk], 1e-5, "rdp")
    assert low < high  # the plan pays for 3 rounds at the handshake's rate; round 3 at the new rate costs more
    budget = (low + high) / 2

    code, text, run = _toy_cli(tmp_path, "run", budget)
    assert code == 0, text
    assert "stopped after round 2 of 5: privacy budget" in text
    summary = json.loads((run / "run_summary.json").read_text())
    assert {k: summary[k] for k in ("rounds_configured", "rounds_planned", "rounds_completed", "stop_reason")} == \
        {"rounds_configured": 5, "rounds_planned": 3, "rounds_completed": 2, "stop_reason": "privacy budget"}
    assert summary["affordable_rounds"]["S01"] == 3 and summary["excluded_sites"] == []
    entries = [json.loads(line) for line in (run / "server_audit.jsonl").read_text().splitlines()]
    failed = [e for e in entries if e["action"] == "fl.round.failed"]
    assert len(failed) == 1 and failed[0]["details"]["round"] == 3
    refusal = failed[0]["details"]["errors"][0]
    assert "PrivacyBudgetExhausted" in refusal and "site S01: the next round would spend" in refusal
    assert (run / "checkpoints" / "LATEST").read_text().strip() == "2"
    # S01 refused before touching its data (no round-3 row); S02 trained and sent round 3, which the server counts
    s01 = read_ledger(run / "sites" / "S01" / "privacy_ledger.csv")
    s02 = read_ledger(run / "sites" / "S02" / "privacy_ledger.csv")
    assert [r.round for r in s01] == [1, 2] and [r.round for r in s02] == [1, 2, 3]
    assert sorted(read_ledger(run / "privacy_ledger.csv"), key=lambda r: (r.site, r.round)) == s01 + s02
    privacy = json.loads((run / "privacy.json").read_text())
    assert privacy["stop"] == "stopped after round 2 of 5: privacy budget"
    assert (privacy["sites"]["S01"]["rounds"], privacy["sites"]["S02"]["rounds"]) == (2, 3)
    for site in ("S01", "S02"):
        assert (run / "sites" / site / "predictions.csv").exists()
    pooled = json.loads((run / "pooled_aggregate.json").read_text())
    assert pooled["aggregate"]["round"] == 2 and pooled["aggregate"]["contributors"] == ["S01", "S02"]
    assert pooled["aggregate"]["total_examples"] == 4 + 10  # held-out: 16 - 12 at S01 (shrunk), 40 - 30 at S02
    assert (run / "comparison.json").exists() and (run / "pooled_metrics.json").exists()
    assert verify_chain(run / "server_audit.jsonl") == []
