"""The model is judged on held-out patients: a ``SPLIT`` column in predictions.csv (federated sites write it).

The training rows are perfectly separable and the held-out rows are not, so a report that let training
patients in would show an AUC of (nearly) 1. Reference: scikit-learn on the held-out rows; the reference
endpoints (ORR, PFS) must still count every analysed patient.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from evaluation.evaluate import load_run
from evaluation.exceptions import EvaluationInputError
from evaluation.metrics import ALL_BASIS, HELDOUT_BASIS, read_predictions
from evaluation.report import write_evaluation

SITES = {"S01": 48, "S02": 56}  # 12 and 14 held out: at least the protocol minimum (statistics.min_patients_estimate)
CUTOFFS = {"early": 0.5, "full": 0.45}


def _site_frame(site: str, n: int, rng: np.random.Generator) -> pd.DataFrame:
    y = np.array([0, 1] * (n // 2))
    split = np.where(np.arange(n) < round(0.75 * n), "train", "test")
    rows = []
    for mode, shift in (("early", 0.0), ("full", 0.05)):
        noisy = np.clip(rng.normal(0.45 + 0.1 * y + shift, 0.2), 0.0, 1.0)
        perfect = np.where(y == 1, 0.9, 0.1)  # what a model that memorised its training patients scores
        score = np.where(split == "train", perfect, noisy).round(6)
        rows += [{"USUBJID": f"FEDRESP-{site}-{i + 1:04d}", "MODE": mode, "SCORE": score[i], "LABEL": int(y[i]),
                  "PFS_DAYS": int(rng.integers(20, 500)), "PFS_EVENT": int(rng.random() < 0.7), "SPLIT": split[i]}
                 for i in range(n)]
    frame = pd.DataFrame(rows)
    # one PFS per subject, whatever the mode row
    first = frame.drop_duplicates("USUBJID").set_index("USUBJID")
    frame["PFS_DAYS"] = frame["USUBJID"].map(first["PFS_DAYS"])
    frame["PFS_EVENT"] = frame["USUBJID"].map(first["PFS_EVENT"])
    return frame


@pytest.fixture(scope="module")
def split_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("split") / "run"
    rng = np.random.default_rng(11)
    for site, n in SITES.items():
        (run / "sites" / site).mkdir(parents=True)
        _site_frame(site, n, rng).to_csv(run / "sites" / site / "predictions.csv", index=False)
    (run / "cutoffs.json").write_text(json.dumps(CUTOFFS))
    return run


@pytest.fixture(scope="module")
def split_metrics(split_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    paths = write_evaluation(load_run(split_run), tmp_path_factory.mktemp("split_eval") / "out")
    return json.loads(paths["metrics"].read_text()), paths["report"].read_text()


def _union(run: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in sorted(run.rglob("predictions.csv"))], ignore_index=True)


def test_site_model_statistics_use_the_held_out_rows_only(split_run: Path, split_metrics: tuple[dict, str]) -> None:
    metrics, _ = split_metrics
    union = _union(split_run)
    for site, n in SITES.items():
        frame = union[union["USUBJID"].str.contains(f"-{site}-")]
        block = metrics["sites"][site]
        test_ids = frame.loc[frame["SPLIT"] == "test", "USUBJID"].unique()
        assert block["n_heldout"] == len(test_ids) == n - round(0.75 * n) and block["n"] == n
        assert block["model_basis"] == HELDOUT_BASIS
        for mode in ("early", "full"):
            test = frame[(frame["MODE"] == mode) & (frame["SPLIT"] == "test")]
            every = frame[frame["MODE"] == mode]
            assert roc_auc_score(every["LABEL"], every["SCORE"]) > roc_auc_score(test["LABEL"], test["SCORE"]) + 0.05
            assert block[mode]["auc"] == pytest.approx(roc_auc_score(test["LABEL"], test["SCORE"]))
            assert block[mode]["n"] == len(test)
            called = test["SCORE"] >= CUTOFFS[mode]
            assert block[mode]["sensitivity"] == pytest.approx(called[test["LABEL"] == 1].mean())
            assert block[mode]["specificity"] == pytest.approx((~called)[test["LABEL"] == 0].mean())
            assert block[mode]["brier"] == pytest.approx(np.mean((test["SCORE"] - test["LABEL"]) ** 2))
        full_test = frame[(frame["MODE"] == "full") & (frame["SPLIT"] == "test")]
        kappa = cohen_kappa_score(full_test["LABEL"], (full_test["SCORE"] >= CUTOFFS["full"]).astype(int))
        assert metrics["agreement"][site]["kappa_full"] == pytest.approx(kappa)
        assert metrics["agreement"][site]["kappa_n"] == len(test_ids)
        # reference endpoints: every analysed patient of the site
        rows = frame[frame["MODE"] == "full"]
        assert block["orr_all"]["recist_confirmed"]["n"] == n
        km = KaplanMeierFitter().fit(rows["PFS_DAYS"], rows["PFS_EVENT"])
        expected = km.median_survival_time_
        assert block["median_pfs_days"] == (expected if np.isfinite(expected) else "inf")


def test_pooled_model_block_rests_on_the_held_out_rows(split_run: Path, split_metrics: tuple[dict, str]) -> None:
    metrics, report = split_metrics
    union = _union(split_run)
    pooled = metrics["pooled"]
    n_test = union.loc[union["SPLIT"] == "test", "USUBJID"].nunique()
    assert pooled["n_heldout"] == n_test and pooled["n"] == union["USUBJID"].nunique()
    for mode in ("early", "full"):
        test = union[(union["MODE"] == mode) & (union["SPLIT"] == "test")]
        block = pooled[mode]
        assert block["n"] == n_test
        assert abs(block["auc"] - roc_auc_score(test["LABEL"], test["SCORE"])) <= block["auc_binning_bound"] + 1e-12
        assert block["auc"] < 0.95  # the perfectly separated training rows are not in it
        called = test["SCORE"] >= CUTOFFS[mode]
        assert block["confusion"]["tp"] == int((called & (test["LABEL"] == 1)).sum())
        assert block["confusion"]["tn"] == int((~called & (test["LABEL"] == 0)).sum())
        groups = block["km_called"].values()
        assert sum(g["at_risk"][0] for g in groups if g["at_risk"]) == n_test
    assert pooled["orr_all"]["recist_confirmed"]["n"] == union["USUBJID"].nunique()
    assert pooled["km"]["at_risk"][0] == union["USUBJID"].nunique()
    assert metrics["model_basis"] == HELDOUT_BASIS
    text = " ".join(report.split())
    assert "held-out patients of each site (seeded 75/25 split" in text
    assert (f"rest on each mode's own patients, judged against its own task's label (early {n_test} (EARLYFL), "
            f"full {n_test} (EFFFL)) — held-out patients of each site") in text


def test_without_split_every_row_judges_the_model(split_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    for path in sorted(split_run.rglob("predictions.csv")):
        (run / path.parent.name).mkdir(parents=True)
        pd.read_csv(path).drop(columns="SPLIT").to_csv(run / path.parent.name / "predictions.csv", index=False)
    (run / "cutoffs.json").write_text(json.dumps(CUTOFFS))
    metrics = json.loads(write_evaluation(load_run(run), tmp_path / "out")["metrics"].read_text())
    union = _union(run)
    assert metrics["model_basis"] == ALL_BASIS and metrics["pooled"]["n_heldout"] == union["USUBJID"].nunique()
    rows = union[(union["MODE"] == "full") & union["USUBJID"].str.contains("-S01-")]
    assert metrics["sites"]["S01"]["full"]["auc"] == pytest.approx(roc_auc_score(rows["LABEL"], rows["SCORE"]))


@pytest.mark.parametrize(("split", "match"), [
    (["train", "validation"], "SPLIT must be one of \\['train', 'test'\\], but was 'validation'"),
    (["train", ""], "SPLIT must be one of"),
])
def test_bad_split_values_are_named_with_the_fix(tmp_path: Path, split: list[str], match: str) -> None:
    path = tmp_path / "predictions.csv"
    pd.DataFrame({"USUBJID": ["FEDRESP-S01-0001", "FEDRESP-S01-0002"], "MODE": "full", "SCORE": [0.2, 0.7],
                  "LABEL": [0, 1], "PFS_DAYS": [30, 60], "PFS_EVENT": [1, 0], "SPLIT": split}).to_csv(path, index=False)
    with pytest.raises(EvaluationInputError, match=match):
        read_predictions(path)


def test_a_subject_cannot_be_both_train_and_test(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    pd.DataFrame({"USUBJID": ["FEDRESP-S01-0001"] * 2, "MODE": ["early", "full"], "SCORE": [0.2, 0.7],
                  "LABEL": [0, 0], "PFS_DAYS": [30, 30], "PFS_EVENT": [1, 1], "SPLIT": ["train", "test"]}
                 ).to_csv(path, index=False)
    with pytest.raises(EvaluationInputError, match="both 'train' and 'test'"):
        read_predictions(path)
    frame = pd.read_csv(path).assign(SPLIT="train")
    frame.to_csv(path, index=False)
    assert set(read_predictions(path)["SPLIT"]) == {"train"}
