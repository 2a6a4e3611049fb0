"""The demo's last screen: the central report's headline and one line on what the federated figures rest on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fedresponse.demo import federated_basis, final_lines

CENTRAL = {"pooled": {"early": {"auc": 0.71, "auc_ci": [0.6, 0.82]},
                      "full": {"auc": 0.66, "auc_ci": [0.5, 0.8], "sensitivity": 0.5, "specificity": 0.75},
                      "orr": 0.4, "orr_ci": [0.25, 0.57], "median_pfs_days": 175.0, "median_pfs_ci": [150.0, "inf"]},
           "pooling": {"codec": "CkksCodec"}}


def _federated_run(root: Path, encoding: str = "ckks", mode: str = "dp-he", rounds: int = 2,
                   model: str | None = None) -> Path:
    run = root / "federated"
    run.mkdir(parents=True)
    (run / "pooled_metrics.json").write_text(json.dumps({"n_test": 9, "sites": ["S01", "S02", "S03"]}))
    (run / "pooled_aggregate.json").write_text(json.dumps({"aggregate": {"encoding": encoding, "total_examples": 9}}))
    (run / "rounds.jsonl").write_text("".join(json.dumps({"round": r + 1, "epsilon": {"S01": 1.5 * (r + 1),
                                                                                       "S02": 1.0}}) + "\n"
                                              for r in range(rounds)))
    resolved = {"federation": {"mode": mode}} | ({"model": model} if model else {})
    (run / "federation.resolved.yaml").write_text(yaml.safe_dump(resolved))
    return run


def test_final_screen_reads_the_central_metrics_and_the_federated_run(tmp_path: Path) -> None:
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "metrics.json").write_text(json.dumps(CENTRAL))
    run = _federated_run(tmp_path)
    central, basis = final_lines({"evaluation": tmp_path / "evaluation", "run:federated": run})
    assert central.startswith(f"Central report ({tmp_path / 'evaluation' / 'report.html'}): pooled AUC early 0.71 "
                              "(0.60–0.82), full 0.66")
    assert "median PFS 175 d (150–inf)" in central
    assert basis == ("Federated figures rest on 9 held-out test patients of 3 sites (S01, S02, S03), pooled as CKKS "
                     "ciphertexts the server only added, after 2 rounds of DP-SGD, ε ≤ 3.00 per site.")


def test_basis_names_the_model_the_sites_trained(tmp_path: Path) -> None:
    basis = federated_basis(_federated_run(tmp_path, model="wide"))
    assert basis is not None and "after 2 rounds of DP-SGD of the wide model, ε ≤ 3.00 per site." in basis


@pytest.mark.parametrize(("encoding", "mode", "expected"), [
    ("plain", "plain", "pooled as plain (not encrypted), after 1 rounds of local training (no DP)"),
    ("plain", "dp", "pooled as plain (not encrypted), after 1 rounds of DP-SGD"),
])
def test_basis_says_when_pooling_was_not_encrypted_or_training_not_private(tmp_path: Path, encoding: str, mode: str,
                                                                         expected: str) -> None:
    assert expected in (federated_basis(_federated_run(tmp_path, encoding, mode, rounds=1)) or "")


def test_missing_inputs_leave_their_line_out(tmp_path: Path) -> None:
    assert final_lines({}) == []
    assert final_lines({"evaluation": tmp_path, "run:federated": tmp_path}) == []  # nothing written there
