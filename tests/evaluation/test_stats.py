"""Diagnostic-accuracy statistics against independent implementations (scikit-learn, statsmodels, SciPy)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve as sk_calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve
from statsmodels.stats.proportion import proportion_confint

from evaluation.exceptions import EvaluationInputError
from evaluation.stats import (
    binary_metrics,
    brier_score,
    calibration_curve,
    delong_auc_ci,
    proportion_ci,
    roc_points,
    youden_cutoff,
)


def _sample(seed: int, n: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = rng.normal(0.0, 1.0, n) + 0.9 * y
    if ties:
        s = np.round(s, 1)
    return y, s


def _naive_delong(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """DeLong 1988 from the kernel psi(x, y) over every (positive, negative) pair: O(m n), no ranks."""
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]).astype(float) + 0.5 * (pos[:, None] == neg[None, :])
    auc = psi.mean()
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    var = np.var(v10, ddof=1) / pos.size + np.var(v01, ddof=1) / neg.size
    return float(auc), float(var)


@pytest.mark.parametrize(("seed", "n", "ties"), [(0, 40, False), (1, 200, False), (2, 60, True), (3, 15, True)])
def test_delong_auc_matches_sklearn_and_pairwise_kernel(seed: int, n: int, ties: bool) -> None:
    y, s = _sample(seed, n, ties)
    auc, (low, high) = delong_auc_ci(y, s)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    ref_auc, ref_var = _naive_delong(y, s)
    half = 1.959963984540054 * np.sqrt(ref_var)
    assert low == pytest.approx(max(0.0, ref_auc - half), abs=1e-12)
    assert high == pytest.approx(min(1.0, ref_auc + half), abs=1e-12)
    assert low < auc < high


def test_delong_ci_covers_true_auc_at_nominal_rate() -> None:
    # Binormal model with unit variances and mean shift d: true AUC = Phi(d / sqrt(2)).
    from scipy.stats import norm

    d, true_auc, hits = 1.0, float(norm.cdf(1.0 / np.sqrt(2))), 0
    rng = np.random.default_rng(11)
    for _ in range(400):
        y = np.r_[np.ones(40, int), np.zeros(40, int)]
        s = rng.normal(0, 1, 80) + d * y
        _, (low, high) = delong_auc_ci(y, s)
        hits += low <= true_auc <= high
    assert 0.91 <= hits / 400 <= 0.98


def test_perfect_separation_gives_auc_one_and_degenerate_ci() -> None:
    auc, (low, high) = delong_auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert (auc, low, high) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("seed", [0, 4, 5])
def test_youden_cutoff_maximises_j_like_sklearn_roc(seed: int) -> None:
    y, s = _sample(seed, 80, ties=seed == 5)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    j = tpr - fpr
    best = j.max()
    cut = youden_cutoff(y, s)
    m = binary_metrics(y, s, cut)
    assert m.sensitivity.estimate + m.specificity.estimate - 1 == pytest.approx(best, abs=1e-12)
    assert cut == pytest.approx(max(thr[np.isclose(j, best)]))


def test_roc_points_match_sklearn() -> None:
    y, s = _sample(6, 50, ties=True)
    fpr, tpr = roc_points(y, s)
    sk_fpr, sk_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)


@pytest.mark.parametrize(
    ("k", "n"), [(0, 10), (1, 10), (5, 10), (10, 10), (37, 112), (3, 4), (250, 500), (1, 1)]
)
@pytest.mark.parametrize(("ours", "theirs"), [("wilson", "wilson"), ("clopper-pearson", "beta")])
def test_proportion_ci_matches_statsmodels(k: int, n: int, ours: str, theirs: str) -> None:
    p = proportion_ci(k, n, method=ours)  # type: ignore[arg-type]
    low, high = proportion_confint(k, n, alpha=0.05, method=theirs)
    assert p.estimate == pytest.approx(k / n)
    assert (p.low, p.high) == pytest.approx((low, high), abs=1e-10)


def test_clopper_pearson_published_value() -> None:
    # Clopper & Pearson exact 95 % limits for 0/10: upper = 1 - 0.025**(1/10) = 0.3085 (textbook value).
    p = proportion_ci(0, 10, method="clopper-pearson")
    assert p.high == pytest.approx(1 - 0.025 ** 0.1, abs=1e-9)
    assert p.high == pytest.approx(0.3085, abs=1e-4)


def test_binary_metrics_counts_and_ci() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 1])
    s = np.array([0.9, 0.8, 0.4, 0.7, 0.2, 0.6, 0.1, 0.3, 0.5, 0.65])
    m = binary_metrics(y, s, cutoff=0.6, method="clopper-pearson")
    assert (m.tp, m.fp, m.tn, m.fn) == (4, 1, 4, 1)
    assert m.sensitivity.estimate == 0.8 and m.specificity.estimate == 0.8
    assert m.ppv.estimate == 0.8 and m.npv.estimate == 0.8 and m.accuracy.estimate == 0.8
    assert (m.sensitivity.low, m.sensitivity.high) == pytest.approx(proportion_confint(4, 5, method="beta"))


def test_ppv_is_nan_when_nobody_is_called_positive() -> None:
    m = binary_metrics([0, 1], [0.1, 0.2], cutoff=0.5)
    assert np.isnan(m.ppv.estimate) and m.ppv.n == 0


def test_brier_and_calibration_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 1, 300)
    y = (rng.uniform(0, 1, 300) < p).astype(int)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p))
    obs, pred, counts = calibration_curve(y, p, n_bins=8)
    sk_obs, sk_pred = sk_calibration_curve(y, p, n_bins=8, strategy="uniform")
    np.testing.assert_allclose(obs, sk_obs)
    np.testing.assert_allclose(pred, sk_pred)
    assert counts.sum() == 300


@pytest.mark.parametrize(
    ("y", "s", "match"),
    [
        ([0, 1], [0.1], "same length"),
        ([0, 2], [0.1, 0.2], "0/1 labels"),
        ([1, 1], [0.1, 0.2], "at least one responder and one non-responder"),
        ([0, 1], [0.1, float("nan")], "finite"),
    ],
)
def test_bad_input_says_what_is_wrong(y: list[int], s: list[float], match: str) -> None:
    with pytest.raises(EvaluationInputError, match=match):
        delong_auc_ci(y, s)


def test_bad_alpha_and_counts_rejected() -> None:
    with pytest.raises(EvaluationInputError, match="alpha"):
        proportion_ci(1, 2, alpha=1.5)
    with pytest.raises(EvaluationInputError, match="k=3, n=2"):
        proportion_ci(3, 2)
    with pytest.raises(EvaluationInputError, match=r"\[0, 1\]"):
        brier_score([0, 1], [0.2, 1.3])
