"""The encrypted pooled evaluation: sites send CKKS site vectors, the server only adds, a key holder reads the sum.

Reference: the same statistics computed directly on the union of the sites' patient rows (scikit-learn
AUC, :func:`evaluation.stats.youden_cutoff` on patient rows, confusion counts by hand).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tenseal as ts
from sklearn.metrics import roc_auc_score
from torch import nn

from evaluation.stats import youden_cutoff
from fedresponse.federation import comparison_line, pooled_summary
from fl_client.federated import ClientSettings, SiteData, SiteKeys, SiteTask, write_site_predictions
from fl_client.pooled_evaluation import pool_phase, score_phase, training_histogram_layout
from fl_server import pooling
from fl_server.strategy import NotEnoughUpdates, aggregate_round
from privacy.ckks import (
    PUBLIC_CONTEXT,
    SECRET_CONTEXT,
    KeyInfo,
    load_public_context,
    load_site_context,
    write_key_files,
)
from privacy.update import ModelUpdate

SITES = {"S01": 44, "S02": 36, "S03": 52}
SETTINGS = ClientSettings(mode="dp-he", cutoff_source="training-histograms")  # the Youden path (issue 14: opt-in)


@pytest.fixture(autouse=True)
def _no_small_cell_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """These sites hold 9-13 held-out patients: the pooled = union identities are checked with the protocol's
    small-cell rule off (min_cell_size 1); tests/evaluation/test_small_cells.py checks the rule itself."""
    monkeypatch.setattr("fl_client.pooled_evaluation._min_cell_size", lambda: 1)


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keys")
    write_key_files(out)
    return out


def _keys(keydir: Path) -> tuple[SiteKeys, ts.Context]:
    site = SiteKeys(KeyInfo.read(keydir / "site" / "keyinfo.json"), load_site_context(keydir / SECRET_CONTEXT))
    return site, load_public_context(keydir / PUBLIC_CONTEXT)


def _site_rows(site: str, n: int, rng: np.random.Generator) -> pd.DataFrame:
    y = rng.integers(0, 2, n)
    early = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0.0, 1.0).round(6)
    full = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0.0, 1.0).round(6)
    days = rng.integers(20, 600, n)
    ids = [f"STUDY-{site}-{i + 1:04d}" for i in range(n)]
    rows = [{"USUBJID": ids[i], "MODE": mode, "SCORE": score[i], "LABEL": int(y[i]), "PFS_DAYS": int(days[i]),
             "PFS_EVENT": int(i % 3 != 0)} for mode, score in (("early", early), ("full", full)) for i in range(n)]
    return pd.DataFrame(rows)


def _tasks(tmp_path: Path) -> tuple[dict[str, SiteTask], dict[str, pd.DataFrame]]:
    rng = np.random.default_rng(5)
    tasks, frames = {}, {}
    for site, n in SITES.items():
        frame = _site_rows(site, n, rng)
        ids = list(dict.fromkeys(frame["USUBJID"]))
        cut = round(0.75 * n)

        def evaluate(model: nn.Module, data: SiteData, site_dir: Path, frame: pd.DataFrame = frame) -> dict[str, float]:
            lines = [",".join(str(v) for v in row) for row in frame.itertuples(index=False)]
            write_site_predictions(site_dir / "predictions.csv", lines)
            return {"n_test": 11.0}

        tasks[site] = SiteTask(nn.Identity, SiteData(site, list(range(n))), lambda *a: a, evaluate,
                               (tuple(ids[:cut]), tuple(ids[cut:])))
        frames[site] = frame.assign(SPLIT=["train" if u in ids[:cut] else "test" for u in frame["USUBJID"]])
    return tasks, frames


def _server_never_decrypts(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the server path tried to decrypt a ciphertext")

    monkeypatch.setattr(ts.CKKSVector, "decrypt", refuse)


def test_pooled_evaluation_equals_the_union_of_the_sites(tmp_path: Path, keydir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    site_keys, public = _keys(keydir)
    info = site_keys.info
    tasks, frames = _tasks(tmp_path)
    first = {s: score_phase(t, nn.Identity(), 3, SETTINGS, site_keys, tmp_path / s) for s, t in tasks.items()}
    records = [update.to_record() for _, update in first.values() if update is not None]
    assert all(m == {"n_test": 11.0} for m, _ in first.values()) and len(records) == 3
    assert all(u.meta.encoding == "ckks" and u.meta.layout_digest == training_histogram_layout().digest
               for _, u in first.values() if u is not None)
    with monkeypatch.context() as server:  # the coordinating centre: public context, additions only
        _server_never_decrypts(server)
        layout = pooling.majority_layout(records)
        assert layout is not None
        histograms = aggregate_round(records, [], 3, pooling.expectation(3, layout, info, "ckks"), public, 3)
    assert histograms.global_model is not None and histograms.global_model.total_examples == sum(
        round(0.75 * n) for n in SITES.values())
    second = {s: pool_phase(t, histograms.global_model, 3, SETTINGS, site_keys, tmp_path / s) for s, t in tasks.items()}
    with monkeypatch.context() as server:
        _server_never_decrypts(server)
        cutoffs, refused = pooling.agreed_cutoffs({s: c for s, (c, _) in second.items()})
        exp = pooling.expectation(3, pooling.aggregate_layout(), info, "ckks")
        pooled = aggregate_round([u.to_record() for _, u in second.values()], [], 3, exp, public, 3)
        assert pooled.global_model is not None and refused == {}
        pooling.save_pooled_aggregate(tmp_path / "run", pooled.global_model, cutoffs)
    union = pd.concat(frames.values())
    central = tmp_path / "central"
    (central / "sites" / "S01").mkdir(parents=True)  # a centralized run: out-of-fold rows of every patient
    union.drop(columns="SPLIT").to_csv(central / "sites" / "S01" / "predictions.csv", index=False)
    (central / "metrics.json").write_text(json.dumps(
        {m: {"fusion": {"auc": 0.7, "auc_ci": [0.6, 0.8]}} for m in ("early", "full")}))
    comparison = pooled_summary(tmp_path / "run", central, keydir)
    assert comparison is not None
    assert comparison["centralized"]["model"] == "fusion"  # a run without metrics.json "model" predates model.kind
    metrics = json.loads((tmp_path / "run" / "pooled_metrics.json").read_text())
    assert metrics["n_test"] == comparison["federated"]["n_test"] == len(union[union.SPLIT == "test"]) // 2
    for mode in ("early", "full"):
        train = union[(union.SPLIT == "train") & (union.MODE == mode)]
        test = union[(union.SPLIT == "test") & (union.MODE == mode)]
        assert abs(cutoffs[mode] - youden_cutoff(train.LABEL.to_numpy(), train.SCORE.to_numpy())) <= 1 / 200 + 1e-12
        block = metrics[mode]
        exact = roc_auc_score(test.LABEL, test.SCORE)
        assert abs(block["auc"] - exact) <= block["auc_binning_bound"] + 1e-12
        called = test.SCORE >= cutoffs[mode]
        assert block["confusion"] == {"tp": int((called & (test.LABEL == 1)).sum()),
                                      "fp": int((called & (test.LABEL == 0)).sum()),
                                      "tn": int((~called & (test.LABEL == 0)).sum()),
                                      "fn": int((~called & (test.LABEL == 1)).sum())}
        assert comparison["federated"][mode]["auc"] == block["auc"]
        every = union[union.MODE == mode]  # the centralized side, judged against the same LABEL
        assert comparison["centralized"][mode]["auc"] == pytest.approx(roc_auc_score(every.LABEL, every.SCORE))
        assert comparison["centralized"]["metrics_json"][mode]["auc"] == 0.7
    saved = json.loads((tmp_path / "run" / "cutoffs.json").read_text())
    assert {m: saved[m] for m in ("early", "full")} == cutoffs and saved["sites"] == sorted(SITES)
    line = comparison_line(comparison)
    central_full = comparison["centralized"]["full"]
    assert f"full AUC federated {comparison['federated']['full']['auc']:.3f}" in line
    assert f"centralized {central_full['auc']:.3f} ({central_full['auc_ci'][0]:.3f}–" in line
    with pytest.raises(FileNotFoundError, match="KEYDIR"):
        pooled_summary(tmp_path / "run", keys=None)


def _bad_records(good: ModelUpdate, other: ModelUpdate) -> list[tuple[str, dict[str, Any], str]]:
    record = good.to_record()
    return [
        ("other layout", other.to_record() | {"site": "X01"}, "layout hash"),
        ("other key", record | {"site": "X02", "key_id": "0" * 32}, "key id"),
        ("stale round", record | {"site": "X03", "round": 2}, "round"),
        ("truncated", record | {"site": "X04", "chunks": [c[:100] for c in good.chunks]}, "does not load"),
        ("extra chunk", record | {"site": "X05", "chunks": [*good.chunks, good.chunks[0]]}, "chunks"),
        ("nan metadata", record | {"site": "X06", "epsilon": float("nan")}, "non-finite"),
        ("plaintext counts", record | {"site": "X07", "encoding": "plain"}, "encoding"),
    ]


def test_malformed_evaluation_vectors_are_refused_with_a_reason(tmp_path: Path, keydir: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    site_keys, public = _keys(keydir)
    tasks, _ = _tasks(tmp_path)
    _, good = score_phase(tasks["S01"], nn.Identity(), 3, SETTINGS, site_keys, tmp_path / "S01")
    assert good is not None
    other = replace(good, meta=replace(good.meta, layout_digest="f" * 64))
    exp = pooling.expectation(3, (good.meta.layout_digest, good.meta.length), site_keys.info, "ckks")
    bad = _bad_records(good, other)
    with caplog.at_level(logging.WARNING, logger="fl_server.strategy"):
        report = aggregate_round([good.to_record()] + [r for _, r, _ in bad], [], 8, exp, public, 1)
    assert report.accepted == ["S01"]
    for name, record, reason in bad:
        assert reason in report.rejected[record["site"]], name
        assert record["site"] in caplog.text
    with pytest.raises(NotEnoughUpdates):
        aggregate_round([r for _, r, _ in bad], [], 7, exp, public, 1)


@pytest.mark.parametrize(("reported", "agreed", "refused"), [
    ({"S01": {"early": 0.4, "full": 0.5}, "S02": {"early": 0.4, "full": 0.5}}, {"early": 0.4, "full": 0.5}, set()),
    ({"S01": {"early": 0.4, "full": 0.5}, "S02": {"early": 0.4, "full": 0.5}, "S03": {"early": 0.41, "full": 0.5}},
     {"early": 0.4, "full": 0.5}, {"S03"}),
    ({"S01": {"early": 0.4}, "S02": {"early": 0.4, "full": 1.5}}, {}, {"S01", "S02"}),
])
def test_sites_with_other_cutoffs_are_left_out(reported: dict[str, dict[str, float]], agreed: dict[str, float],
                                               refused: set[str]) -> None:
    cutoffs, why = pooling.agreed_cutoffs(reported)
    assert cutoffs == agreed and set(why) == refused


def test_pooled_aggregate_files_are_checked_when_read(tmp_path: Path, keydir: Path) -> None:
    site_keys, public = _keys(keydir)
    tasks, _ = _tasks(tmp_path)
    _, update = score_phase(tasks["S02"], nn.Identity(), 1, SETTINGS, site_keys, tmp_path / "S02")
    assert update is not None
    exp = pooling.expectation(1, (update.meta.layout_digest, update.meta.length), site_keys.info, "ckks")
    summed = aggregate_round([update.to_record()], [], 1, exp, public, 1).global_model
    assert summed is not None
    pooling.save_pooled_aggregate(tmp_path, summed, {"early": 0.3, "full": 0.6})
    back, cutoffs = pooling.load_pooled_aggregate(tmp_path)
    assert back == summed and cutoffs == {"early": 0.3, "full": 0.6}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    (tmp_path / pooling.AGGREGATE_BIN).write_bytes((tmp_path / pooling.AGGREGATE_BIN).read_bytes()[:-10])
    with pytest.raises(FileNotFoundError, match="index says otherwise"):
        pooling.load_pooled_aggregate(tmp_path)


def test_protocol_cutoffs_release_no_training_histogram(tmp_path: Path, keydir: Path) -> None:
    """Issue 14 (default ``cutoff-source: protocol``): no training-patient histogram leaves a site; every site calls
    a responder at score >= 0.5 and its encrypted held-out aggregate counts exactly that (confusion by hand)."""
    from evaluation.pooled import AggregateLayout, PlainCodec, pool, pooled_metrics
    from fl_client.pooled_evaluation import PROTOCOL_CUTOFF
    from privacy.ckks import decrypt_vector

    site_keys, _ = _keys(keydir)
    tasks, frames = _tasks(tmp_path)
    settings = ClientSettings(mode="dp-he")
    assert settings.cutoff_source == "protocol"
    for site, task in tasks.items():
        metrics, histograms = score_phase(task, nn.Identity(), 3, settings, site_keys, tmp_path / site)
        assert histograms is None and metrics == {"n_test": 11.0}
        cutoffs, update = pool_phase(task, None, 3, settings, site_keys, tmp_path / site)
        assert cutoffs == {"early": PROTOCOL_CUTOFF, "full": PROTOCOL_CUTOFF}
        vector = decrypt_vector(site_keys.context, update.chunks, AggregateLayout().size)
        block = pooled_metrics(pool([vector], PlainCodec(), AggregateLayout()), cutoffs, AggregateLayout())
        test = frames[site][(frames[site].SPLIT == "test") & (frames[site].MODE == "early")]
        called = test.SCORE >= 0.5
        assert block["early"]["confusion"]["tp"] == int((called & (test.LABEL == 1)).sum())
        assert block["early"]["confusion"]["fp"] == int((called & (test.LABEL == 0)).sum())
    with pytest.raises(ValueError, match="needs the pooled training histograms"):
        pool_phase(tasks["S01"], None, 3, SETTINGS, site_keys, tmp_path / "S01")
