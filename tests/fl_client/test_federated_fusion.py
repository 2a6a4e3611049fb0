"""The product task (fusion network on a site's model_inputs.pt) through a DP+HE federated round, no Flower."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from evaluation.evaluate import load_run
from evaluation.metrics import read_predictions
from fedresponse.federation import pooled_summary
from fl_client.federated import (
    ClientSettings,
    SiteKeys,
    apply_global_model,
    fusion_task,
    seeded_generator,
    site_round,
)
from fl_client.train import SiteInputs, save_site_inputs
from fl_server.strategy import aggregate_round
from fl_server.validation import Expectation
from privacy.accounting import read_ledger
from privacy.ckks import (
    PUBLIC_CONTEXT,
    SECRET_CONTEXT,
    KeyInfo,
    load_public_context,
    load_site_context,
    write_key_files,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from model_records import GLOBAL_GROUPS, N_CLINICAL, N_GLOBAL, make_records


@pytest.mark.slow
def test_fusion_task_dp_he_round(tmp_path: Path) -> None:
    records = make_records(48, seed=5, sites=2)
    for site in ("S01", "S02"):
        inputs = SiteInputs(site, [r for r in records if r.site == site], [f"g{i}" for i in range(N_GLOBAL)],
                            GLOBAL_GROUPS, [f"c{i}" for i in range(N_CLINICAL)])
        save_site_inputs(inputs, tmp_path / site / "model_inputs.pt")
    write_key_files(tmp_path / "keys")
    keys = SiteKeys(KeyInfo.read(tmp_path / "keys" / "site" / "keyinfo.json"),
                    load_site_context(tmp_path / "keys" / SECRET_CONTEXT))
    public = load_public_context(tmp_path / "keys" / PUBLIC_CONTEXT)
    settings = ClientSettings(mode="dp-he", local_epochs=1, batch_size=8, noise_multiplier=1.0, epsilon_budget=50.0,
                              accountant="prv")
    tasks = {s: fusion_task(s, tmp_path / s, settings) for s in ("S01", "S02")}
    site_metrics: dict[str, Any] = {}
    updates = [site_round(1, t.model_fn, t.data, None, settings, keys, tmp_path / "state" / s, t.train_fn)
               for s, t in tasks.items()]
    meta = updates[0].meta
    exp = Expectation(1, meta.layout_digest, meta.length, keys.info.key_id, "ckks", keys.params)
    report = aggregate_round([u.to_record() for u in updates], [], 2, exp, public, min_updates=2)
    assert report.global_model is not None and report.global_model.total_examples == 2 * 18  # 75 % of 24
    assert meta.length > 10_000  # the real network, not a toy
    for site, task in tasks.items():
        model = task.model_fn()
        apply_global_model(model, report.global_model, keys)
        assert task.evaluate_fn is not None
        metrics: dict[str, Any] = task.evaluate_fn(model, task.data, tmp_path / "run" / "sites" / site)
        assert metrics["n_test"] == 6 and (np.isnan(metrics["auc"]) or 0.0 <= metrics["auc"] <= 1.0)
        assert sum(metrics["early_hist_pos_test"]) + sum(metrics["early_hist_neg_test"]) == 6
        predictions = read_predictions(tmp_path / "run" / "sites" / site / "predictions.csv")  # the evaluation format
        assert len(predictions) == 24 and set(predictions["MODE"]) == {"early"} and set(predictions["SITEID"]) == {site}
        assert read_ledger(tmp_path / "state" / site / "privacy_ledger.csv")[0].steps == 3
        site_metrics[site] = metrics
    _check_pooled_summary(tmp_path / "run", site_metrics, records, settings.seed)


def _check_pooled_summary(run: Path, site_metrics: dict[str, Any], records: list[Any], seed: int) -> None:
    """The run's predictions load for `fedresponse evaluate`; the pooled AUC matches sklearn on the test patients."""
    (run / "site_metrics.json").write_text(json.dumps(site_metrics))
    comparison = pooled_summary(run)
    assert comparison is not None and comparison["centralized"] is None
    inputs = load_run(run)
    assert [s.site for s in inputs.sites] == ["S01", "S02"] and inputs.cutoffs["early"] == comparison["federated"][
        "cutoff"]
    test_ids = []
    for site in ("S01", "S02"):  # the task's seeded 75/25 split, as the site draws it
        ids = [r.usubjid for r in records if r.site == site]
        order = torch.randperm(len(ids), generator=seeded_generator(seed, site, "split", 0)).tolist()
        test_ids += [ids[i] for i in order[18:]]
    rows = pd.concat([s.predictions for s in inputs.sites]).set_index("USUBJID").loc[test_ids]
    exact = roc_auc_score(rows["LABEL"], rows["SCORE"])
    federated = comparison["federated"]
    assert federated["n_test"] == 12
    assert abs(federated["auc"] - exact) <= federated["auc_binning_bound"] + 1e-12
