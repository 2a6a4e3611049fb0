"""metrics.json of a written evaluation, re-derived from the raw site files with independent libraries."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.utils import median_survival_times
from sklearn.metrics import cohen_kappa_score, roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from evaluation.evaluate import load_run
from evaluation.exceptions import EvaluationInputError
from evaluation.metrics import SiteData, compute_metrics, read_predictions
from evaluation.pooled import AggregateLayout
from evaluation.populations import consort_counts, read_populations
from evaluation.protocol import load_protocol


def _exact_median(t: np.ndarray, e: np.ndarray) -> float:
    """KM median in exact rational arithmetic (R/SAS convention: midpoint where S is exactly 1/2)."""
    s, curve = Fraction(1), []
    for time in sorted(set(t[e == 1].tolist())):
        s *= 1 - Fraction(int(np.sum((t == time) & (e == 1))), int(np.sum(t >= time)))
        curve.append((time, s))
    for i, (time, value) in enumerate(curve):
        if value < Fraction(1, 2):
            return float(time)
        if value == Fraction(1, 2):
            return float((time + curve[i + 1][0]) / 2) if i + 1 < len(curve) else float(time)
    return float("inf")


def _union(run: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in sorted(run.rglob("predictions.csv"))], ignore_index=True)


def test_site_blocks_match_sklearn_lifelines_statsmodels(synthetic_run: dict[str, Path], evaluated: dict) -> None:
    metrics = json.loads(evaluated["metrics"].read_text())
    cut = json.loads((synthetic_run["run"] / "cutoffs.json").read_text())
    for path in sorted(synthetic_run["run"].rglob("predictions.csv")):
        site = path.parent.name
        block, frame = metrics["sites"][site], pd.read_csv(path)
        for mode in ("early", "full"):
            rows = frame[frame["MODE"] == mode]
            assert block[mode]["auc"] == pytest.approx(roc_auc_score(rows["LABEL"], rows["SCORE"]))
            called = rows["SCORE"] >= cut[mode]
            assert block[mode]["sensitivity"] == pytest.approx(called[rows["LABEL"] == 1].mean())
            assert block[mode]["cutoff"] == cut[mode]
        rows = frame[frame["MODE"] == "full"]
        km = KaplanMeierFitter().fit(rows["PFS_DAYS"], rows["PFS_EVENT"])
        median = _exact_median(rows["PFS_DAYS"].to_numpy(), rows["PFS_EVENT"].to_numpy())
        assert block["median_pfs_days"] == (median if np.isfinite(median) else None)  # not reached: not estimable
        ci = median_survival_times(km.confidence_interval_).iloc[0].tolist()
        assert block["median_pfs_ci"] == [c if np.isfinite(c) else "inf" for c in ci]
        subjects = pd.read_csv(path.parent / "subjects.csv")
        k = int(subjects["CBOR"].isin(["CR", "PR"]).sum())
        enrolled = len(pd.read_csv(path.parent / "populations.csv"))  # protocol: ORR over all enrolled (ITTFL)
        assert (block["orr_n"], block["orr_analysed_n"]) == (enrolled, len(subjects)) and enrolled == len(subjects) + 3
        assert block["orr"] == pytest.approx(k / enrolled)
        assert block["orr_ci"] == pytest.approx(list(proportion_confint(k, enrolled, method="beta")))
        assert block["orr_analysed"] == pytest.approx(k / len(subjects))
        assert block["orr_analysed_ci"] == pytest.approx(list(proportion_confint(k, len(subjects), method="beta")))
        assert block["dhi_auc"] == pytest.approx(roc_auc_score(rows["LABEL"], rows["DHI"]))
        kappa = cohen_kappa_score(rows["LABEL"], (rows["SCORE"] >= cut["full"]).astype(int))
        assert metrics["agreement"][site]["kappa_full"] == pytest.approx(kappa)
        agree = metrics["agreement"][site]
        assert "icc" in agree  # the readers' ICC is checked against the protocol's bar (configs/study.yaml)
        assert agree["icc_required"] == load_protocol().agreement.icc_min
        assert agree["icc_meets_required"] == (agree["icc"] >= agree["icc_required"])


def test_pooled_block_matches_the_union_within_binning(synthetic_run: dict[str, Path], evaluated: dict) -> None:
    metrics = json.loads(evaluated["metrics"].read_text())
    union = _union(synthetic_run["run"])
    for mode in ("early", "full"):
        rows = union[union["MODE"] == mode]
        pooled = metrics["pooled"][mode]
        assert abs(pooled["auc"] - roc_auc_score(rows["LABEL"], rows["SCORE"])) <= pooled["auc_binning_bound"] + 1e-12
        assert pooled["confusion"]["tp"] + pooled["confusion"]["fn"] == int(rows["LABEL"].sum())
    full = union[union["MODE"] == "full"]
    pooled = metrics["pooled"]
    assert abs(pooled["dhi_auc"] - roc_auc_score(full["LABEL"], full["DHI"])) <= pooled["dhi_auc_binning_bound"] + 1e-12
    assert metrics["pooled"]["n"] == union["USUBJID"].nunique()
    assert set(metrics["sites"]) == {"S01", "S02"}
    # pooled DHI HR (site-stratified Cox from site sums) = lifelines on the union with the site as stratum
    full = full.assign(SITE=full["USUBJID"].str.split("-").str[1])
    cox = CoxPHFitter().fit(full[["PFS_DAYS", "PFS_EVENT", "DHI", "SITE"]], "PFS_DAYS", "PFS_EVENT", strata=["SITE"],
                            fit_options={"precision": 1e-12})
    unit = pooled["dhi_hr_unit"]  # reported per protocol unit of DHI: HR_unit = exp(beta_per_1 * unit)
    assert unit == pytest.approx(load_protocol().heterogeneity.dhi_hr_unit)
    ci = np.exp(cox.confidence_intervals_.loc["DHI"].to_numpy() * unit)
    assert pooled["dhi_hr"] == pytest.approx(np.exp(cox.params_["DHI"] * unit), rel=1e-6)
    assert pooled["dhi_hr_ci"] == pytest.approx(ci.tolist(), rel=1e-6)
    assert pooled["dhi_hr_p"] == pytest.approx(cox.summary.loc["DHI", "p"], rel=1e-5)
    assert "site-stratified Cox" in pooled["dhi_hr_method"]
    assert metrics["pooling"]["codec"] == "PlainCodec"


def test_consort_comes_from_the_populations(synthetic_run: dict[str, Path], evaluated: dict) -> None:
    """CONSORT totals = population flags = the N under the statistics (one definition, evaluation.populations)."""
    metrics = json.loads(evaluated["metrics"].read_text())
    inputs = load_run(synthetic_run["run"])
    assert inputs.consort is not None
    for site, flow in inputs.consort.items():
        pop = read_populations(synthetic_run["run"] / "sites" / site)
        assert flow == consort_counts(pop)
        assert flow["enrolled"] == 17 and flow["eligible"] == flow["analysed"] == 14
        assert flow["excluded"] == {"exclusion: other malignancy": 1, "inclusion: ECOG must be 0 or 1": 1,
                                    "exclusion: radiotherapy of the target lesion before baseline": 1}
        assert metrics["sites"][site]["n"] == flow["analysed"] and metrics["sites"][site]["orr_n"] == flow["enrolled"]
    assert metrics["pooled"]["n"] == sum(f["analysed"] for f in inputs.consort.values())
    assert metrics["pooled"]["orr_n"] == sum(f["enrolled"] for f in inputs.consort.values())
    assert metrics["pooled"]["n_pfs"] == sum(f["pfs_analysed"] for f in inputs.consort.values())


def test_privacy_block_reads_the_last_ledger_round(synthetic_run: dict[str, Path]) -> None:
    inputs = load_run(synthetic_run["run"])
    ledger = pd.read_csv(synthetic_run["run"] / "privacy_ledger.csv")
    assert inputs.privacy is not None
    for site, rows in ledger.groupby("site"):
        assert inputs.privacy["sites"][site]["epsilon"] == rows.sort_values("round")["epsilon"].iloc[-1]
        assert inputs.privacy["sites"][site]["budget"] == 8.0
    (synthetic_run["run"] / "privacy.json").rename(synthetic_run["run"] / "privacy.json.bak")
    try:
        assert load_run(synthetic_run["run"]).privacy["sites"]["S01"].get("budget") is None  # type: ignore[index]
        assert load_run(synthetic_run["run"], epsilon_budget=6.0).privacy["sites"]["S01"]["budget"] == 6.0  # type: ignore[index]
    finally:
        (synthetic_run["run"] / "privacy.json.bak").rename(synthetic_run["run"] / "privacy.json")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("USUBJID,MODE,SCORE\nFEDRESP-S01-0001,full,0.3\n", "lacks column"),
        ("USUBJID,MODE,SCORE,LABEL,PFS_DAYS,PFS_EVENT\nFEDRESP-S01-0001,late,0.3,1,10,1\n", "MODE must be one of"),
        ("USUBJID,MODE,SCORE,LABEL,PFS_DAYS,PFS_EVENT\nFEDRESP-S01-0001,full,1.7,1,10,1\n", "row 2: SCORE"),
        ("USUBJID,MODE,SCORE,LABEL,PFS_DAYS,PFS_EVENT\nP1,full,0.7,1,10,1\n", "STUDYID-SITEID-NNNN"),
    ],
)
def test_bad_predictions_file_is_named_with_the_fix(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "predictions.csv"
    path.write_text(content)
    with pytest.raises(EvaluationInputError, match=match):
        read_predictions(path)


def test_failed_evaluation_leaves_previous_output_untouched(synthetic_run: dict[str, Path], tmp_path: Path) -> None:
    from evaluation.report import write_evaluation

    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("previous")
    inputs = load_run(synthetic_run["run"])
    inputs.cutoffs = {"early": 0.5}  # "full" missing: fails inside the metrics
    with pytest.raises(KeyError):
        write_evaluation(inputs, out)
    assert (out / "metrics.json").read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_cli_reports_bad_run_and_bad_keys_without_traceback(synthetic_run: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedresponse.cli import app

    missing = CliRunner().invoke(app, ["evaluate", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "does not exist" in " ".join(missing.output.split())
    (tmp_path / "keys" / "site").mkdir(parents=True)
    bad = CliRunner().invoke(app, ["evaluate", str(synthetic_run["run"]), "--out", str(tmp_path / "o"),
                                   "--keys", str(tmp_path / "keys")])
    assert bad.exit_code == 2 and "evaluate failed" in bad.output
    assert not (tmp_path / "o").exists()


def test_dhi_tables_are_averaged_per_patient_and_joined(tmp_path: Path) -> None:
    from evaluation.evaluate import patient_dhi
    from evaluation.metrics import site_metrics

    rng = np.random.default_rng(2)
    ids = [f"FEDRESP-S01-{i:04d}" for i in range(1, 13)]
    y = np.array([0, 1] * 6)
    rows = [{"USUBJID": u, "LESIONID": les, "FROM": a, "TO": b, "DHI": float(rng.uniform(0, 1) + 0.3 * label),
             "STATUS": "ok"} for u, label in zip(ids, y, strict=True) for les in ("L01", "L02")
            for a, b in (("T0", "T1"), ("T1", "T2"))]
    rows.append({"USUBJID": ids[0], "LESIONID": "L03", "FROM": "T0", "TO": "T1", "DHI": "", "STATUS": "skipped"})
    pd.DataFrame(rows).to_csv(tmp_path / "dhi.csv", index=False)
    table = patient_dhi([tmp_path / "dhi.csv"])
    expected = pd.DataFrame(rows[:-1]).groupby("USUBJID")["DHI"].mean()
    assert table.set_index("USUBJID")["DHI"].to_dict() == pytest.approx(expected.to_dict())
    run = tmp_path / "run" / "sites" / "S01"
    run.mkdir(parents=True)
    pd.concat([pd.DataFrame({"USUBJID": ids, "MODE": m, "SCORE": rng.uniform(0, 1, 12), "LABEL": y,
                             "PFS_DAYS": rng.integers(30, 400, 12), "PFS_EVENT": 1}) for m in ("early", "full")]
              ).to_csv(run / "predictions.csv", index=False)
    inputs = load_run(tmp_path / "run", dhi_tables=[tmp_path / "dhi.csv"])
    block = site_metrics(inputs.sites[0], inputs.cutoffs)
    assert block["dhi_auc"] == pytest.approx(roc_auc_score(y, expected.loc[ids].to_numpy()))
    (tmp_path / "bad.csv").write_text("USUBJID,VALUE\nx,1\n")
    with pytest.raises(EvaluationInputError, match="lacks USUBJID/DHI"):
        patient_dhi([tmp_path / "bad.csv"])



def _landmark_site(site: str, rng: np.random.Generator, n: int = 24) -> SiteData:
    ids = [f"FEDRESP-{site}-{i:04d}" for i in range(1, n + 1)]
    responder = rng.integers(0, 2, n)
    t = np.ceil(rng.exponential(np.where(responder == 1, 300.0, 150.0))) + 1
    e = (rng.uniform(size=n) < 0.8).astype(int)
    preds = pd.DataFrame([{"USUBJID": u, "MODE": m, "SCORE": float(rng.uniform()), "LABEL": int(r),
                           "PFS_DAYS": float(d), "PFS_EVENT": int(v)}
                          for u, r, d, v in zip(ids, responder, t, e, strict=True) for m in ("early", "full")])
    calls = np.where(responder == 1, "iPR", "iSD").astype(object)
    calls[:2] = ["NE", "iUPD"]  # unknown at T1 (left out) and a progression at T1
    visits = pd.DataFrame({"USUBJID": ids, "VISIT": "T1", "ADY": 62, "IRECIST_OVR": calls, "RECIST_OVR": ""})
    return SiteData(site, preds.assign(SITEID=site), visits=visits)


def test_landmark_at_t1_matches_lifelines() -> None:
    """Survival by response at the T1 landmark: only subjects event-free after the T1 window end, followed from it,
    response fixed at T1 (no guarantee-time bias); site and pooled log-rank/Cox against lifelines."""
    from lifelines.statistics import logrank_test

    rng = np.random.default_rng(7)
    sites = [_landmark_site("S01", rng), _landmark_site("S02", rng)]
    exact = AggregateLayout(pfs_grid_days=tuple(float(d) for d in range(0, 2000)))  # 1-day grid: pooled KM is exact
    metrics = compute_metrics(sites, {"early": 0.5, "full": 0.5}, layout=exact)
    day = float(load_protocol().timepoints["T1"].window[1])
    kept = []
    for data in sites:
        rows = data.predictions.query("MODE == 'full'").merge(data.visits, on="USUBJID")
        rows = rows[(rows["PFS_DAYS"] > day) & (rows["IRECIST_OVR"] != "NE")].assign(
            R=lambda f: f["IRECIST_OVR"].isin(["iCR", "iPR"]), T=lambda f: f["PFS_DAYS"] - day)
        kept.append(rows)
        site = metrics["sites"][data.site]
        assert site["landmark_day"] == day and site["landmark_n"] == len(rows)
        test = logrank_test(rows.loc[rows.R, "T"], rows.loc[~rows.R, "T"], rows.loc[rows.R, "PFS_EVENT"],
                            rows.loc[~rows.R, "PFS_EVENT"])
        assert site["logrank_landmark_chi2"] == pytest.approx(test.test_statistic)
        cox = CoxPHFitter().fit(rows.assign(X=rows["R"].astype(float))[["T", "PFS_EVENT", "X"]], "T", "PFS_EVENT")
        assert site["hr_landmark_t1"] == pytest.approx(float(np.exp(cox.params_["X"])), rel=1e-4)
    union = pd.concat(kept)
    assert metrics["pooled"]["landmark_n"] == len(union)
    test = logrank_test(union.loc[union.R, "T"], union.loc[~union.R, "T"], union.loc[union.R, "PFS_EVENT"],
                        union.loc[~union.R, "PFS_EVENT"])
    assert metrics["pooled"]["logrank_landmark_chi2"] == pytest.approx(test.test_statistic, rel=1e-6)
