"""``fedresponse evaluate RUN --keys KEYDIR`` is the key holder's step on a federated run (through the CLI).

The run is built by the real site and server phases of the pooled evaluation (``fl_client.pooled_evaluation``
score/pool, ``fl_server.strategy.aggregate_round`` on ciphertexts with the public context,
``fl_server.pooling.save_pooled_aggregate``) on seeded site predictions that carry ``SPLIT`` as a federated
site writes it — no Flower simulation (that path is covered by tests/fl_client). Reference: scikit-learn on
the union of the sites' held-out rows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from torch import nn
from typer.testing import CliRunner

from fedresponse.cli import app
from fl_client.federated import ClientSettings, SiteData, SiteKeys, SiteTask, write_site_predictions
from fl_client.pooled_evaluation import pool_phase, score_phase
from fl_server import pooling
from fl_server.strategy import aggregate_round
from privacy.ckks import (
    PUBLIC_CONTEXT,
    SECRET_CONTEXT,
    KeyInfo,
    load_public_context,
    load_site_context,
    write_key_files,
)

SITES = {"S01": 80, "S02": 72}  # 20 and 18 held out: no cell under statistics.min_cell_size, nothing suppressed
SETTINGS = ClientSettings(mode="dp-he", cutoff_source="training-histograms")
ROUND = 3


def _frame(site: str, n: int, rng: np.random.Generator) -> pd.DataFrame:
    y = rng.integers(0, 2, n)
    ids = [f"FEDRESP-{site}-{i + 1:04d}" for i in range(n)]
    split = ["train" if i < round(0.75 * n) else "test" for i in range(n)]
    days = rng.integers(20, 500, n)
    rows = []
    for mode, lift in (("early", 0.2), ("full", 0.3)):
        score = np.clip(rng.normal(0.4 + lift * y, 0.2), 0.0, 1.0).round(6)
        rows += [{"USUBJID": ids[i], "MODE": mode, "SCORE": score[i], "LABEL": int(y[i]), "PFS_DAYS": int(days[i]),
                  "PFS_EVENT": int(i % 3 != 0), "SPLIT": split[i]} for i in range(n)]
    return pd.DataFrame(rows)


def _task(frame: pd.DataFrame) -> SiteTask:
    ids = list(dict.fromkeys(frame["USUBJID"]))
    train = tuple(u for u in ids if (frame.loc[frame["USUBJID"] == u, "SPLIT"] == "train").all())
    test = tuple(u for u in ids if u not in train)

    def evaluate(model: nn.Module, data: SiteData, site_dir: Path) -> dict[str, float]:
        lines = [",".join(str(v) for v in row) for row in frame.itertuples(index=False)]
        write_site_predictions(site_dir / "predictions.csv", lines, split=True)
        return {"n_test": float(len(test))}

    return SiteTask(nn.Identity, SiteData(frame["USUBJID"].iloc[0].split("-")[1], list(range(len(ids)))),
                    lambda *a: a, evaluate, (train, test))


@pytest.fixture(scope="module")
def federated_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run directory as ``fedresponse train`` leaves it after the encrypted pooled evaluation."""
    root = tmp_path_factory.mktemp("keyholder")
    keydir, run = root / "keys", root / "run"
    write_key_files(keydir)
    info = KeyInfo.read(keydir / "site" / "keyinfo.json")
    site_keys = SiteKeys(info, load_site_context(keydir / SECRET_CONTEXT))
    public = load_public_context(keydir / PUBLIC_CONTEXT)
    rng = np.random.default_rng(17)
    tasks = {site: _task(_frame(site, n, rng)) for site, n in SITES.items()}
    sites = {site: run / "sites" / site for site in SITES}
    first = [score_phase(t, nn.Identity(), ROUND, SETTINGS, site_keys, sites[s])[1] for s, t in tasks.items()]
    records = [u.to_record() for u in first if u is not None]
    layout = pooling.majority_layout(records)
    assert layout is not None
    histograms = aggregate_round(records, [], len(SITES), pooling.expectation(ROUND, layout, info, "ckks"), public,
                                 len(SITES))
    assert histograms.global_model is not None
    second = {s: pool_phase(t, histograms.global_model, ROUND, SETTINGS, site_keys, sites[s]) for s, t in tasks.items()}
    cutoffs, refused = pooling.agreed_cutoffs({s: c for s, (c, _) in second.items()})
    assert refused == {}
    exp = pooling.expectation(ROUND, pooling.aggregate_layout(), info, "ckks")
    pooled = aggregate_round([u.to_record() for _, u in second.values()], [], len(SITES), exp, public, len(SITES))
    assert pooled.global_model is not None
    pooling.save_pooled_aggregate(run, pooled.global_model, cutoffs)
    # what training wrote earlier: a comparison against a centralized run that is no longer on this machine
    (run / "comparison.json").write_text(json.dumps({"federated": {}, "centralized": {
        "run": str(root / "gone"), "early": {"auc": 0.71, "auc_ci": [0.6, 0.8], "n": 72}}}))
    other = root / "other_keys"
    write_key_files(other)
    return {"run": run, "keys": keydir, "other_keys": other}


def _union_test(run: Path) -> pd.DataFrame:
    union = pd.concat([pd.read_csv(p) for p in sorted(run.rglob("predictions.csv"))], ignore_index=True)
    return union[union["SPLIT"] == "test"]


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["evaluate", "--no-pdf", *args])
    return result.exit_code, " ".join(result.output.split())


def test_without_keys_the_report_says_the_aggregate_needs_the_site_key(federated_run: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(federated_run["run"], run)
    code, output = _invoke(str(run), "--out", str(tmp_path / "out"))
    assert code == 0, output
    assert "CKKS-encrypted" in output and "--keys KEYDIR" in output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["pooled_heldout"]["status"] == "encrypted"
    assert "only a key holder can read it" in (tmp_path / "out" / "report.html").read_text()
    assert not (run / "pooled_metrics.json").exists()  # nothing decrypted without the key
    assert metrics["pooled"]["suppressed"] == []
    assert metrics["pooled"]["n_heldout"] == _union_test(run)["USUBJID"].nunique()


def test_with_keys_the_key_holder_decrypts_the_held_out_aggregate(federated_run: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    run = federated_run["run"]
    code, output = _invoke(str(run), "--out", str(tmp_path / "out"), "--keys", str(federated_run["keys"]))
    assert code == 0, output
    test = _union_test(run)
    n_test = test["USUBJID"].nunique()
    assert f"federated pooled held-out AUC (n={n_test})" in output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    held = metrics["pooled_heldout"]
    written = json.loads((run / "pooled_metrics.json").read_text())
    assert held["status"] == "decrypted" and held["n_test"] == written["n_test"] == n_test
    assert held["sites"] == sorted(SITES)
    cutoffs = json.loads((run / "cutoffs.json").read_text())
    for mode in ("early", "full"):
        rows = test[test["MODE"] == mode]
        block = held[mode]
        assert abs(block["auc"] - roc_auc_score(rows["LABEL"], rows["SCORE"])) <= block["auc_binning_bound"] + 1e-12
        assert block["auc"] == written[mode]["auc"] and block["cutoff"] == cutoffs[mode]
        # the report's own pooled block (site aggregates pooled under CKKS here) rests on the same held-out rows
        assert metrics["pooled"][mode]["auc"] == pytest.approx(block["auc"], abs=1e-9)
        assert metrics["pooled"][mode]["n"] == n_test
    report = " ".join((tmp_path / "out" / "report.html").read_text().split())
    assert "Federated pooled evaluation, decrypted by the key holder" in report
    assert f"<td>{held['full']['auc']:.2f} (" in report  # AUC with its CI in one cell
    comparison = json.loads((run / "comparison.json").read_text())
    assert comparison["federated"]["full"]["auc"] == held["full"]["auc"]
    assert comparison["centralized"]["early"]["auc"] == 0.71  # the earlier comparison is kept, with a note
    assert "kept from the earlier comparison" in comparison["centralized"]["note"]


def test_a_key_from_another_ceremony_fails_cleanly(federated_run: dict[str, Path], tmp_path: Path) -> None:
    code, output = _invoke(str(federated_run["run"]), "--out", str(tmp_path / "out"), "--keys",
                           str(federated_run["other_keys"]))
    assert code == 2 and "evaluate failed" in output and "KEYDIR" in output
    assert not (tmp_path / "out").exists()
