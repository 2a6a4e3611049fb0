"""The product task (early + full fusion networks) through a DP+HE round and the encrypted pooled evaluation.

No Flower here (the simulation test drives the same functions through the apps): two sites train both
modes in one DP-SGD run, the server adds ciphertexts, the sites score their patients and pool their
evaluation under CKKS, a key holder reads the pooled metrics, and ``fedresponse evaluate`` reports the run.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from evaluation.metrics import read_predictions
from fedresponse.cli import app
from fedresponse.federation import pooled_summary
from fl_client.federated import ClientSettings, SiteKeys, apply_global_model, fusion_task, seeded_generator, site_round
from fl_client.pooled_evaluation import pool_phase, score_phase
from fl_client.train import SiteInputs, save_site_inputs
from fl_server import pooling
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

SITES = ("S01", "S02")


def _with_kind(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """The task reads configs/model.yaml; this run's product model is ``kind`` (the real presets otherwise)."""
    import models.config

    load = models.config.load_model_config

    def load_with_kind(path: Path) -> models.config.ModelSettings:
        settings = load(path)
        return settings.model_copy(update={"model": settings.model.model_copy(update={"kind": kind})})

    monkeypatch.setattr(models.config, "load_model_config", load_with_kind)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wide", "fusion"])  # the default product model, and the fusion net
def test_fusion_task_trains_both_modes_and_pools_its_evaluation_encrypted(tmp_path: Path, kind: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # 6 held-out patients per site: the pooling identity is checked with the small-cell rule off, as in
    # tests/fl_server/test_pooled_evaluation.py (the rule has its own tests: tests/evaluation/test_small_cells.py)
    monkeypatch.setattr("fl_client.pooled_evaluation._min_cell_size", lambda: 1)
    _with_kind(monkeypatch, kind)
    records = make_records(48, seed=5, sites=2)
    for r in records[::5]:  # durable benefit unknown (censored before the landmark): no full-mode label
        r.responder["full"], r.label_day["full"] = math.nan, math.inf
    for site in SITES:
        inputs = SiteInputs(site, [r for r in records if r.site == site], [f"g{i}" for i in range(N_GLOBAL)],
                            GLOBAL_GROUPS, [f"c{i}" for i in range(N_CLINICAL)])
        save_site_inputs(inputs, tmp_path / "inputs" / site / "model_inputs.pt")
    write_key_files(tmp_path / "keys")
    keys = SiteKeys(KeyInfo.read(tmp_path / "keys" / "site" / "keyinfo.json"),
                    load_site_context(tmp_path / "keys" / SECRET_CONTEXT))
    public = load_public_context(tmp_path / "keys" / PUBLIC_CONTEXT)
    settings = ClientSettings(mode="dp-he", local_epochs=1, batch_size=8, noise_multiplier=1.0, epsilon_budget=50.0,
                              accountant="prv", cutoff_source="training-histograms")
    run = tmp_path / "run"
    tasks = {s: fusion_task(s, tmp_path / "inputs" / s, settings) for s in SITES}
    updates = [site_round(1, t.model_fn, t.data, None, settings, keys, run / "sites" / s, t.train_fn)
               for s, t in tasks.items()]
    meta = updates[0].meta
    exp = Expectation(1, meta.layout_digest, meta.length, keys.info.key_id, "ckks", keys.params)
    report = aggregate_round([u.to_record() for u in updates], [], 2, exp, public, min_updates=2)
    assert report.global_model is not None and report.global_model.total_examples == 2 * 18  # 75 % of 24
    params = dict(tasks["S01"].model_fn().named_parameters())
    assert {name.split(".")[0] for name in params} == {"early", "full"}  # both modes' networks in one update
    assert meta.length == sum(p.numel() for p in params.values())  # every parameter travels, nothing else
    if kind == "wide":  # the product model is the linear path alone: no deep branch trained or sent
        assert all(name.split(".")[1] == "wide" for name in params)
    else:
        assert meta.length > 20_000 and any(name.split(".")[1] == "stgcn" for name in params)
    for site in SITES:  # one DP-SGD run per round for both modes: 3 steps (18 patients, batch 8), one ledger row
        assert [(r.round, r.steps) for r in read_ledger(run / "sites" / site / "privacy_ledger.csv")] == [(1, 3)]
    histograms = []
    for site, task in tasks.items():
        model = task.model_fn()
        apply_global_model(model, report.global_model, keys)
        scalars, update = score_phase(task, model, 1, settings, keys, run / "sites" / site)
        assert scalars == {"n_test": 6.0} and update is not None and update.meta.encoding == "ckks"
        histograms.append(update.to_record())
        predictions = read_predictions(run / "sites" / site / "predictions.csv")  # the evaluation format
        assert len(predictions) == 48 and predictions.groupby("MODE").size().to_dict() == {"early": 24, "full": 24}
    layout = pooling.majority_layout(histograms)
    assert layout is not None
    summed = aggregate_round(histograms, [], 2, pooling.expectation(1, layout, keys.info, "ckks"), public, 2)
    assert summed.global_model is not None
    pooled = [pool_phase(t, summed.global_model, 1, settings, keys, run / "sites" / s) for s, t in tasks.items()]
    cutoffs, refused = pooling.agreed_cutoffs({s: c for s, (c, _) in zip(SITES, pooled, strict=True)})
    assert refused == {} and set(cutoffs) == {"early", "full"}
    exp = pooling.expectation(1, pooling.aggregate_layout(), keys.info, "ckks")
    aggregate = aggregate_round([u.to_record() for _, u in pooled], [], 2, exp, public, 2).global_model
    assert aggregate is not None
    pooling.save_pooled_aggregate(run, aggregate, cutoffs)
    comparison = pooled_summary(run, keys=tmp_path / "keys")
    assert comparison is not None and comparison["centralized"] is None
    _check_against_test_patients(run, records, settings.seed, comparison)
    _check_evaluate_command(run, tmp_path)


def _check_against_test_patients(run: Path, records: list, seed: int, comparison: dict) -> None:
    """The pooled AUC per mode matches scikit-learn on the held-out patients' rows (within the binning bound)."""
    test_ids = []
    for site in SITES:  # the task's seeded 75/25 split, as the site draws it
        ids = [r.usubjid for r in records if r.site == site]
        order = torch.randperm(len(ids), generator=seeded_generator(seed, site, "split", 0)).tolist()
        test_ids += [ids[i] for i in order[18:]]
    rows = pd.concat([read_predictions(run / "sites" / s / "predictions.csv") for s in SITES])
    federated = comparison["federated"]
    assert federated["n_test"] == 12
    by_id = {r.usubjid: r for r in records}
    saved = json.loads((run / "pooled_metrics.json").read_text())
    for mode in ("early", "full"):  # each mode against its own task's label, on the patients that have one
        part = rows[rows["MODE"] == mode].set_index("USUBJID").loc[test_ids]
        assert part["LABEL"].fillna(-1).tolist() == [by_id[u].responder[mode] if math.isfinite(by_id[u].responder[mode])
                                                     else -1 for u in part.index]
        part = part[part["LABEL"].notna()]
        assert saved[mode]["n"] == len(part)  # the mode's own held-out patients with a label
        exact = roc_auc_score(part["LABEL"], part["SCORE"])
        assert abs(federated[mode]["auc"] - exact) <= federated[mode]["auc_binning_bound"] + 1e-12
    assert saved["early"]["auc"] == federated["early"]["auc"] and saved["n"] == 12


def _check_evaluate_command(run: Path, tmp_path: Path) -> None:
    """`fedresponse evaluate RUN --out DIR --keys KEYDIR` reports the federated run (both modes, every patient)."""
    out = tmp_path / "evaluation"
    result = CliRunner().invoke(app, ["evaluate", str(run), "--out", str(out), "--keys", str(tmp_path / "keys")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    cutoffs = json.loads((run / "cutoffs.json").read_text())
    assert metrics["pooling"]["codec"] == "CkksCodec" and metrics["pooled"]["n"] == 48
    assert metrics["cutoffs"] == {"early": cutoffs["early"], "full": cutoffs["full"]}
    assert set(metrics["sites"]) == set(SITES) and (out / "report.html").exists()
    # the report's AUC rests on the held-out rows (6 per site): a site whose held-out classes fall under the
    # protocol's min_cell_size contributes nothing, and an AUC left without contributors says why
    suppressed = {(row["site"], row["statistic"]) for row in metrics["pooled"]["suppressed"]}
    for mode in ("early", "full"):
        block = metrics["pooled"][mode]
        if block["auc"] is None:
            assert block["auc_not_estimable"] and {(site, mode) for site in SITES} <= suppressed
        else:
            assert np.isfinite(block["auc"])


def test_dp_loss_decomposes_over_patients(tmp_path: Path) -> None:
    """Issue 14: the DP runs' loss is a sum of per-patient terms (no Cox risk set, no per-batch label count), so
    Opacus' per-sample clipping bounds each patient's influence: B · L(batch) equals the sum of L over
    one-patient batches, while the product loss (Cox term over the batch) does not decompose."""
    from fl_client.federated import per_sample_two_mode_loss
    from fl_client.two_mode import TWO_MODE_INPUTS, two_mode_loss
    from models.config import LossWeightSettings

    records = make_records(24, seed=9, sites=1)
    inputs = SiteInputs("S01", records, [f"g{i}" for i in range(N_GLOBAL)], GLOBAL_GROUPS,
                        [f"c{i}" for i in range(N_CLINICAL)])
    save_site_inputs(inputs, tmp_path / "S01" / "model_inputs.pt")
    task = fusion_task("S01", tmp_path / "S01", ClientSettings(mode="dp"))
    torch.manual_seed(0)
    model = task.model_fn().eval()
    batch = list(task.data.train.tensors)
    weights = LossWeightSettings()
    with torch.no_grad():
        whole = per_sample_two_mode_loss(model(*batch[:TWO_MODE_INPUTS]), batch, weights) * len(batch[0])
        singles = [per_sample_two_mode_loss(model(*[t[i:i + 1] for t in batch[:TWO_MODE_INPUTS]]),
                                            [t[i:i + 1] for t in batch], weights) for i in range(len(batch[0]))]
        coupled = two_mode_loss(model(*batch[:TWO_MODE_INPUTS]), batch, weights) * len(batch[0])
        coupled_singles = [two_mode_loss(model(*[t[i:i + 1] for t in batch[:TWO_MODE_INPUTS]]),
                                         [t[i:i + 1] for t in batch], weights) for i in range(len(batch[0]))]
    assert float(whole) == pytest.approx(float(sum(singles)), rel=1e-5)
    assert float(coupled) != pytest.approx(float(sum(coupled_singles)), rel=1e-3)
