"""PFS statistics against lifelines (KM, median CI, log-rank) and statsmodels (Cox), C-index by brute force."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test
from lifelines.utils import median_survival_times

from evaluation.exceptions import EvaluationInputError
from evaluation.survival import (
    at_risk_at,
    concordance,
    cox_hazard_ratio,
    exact_logrank,
    kaplan_meier,
    median_survival,
    risk_table,
)


def _cohort(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 2, n)
    event_time = rng.exponential(np.where(group == 1, 300.0, 150.0))
    censor = rng.uniform(60, 500, n)
    t = np.ceil(np.minimum(event_time, censor))  # whole days: plenty of ties
    e = (event_time <= censor).astype(int)
    return t, e, group


@pytest.mark.parametrize(("seed", "n"), [(0, 30), (1, 120), (2, 400)])
def test_kaplan_meier_and_ci_match_lifelines(seed: int, n: int) -> None:
    t, e, _ = _cohort(seed, n)
    km = kaplan_meier(risk_table(t, e))
    ref = KaplanMeierFitter().fit(t, e)
    sf = ref.survival_function_["KM_estimate"]
    ci = ref.confidence_interval_
    np.testing.assert_allclose(km.survival, sf.loc[km.times].to_numpy(), atol=1e-12)
    np.testing.assert_allclose(km.low, ci.iloc[:, 0].loc[km.times].to_numpy(), atol=1e-9)
    np.testing.assert_allclose(km.high, ci.iloc[:, 1].loc[km.times].to_numpy(), atol=1e-9)


@pytest.mark.parametrize(("seed", "n"), [(3, 40), (4, 200)])
def test_median_and_brookmeyer_crowley_ci_match_lifelines(seed: int, n: int) -> None:
    t, e, _ = _cohort(seed, n)
    median, (low, high) = median_survival(kaplan_meier(risk_table(t, e)))
    ref = KaplanMeierFitter().fit(t, e)
    ref_ci = median_survival_times(ref.confidence_interval_)
    assert median == ref.median_survival_time_
    assert (low, high) == (ref_ci.iloc[0, 0], ref_ci.iloc[0, 1])
    assert low <= median <= high


def test_median_on_a_flat_half_is_the_midpoint_like_r_and_sas() -> None:
    # 4 subjects, events at 10 and 20 -> S = 0.5 from day 20 until the next event at day 40 (censoring at 30).
    # R survfit / SAS LIFETEST report (20 + 40) / 2 = 30; the first time S <= 0.5 would say 20.
    median, _ = median_survival(kaplan_meier(risk_table([10, 20, 30, 40], [1, 1, 0, 1])))
    assert median == 30.0


def test_median_not_reached_is_infinite() -> None:
    median, (_low, high) = median_survival(kaplan_meier(risk_table([10, 20, 30, 40], [1, 0, 0, 0])))
    assert median == float("inf") and high == float("inf")


def test_numbers_at_risk() -> None:
    table = risk_table([5, 10, 10, 30, 60], [1, 0, 1, 1, 0])
    assert at_risk_at(table, [0, 5, 6, 10, 30, 31, 61]).tolist() == [5, 5, 4, 4, 2, 1, 0]


@pytest.mark.parametrize(("seed", "n"), [(5, 50), (6, 300)])
def test_logrank_matches_lifelines(seed: int, n: int) -> None:
    t, e, g = _cohort(seed, n)
    chi2, p = exact_logrank(t, e, g)
    ref = logrank_test(t[g == 1], t[g == 0], e[g == 1], e[g == 0])
    assert chi2 == pytest.approx(ref.test_statistic, rel=1e-10)
    assert p == pytest.approx(ref.p_value, rel=1e-8)


def test_cox_hr_matches_statsmodels_phreg() -> None:
    import statsmodels.api as sm

    t, e, g = _cohort(7, 250)
    hr, (low, high), p = cox_hazard_ratio(t, e, g)
    res = sm.PHReg(t, g.astype(float)[:, None], status=e, ties="efron").fit()
    assert hr == pytest.approx(np.exp(res.params[0]), rel=1e-4)
    lo_ref, hi_ref = np.exp(res.conf_int()[0])
    assert (low, high) == pytest.approx((lo_ref, hi_ref), rel=1e-3)
    assert p == pytest.approx(res.pvalues[0], rel=1e-2)
    assert hr < 1  # group 1 has the longer PFS by construction


def test_concordance_matches_pairwise_harrell() -> None:
    t, e, g = _cohort(8, 80)
    score = np.random.default_rng(1).normal(size=80) + g
    num = den = 0.0
    for i in range(80):
        for j in range(80):
            # comparable: i failed first, or on the same day as a censoring (event counted first)
            if e[i] == 1 and (t[i] < t[j] or (t[i] == t[j] and e[j] == 0)):
                den += 1
                num += 1.0 if score[i] < score[j] else 0.5 if score[i] == score[j] else 0.0
    assert concordance(t, e, score) == pytest.approx(num / den, abs=1e-12)


@pytest.mark.parametrize(
    ("t", "e", "match"),
    [
        ([1, 2], [1], "equal length"),
        ([-3, 2], [1, 0], ">= 0 days"),
        ([1, 2], [1, 2], "censored"),
        ([], [], "no subjects"),
    ],
)
def test_bad_survival_input(t: list[float], e: list[int], match: str) -> None:
    with pytest.raises(EvaluationInputError, match=match):
        risk_table(t, e)
