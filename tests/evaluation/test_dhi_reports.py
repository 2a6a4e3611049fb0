"""The DHI blocks the reports show: per-interval site statistics (small-cell rule) and their pooling."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from dhi_cohort import dhi_cohort, outcomes
from lifelines import CoxPHFitter
from scipy import stats

from evaluation.dhi_stats import pooled_partial_correlation, site_dhi_intervals, size_proxy


def _cohort(n: int = 120, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """T0→T1: the DHI restates the shrinkage (a size proxy); T1→T2: it carries information beyond it."""
    cohort = dhi_cohort(n, seed)
    ids = [f"S01-{i:03d}" for i in range(n)]
    first = pd.DataFrame({"USUBJID": ids, "FROM": "T0", "TO": "T1", "DLOGVOL": cohort.dlogvol, "DHI": cohort.proxy})
    second = pd.DataFrame({"USUBJID": ids, "FROM": "T1", "TO": "T2", "DLOGVOL": cohort.rng.normal(0, 0.4, n),
                           "DHI": cohort.latent + 1.5 * cohort.responder})
    return pd.concat([first, second], ignore_index=True), outcomes(cohort, ids)


def _residual_pearson(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    """Independent reference: Pearson of the rank residuals after scipy's simple regression on rank(z)."""
    rx, ry, rz = (stats.rankdata(v) for v in (x, y, z))
    fx, fy = stats.linregress(rz, rx), stats.linregress(rz, ry)
    return float(stats.pearsonr(rx - (fx.intercept + fx.slope * rz), ry - (fy.intercept + fy.slope * rz))[0])


def test_site_intervals_match_independent_references():
    dhi, outcomes = _cohort()
    blocks = {b["interval"]: b for b in site_dhi_intervals(dhi, outcomes, min_cell=5, min_n=10)}
    assert set(blocks) == {"T0-T1", "T1-T2"}
    for interval, (a, b) in (("T0-T1", ("T0", "T1")), ("T1-T2", ("T1", "T2"))):
        rows = dhi[(dhi["FROM"] == a) & (dhi["TO"] == b)].merge(outcomes, on="USUBJID")
        block = blocks[interval]
        assert block["n"] == 120 and block["events"] == int(rows["PFS_EVENT"].sum())
        x, y, z = rows["DHI"].to_numpy(), rows["RESPONDER"].to_numpy(float), rows["DLOGVOL"].to_numpy()
        assert block["partial_rho"] == pytest.approx(_residual_pearson(x, y, z), abs=1e-10)
        assert block["rho_vol"] == pytest.approx(stats.spearmanr(x, z).statistic, abs=1e-12)
        # Mann–Whitney U / (n1 n0) is the AUC (DeLong's point estimate)
        u = stats.mannwhitneyu(x[y == 1], x[y == 0]).statistic
        assert block["auc"] == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()), abs=1e-12)
        std = rows[["PFS_DAYS", "PFS_EVENT"]].assign(DHI=(x - x.mean()) / x.std(), DLOGVOL=(z - z.mean()) / z.std())
        fit = CoxPHFitter().fit(std, duration_col="PFS_DAYS", event_col="PFS_EVENT")
        assert block["hr"] == pytest.approx(math.exp(fit.params_["DHI"]), rel=1e-6)
        assert block["hr_ci"][0] < block["hr"] < block["hr_ci"][1]
    assert blocks["T0-T1"]["size_proxy"] is True  # significant raw AUC, nothing beyond the volume change
    assert blocks["T1-T2"]["size_proxy"] is False and blocks["T1-T2"]["partial_p"] < 0.01


def test_small_cells_are_sent_as_not_estimable():
    dhi, outcomes = _cohort(40, seed=3)
    outcomes["RESPONDER"] = 0
    outcomes.loc[:2, "RESPONDER"] = 1  # three responders < min_cell_size 5
    (first, _) = site_dhi_intervals(dhi, outcomes, min_cell=5, min_n=10)
    for key in ("auc", "partial_rho", "partial_p", "hr", "hr_p", "rho_vol"):
        assert first[key] is None and "smaller response class 3" in first[f"{key}_not_estimable"]
    assert first["auc_ci"] is None and first["hr_ci"] is None and first["n"] == 40
    assert first["size_proxy"] is None
    outcomes["RESPONDER"] = (np.arange(40) % 2).astype(int)
    outcomes["PFS_EVENT"] = 0
    outcomes.loc[:3, "PFS_EVENT"] = 1  # four events: the HR is withheld, the rest is sent
    (first, _) = site_dhi_intervals(dhi, outcomes, min_cell=5, min_n=10)
    assert first["auc"] is not None and first["hr"] is None and "4 PFS events" in first["hr_not_estimable"]


def test_pooled_fisher_z_of_one_site_is_that_site_and_weights_by_n_minus_4():
    one = pooled_partial_correlation([{"site": "S01", "n": 40, "partial_rho": 0.31}])
    assert one["partial_rho"] == pytest.approx(0.31, abs=1e-12) and one["n"] == 40
    se = 1 / math.sqrt(40 - 4)
    assert one["partial_rho_ci"] == pytest.approx([math.tanh(math.atanh(0.31) - 1.959964 * se),
                                                   math.tanh(math.atanh(0.31) + 1.959964 * se)], abs=1e-6)
    blocks = [{"site": "S01", "n": 40, "partial_rho": 0.31}, {"site": "S02", "n": 24, "partial_rho": -0.1},
              {"site": "S03", "n": 9, "partial_rho": None, "partial_rho_not_estimable": "small cells"}]
    pooled = pooled_partial_correlation(blocks)
    z = (36 * math.atanh(0.31) + 20 * math.atanh(-0.1)) / 56
    assert pooled["partial_rho"] == pytest.approx(math.tanh(z), abs=1e-12)
    assert pooled["partial_p"] == pytest.approx(2 * stats.norm.sf(abs(z) * math.sqrt(56)), rel=1e-9)
    assert pooled["sites"] == ["S01", "S02"] and pooled["excluded"] == ["S03"] and pooled["n"] == 64
    none = pooled_partial_correlation(blocks[2:])
    assert none["partial_rho"] is None and "no site" in none["partial_rho_not_estimable"]


def test_size_proxy_needs_both_tests():
    assert size_proxy({"auc_ci": [0.6, 0.8], "partial_p": 0.4}) is True
    assert size_proxy({"auc_ci": [0.6, 0.8], "partial_p": 0.01}) is False
    assert size_proxy({"auc_ci": [0.4, 0.8], "partial_p": 0.4}) is False
    assert size_proxy({"auc_ci": None, "partial_p": 0.4}) is None


def test_pooled_volume_adjusted_cox_equals_lifelines_stratified_on_the_union():
    from evaluation.dhi_stats import pooled_adjusted_dhi_cox
    from evaluation.pooled import PlainCodec

    frames = {}
    for k, site in enumerate(("S01", "S02")):
        dhi, outcomes = _cohort(60, seed=10 + k)
        rows = dhi[dhi["TO"] == "T2"].merge(outcomes, on="USUBJID")
        frames[site] = rows[["PFS_DAYS", "PFS_EVENT", "DHI", "DLOGVOL"]].reset_index(drop=True)
    tiny = frames["S01"].iloc[:4]
    pooled = pooled_adjusted_dhi_cox({**frames, "S03": tiny}, PlainCodec(), min_cell=5)
    union = pd.concat([f.assign(site=s) for s, f in frames.items()], ignore_index=True)
    ref = CoxPHFitter().fit(union, duration_col="PFS_DAYS", event_col="PFS_EVENT", strata=["site"])
    assert pooled["hr"] == pytest.approx(math.exp(ref.params_["DHI"]), rel=1e-6)
    assert pooled["hr_dlogvol"] == pytest.approx(math.exp(ref.params_["DLOGVOL"]), rel=1e-6)
    low, high = np.exp(ref.confidence_intervals_.loc["DHI"].to_numpy())
    assert pooled["hr_ci"] == pytest.approx([low, high], rel=1e-5)
    assert pooled["hr_p"] == pytest.approx(float(ref.summary.loc["DHI", "p"]), rel=1e-4)
    assert [s["site"] for s in pooled["suppressed"]] == ["S03"] and pooled["n"] == 120
