"""Centralized training and evaluation: folds, baselines, metrics against hand counts, the run directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))  # the shared synthetic records
from model_records import GLOBAL_GROUPS, N_CLINICAL, make_records, with_deep_heads

import fl_client.centralized as centralized
from evaluation.metrics import read_predictions
from fl_client.baselines import BASELINES, oof_cutoff, recist_scores, wide_features
from fl_client.centralized import (
    OutOfFold,
    PooledCohort,
    delta_features,
    patient_folds,
    recist_t1_scores,
    run_centralized,
    site_folds,
    summarize,
)
from fl_client.interpret import integrated_gradients
from fl_client.train import Standardizer, to_dataset
from models.config import InputDims, ModelSettings, build_model

TINY = ModelSettings.model_validate({
    "model": {"v_max": 12, "stgcn_channels": [8], "d_model": 8, "embed_dim": 8, "hidden": 8, "dropout": 0.0},
    "train": {"epochs": 2, "batch_size": 16},
    "evaluation": {"cv_folds": 2, "cutoff_folds": 0},  # inner cut-off folds: tested alone (they multiply fits)
})
NAMES = [f"g{i}" for i in range(9)]
CLINICAL = [f"c{i}" for i in range(N_CLINICAL)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_patient_folds_are_disjoint_stratified_and_cover_everyone() -> None:
    records = make_records(40, seed=0)
    folds = list(patient_folds(records, "early", 4, seed=1))
    tested = sorted(i for _, test in folds for i in test)
    assert tested == list(range(40)) and len(folds) == 4
    rate = np.mean([r.responder["early"] for r in records])
    for train, test in folds:
        assert not set(train) & set(test)
        assert abs(np.mean([records[i].responder["early"] for i in test]) - rate) < 0.15


def test_leave_one_site_out_holds_out_exactly_one_site() -> None:
    records = make_records(30, seed=0, sites=3)
    for train, test in site_folds(records):
        assert len({records[i].site for i in test}) == 1
        assert {records[i].site for i in test}.isdisjoint({records[i].site for i in train})


def test_delta_features_are_changes_since_baseline() -> None:
    records = make_records(3, seed=0)
    early, full = delta_features(records, "early"), delta_features(records, "full")
    assert early.shape == (3, 9) and full.shape == (3, 18)
    np.testing.assert_allclose(full[1, 9:], (records[1].globals_[2] - records[1].globals_[0]).numpy())


@pytest.mark.parametrize(("call", "score"), [("CR", 1.0), ("PR", 1.0), ("SD", 0.0), ("PD", 0.0), (None, 0.0)])
def test_recist_t1_rule(call: str | None, score: float) -> None:
    record = make_records(1, seed=0)[0]
    record.recist_t1 = call
    assert recist_t1_scores([record])[0] == score


def test_recist_at_the_last_scan_reads_t2_in_full_mode() -> None:
    record = make_records(1, seed=0)[0]
    record.recist_t1, record.recist_t2 = "SD", "PR"
    assert (recist_scores([record], "early")[0], recist_scores([record], "full")[0]) == (0.0, 1.0)


def test_wide_features_are_the_wide_paths_inputs() -> None:
    """The penalised logistic regression reads exactly what WidePath reads: level, slope per 30 days
    (and curvature) of the chosen columns, then the clinical covariates."""
    records = make_records(3, seed=0)
    early = wide_features(records, "early", [1, 4])
    r = records[2]
    slope = (r.globals_[1, [1, 4]] - r.globals_[0, [1, 4]]) / ((r.graph.days[1] - r.graph.days[0]) / 30.0)
    np.testing.assert_allclose(early[2], np.concatenate([r.globals_[0, [1, 4]], slope, r.clinical]), rtol=1e-5)
    assert wide_features(records, "full", None).shape == (3, (1 + 2 + 1) * 9 + N_CLINICAL)
    dims = InputDims.from_group_names(6, GLOBAL_GROUPS, N_CLINICAL)
    for nodes in (False, True):
        model = build_model("wide", 3, dims, TINY.model.model_copy(update={"wide_nodes": nodes}))
        assert model.wide is not None
        assert model.wide.linear.in_features == wide_features(records[:1], "full", None, nodes).shape[1]


def test_cutoffs_come_from_inner_out_of_fold_scores() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    seen: list[list[int]] = []

    def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        seen.append(sorted(test.tolist()))
        return np.where(labels[test] == 1, 0.4, 0.2)  # out of fold the responders score 0.4

    in_sample = np.where(labels == 1, 0.9, 0.1)  # the optimistic in-sample fit would put the cut at 0.9
    assert oof_cutoff(labels, fit_predict, 3, seed=0, in_sample=in_sample) == pytest.approx(0.4)
    assert sorted(i for fold in seen for i in fold) == list(range(6))  # every patient scored once, out of fold
    assert oof_cutoff(labels, fit_predict, 0, seed=0, in_sample=in_sample) == pytest.approx(0.9)


@pytest.mark.parametrize(("y", "s", "expected"), [
    ([0] * 10 + [1, 1], [*range(10), 9.5, 3], 0.5),  # 90 % specificity at threshold 9: one of two positives
    ([0] * 10 + [1], [*range(10), 20], 1.0),
    ([0, 1], [1.0, 0.0], 0.0),
])
def test_sensitivity_at_90_percent_specificity_by_hand(y: list[int], s: list[float], expected: float) -> None:
    assert centralized.sensitivity_at_specificity(np.array(y), np.array(s, dtype=float)) == pytest.approx(expected)


def test_a_patient_without_t2_is_in_the_early_task_only() -> None:
    records = make_records(4, seed=0)
    records[0].n_scans = 2
    assert records[0] in centralized.records_for(records, "early")
    assert records[0] not in centralized.records_for(records, "full")


def test_summarize_counts_each_patient_against_its_fold_cutoff() -> None:
    oof = OutOfFold(
        usubjid=list("abcdef"), score=[0.9, 0.6, 0.4, 0.7, 0.2, 0.55], risk=[0.0] * 6,
        label=[1, 1, 1, 0, 0, 0], cutoff=[0.5, 0.5, 0.5, 0.8, 0.8, 0.5],
        pfs_days=[100, 200, 300, 50, 60, 70], pfs_event=[True] * 6,
    )
    out = summarize(oof)
    # called: a(.9≥.5) b(.6≥.5) c(.4<.5) | d(.7<.8) e(.2<.8) f(.55≥.5)
    assert (out["tp"], out["fn"], out["tn"], out["fp"]) == (2, 1, 2, 1)
    assert out["sensitivity"] == pytest.approx(2 / 3) and out["specificity"] == pytest.approx(2 / 3)
    assert out["auc"] == pytest.approx(roc_auc_score(oof.label, oof.score))
    assert out["auc_ci"][0] <= out["auc"] <= out["auc_ci"][1]


@pytest.mark.parametrize(("kind", "wide_nodes", "nodes_credited"), [
    ("fusion", True, True),
    ("wide", True, True),  # the linear path reading the pooled node features
    ("wide", False, False),  # the product preset: no node input at all, so no node credit (and no autograd error)
])
def test_attributions_are_complete(kind: str, wide_nodes: bool, nodes_credited: bool) -> None:
    """Integrated gradients: attributions add up to logit(x) − logit(baseline) (completeness axiom)."""
    records = make_records(4, seed=2)
    data = to_dataset(records, "full", 12, Standardizer.fit(records, "full"))
    torch.manual_seed(0)
    settings = TINY.model.model_copy(update={"wide_nodes": wide_nodes})
    model = build_model(kind, 3, InputDims.from_group_names(6, GLOBAL_GROUPS, N_CLINICAL), settings)
    if model.head_response is not None:
        with_deep_heads(model)
    with torch.no_grad():  # the wide path starts at zero too: give it weights, or every attribution is 0
        model.wide.linear.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(12))
    attr = integrated_gradients(model, data, torch.device("cpu"), steps=64)
    inputs = list(data.tensors[:6])
    with torch.no_grad():
        logit = model(*inputs).response
        zero = [inputs[0] * 0, *inputs[1:4], inputs[4] * 0, inputs[5] * 0]
        base = model(*zero).response
    total = attr.nodes.sum((1, 2)) + attr.globals_.sum((1, 2)) + attr.clinical.sum(1)
    np.testing.assert_allclose(total, (logit - base).numpy(), atol=2e-3)
    padding = data.tensors[2].numpy() == 0
    assert np.all(attr.nodes[padding] == 0)  # absent sub-regions get no credit
    assert (np.abs(attr.nodes).sum() > 0) == nodes_credited  # …and present ones do where the logit reads them


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("runs") / "RUN"
    cohort = PooledCohort(make_records(36, seed=5, sites=3), NAMES, GLOBAL_GROUPS, CLINICAL)
    metrics = run_centralized(cohort, out, TINY, torch.device("cpu"), seed=3, oracle_auc=0.81)
    return out, metrics


@pytest.mark.slow
def test_run_writes_the_documented_metrics(run_dir: tuple[Path, dict[str, object]]) -> None:
    out, _ = run_dir
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["oracle_auc"] == 0.81
    assert on_disk["model"] == "wide"  # the product model: configs' default kind
    for block in (on_disk, on_disk["leave_one_site_out"]):
        for mode in ("early", "full"):
            for model in ("wide", "fusion", "stgcn", "transformer", *BASELINES):
                row = block[mode][model]
                assert row["n"] == 36
                low, high = row["auc_ci"]
                assert 0 <= low <= row["auc"] <= high <= 1
                assert 0 <= row["sensitivity"] <= 1 and 0 <= row["specificity"] <= 1
    assert "c_index" in on_disk["early"]["fusion"] and "c_index" not in on_disk["early"]["recist_last"]
    assert on_disk["full"]["fusion"]["auc_dcb12"] is not None  # the T2 model also scored at 12 months
    pseudo = on_disk["early"]["fusion"]["pseudo"]  # the T1 pseudoprogression task of the early model's head
    assert pseudo["n"] == sum(np.isfinite(r.pseudo) for r in make_records(36, seed=5, sites=3))
    assert 0 <= pseudo["auc"] <= 1 and 0 <= pseudo["sensitivity_at_90_specificity"] <= 1
    cutoffs = json.loads((out / "cutoffs.json").read_text())
    assert cutoffs == {mode: on_disk[mode]["cutoff"] for mode in ("early", "full")}  # the product model's


@pytest.mark.slow
def test_run_predictions_feed_the_evaluation_stage(run_dir: tuple[Path, dict[str, object]]) -> None:
    out, metrics = run_dir
    frames = [read_predictions(p) for p in sorted(out.glob("sites/*/predictions.csv"))]
    assert len(frames) == 3
    pred = pd.concat(frames)
    assert sorted(pred["MODE"].unique()) == ["early", "full"] and len(pred) == 72
    early = pred[pred["MODE"] == "early"]
    # the rows are the product model's (wide), not the fusion's
    assert roc_auc_score(early["LABEL"], early["SCORE"]) == pytest.approx(metrics["early"]["wide"]["auc"])  # type: ignore[index]
    assert roc_auc_score(early["LABEL"], early["SCORE"]) != pytest.approx(metrics["early"]["fusion"]["auc"])  # type: ignore[index]
    full = pred[pred["MODE"] == "full"]  # each row carries its own task's label: durable benefit in full mode
    truth = {r.usubjid: r.responder["full"] for r in make_records(36, seed=5, sites=3)}
    assert full["LABEL"].tolist() == [truth[u] for u in full["USUBJID"]]
    assert roc_auc_score(full["LABEL"], full["SCORE"]) == pytest.approx(metrics["full"]["wide"]["auc"])  # type: ignore[index]
    for mode in ("early", "full"):
        checkpoint = torch.load(out / "checkpoints" / f"wide_{mode}.pt", weights_only=True)
        assert checkpoint["kind"] == "wide" and all(k.startswith("wide.") for k in checkpoint["state_dict"])
        attributions = pd.read_csv(out / "sites" / "S01" / f"attributions_{mode}.csv")
        assert set(attributions.columns) == {"USUBJID", "MODE", "FEATURE", "ATTRIBUTION"}
        assert (out / "sites" / "S01" / f"attributions_{mode}.png").stat().st_size > 1000


def test_a_failed_run_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(centralized, "evaluate_modes", boom)
    cohort = PooledCohort(make_records(8, seed=5), NAMES, GLOBAL_GROUPS, CLINICAL)
    with pytest.raises(RuntimeError, match="disk full"):
        run_centralized(cohort, tmp_path / "RUN", TINY, torch.device("cpu"), seed=0)
    assert list(tmp_path.iterdir()) == []


def test_existing_run_directory_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "RUN").mkdir()
    cohort = PooledCohort(make_records(8, seed=5), NAMES, GLOBAL_GROUPS, CLINICAL)
    with pytest.raises(FileExistsError, match="already exists"):
        run_centralized(cohort, tmp_path / "RUN", TINY, torch.device("cpu"), seed=0)


def test_train_command_errors_without_inputs(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedresponse.cli import app

    args = ["train", "--centralized", "--cohort", str(tmp_path), "--out", str(tmp_path / "R")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "no model_inputs.pt and no assessed site store" in " ".join(result.output.split())
    assert not (tmp_path / "R").exists()


@pytest.mark.slow
def test_train_command_on_site_model_inputs(tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from fedresponse.cli import app
    from fl_client.train import SiteInputs, save_site_inputs

    records = make_records(24, seed=8, sites=2)
    for site in ("S01", "S02"):
        own = [r for r in records if r.site == site]
        inputs = SiteInputs(site, own, NAMES, GLOBAL_GROUPS, CLINICAL)
        save_site_inputs(inputs, tmp_path / "c" / site / "model_inputs.pt")
    (tmp_path / "c" / "truth").mkdir()
    (tmp_path / "c" / "truth" / "oracle.json").write_text(json.dumps({"early_oracle_auc": 0.77}))
    config = TINY.model_dump(mode="json")
    config["train"]["epochs"] = 1
    config["evaluation"]["leave_one_site_out"] = False
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["train", "--centralized", "--cohort", str(tmp_path / "c"), "--out",
                                      str(tmp_path / "RUN"), "--config", str(tmp_path / "m.yaml"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "RUN" / "metrics.json").read_text())
    assert metrics["oracle_auc"] == 0.77 and metrics["n_patients"] == 24 and "leave_one_site_out" not in metrics


def test_site_statistics_score_each_mode_against_its_own_label() -> None:
    """evaluation.metrics reads the per-row LABEL: the full-mode AUC is the benefit task's, not the early label's;
    a subject without a full-mode label (benefit unknown) is left out of the full block only."""
    from evaluation.metrics import SiteData, site_metrics

    rng = np.random.default_rng(0)
    n = 40
    early_label = rng.integers(0, 2, n).tolist()
    full_label: list[int | None] = rng.integers(0, 2, n).tolist()
    full_label[3] = None
    score = rng.random(n).round(4).tolist()
    rows = [{"USUBJID": f"FEDRESP-S01-{i:04d}", "MODE": mode, "SCORE": score[i], "LABEL": label[i],
             "PFS_DAYS": 100 + i, "PFS_EVENT": 1}
            for mode, label in (("early", early_label), ("full", full_label)) for i in range(n)]
    frame = pd.DataFrame(rows)
    frame["SITEID"] = "S01"
    out = site_metrics(SiteData("S01", frame), {"early": 0.5, "full": 0.5})
    assert out["early"]["auc"] == pytest.approx(roc_auc_score(early_label, score))
    keep = [i for i in range(n) if full_label[i] is not None]
    assert out["full"]["n"] == n - 1
    assert out["full"]["auc"] == pytest.approx(roc_auc_score([full_label[i] for i in keep], [score[i] for i in keep]))
