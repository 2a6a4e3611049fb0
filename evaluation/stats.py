"""Diagnostic-accuracy statistics for a binary response predictor.

Everything here works on plain arrays (one entry per patient) so that the same functions serve a
site's local evaluation, the centralized baseline and the tests. The pooled (federated) versions,
which never see a patient row, live in :mod:`evaluation.pooled` and reuse the count-based pieces.

Methods (each named in the report through :data:`METHODS`):

- ROC AUC with the DeLong (1988) variance, computed with the mid-rank algorithm of Sun & Xu (2014);
  the 95 % CI is the normal interval on the AUC scale, clipped to [0, 1].
- Youden cut-off: the threshold maximising sensitivity + specificity − 1 (Youden 1950); a patient is
  called a responder when ``score >= cutoff``.
- Proportions (sensitivity, specificity, PPV, NPV, accuracy, ORR) with the Wilson (1927) score interval
  or the exact Clopper–Pearson (1934) interval.
- Brier (1950) score and a reliability (calibration) curve over equal-width probability bins.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as _sps

from evaluation.exceptions import EvaluationInputError, NotEstimableError

CIMethod = Literal["wilson", "clopper-pearson"]

METHODS: dict[str, str] = {
    "auc": "ROC AUC (Mann–Whitney); 95 % CI from the DeLong variance (Sun & Xu 2014 mid-rank algorithm)",
    "cutoff": "Youden index maximum (sensitivity + specificity − 1), fixed on the training data",
    "wilson": "Wilson score interval",
    "clopper-pearson": "Clopper–Pearson exact interval",
    "brier": "Brier score (mean squared error of the predicted probability)",
    "calibration": "reliability curve over equal-width probability bins (observed rate vs mean prediction)",
}


@dataclass(frozen=True)
class Proportion:
    """A proportion ``k / n`` with its confidence interval.

    Attributes
    ----------
    k, n : int
        Successes and trials.
    estimate : float
        ``k / n`` (NaN when ``n == 0``).
    low, high : float
        Confidence limits (NaN when ``n == 0``).
    method : str
        ``"wilson"`` or ``"clopper-pearson"``.
    """

    k: int
    n: int
    estimate: float
    low: float
    high: float
    method: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _validate_binary(y_true: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.int_], NDArray[np.float64]]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise EvaluationInputError(
            f"y_true and scores must be 1-D arrays of the same length, but had shapes {y.shape} and {s.shape}"
        )
    if not np.all(np.isfinite(s)):
        bad = s[~np.isfinite(s)][:3].tolist()
        raise EvaluationInputError(f"scores must be finite, but contained {bad}; drop or impute those patients")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise EvaluationInputError(f"y_true must hold only 0/1 labels, but held {sorted(values)[:5]}")
    return y.astype(np.int_), s


def _require_both_classes(y: NDArray[np.int_]) -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise EvaluationInputError(
            f"AUC needs at least one responder and one non-responder, but saw {n_pos} of {y.size} positive"
        )


def _midrank(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Mid-ranks (1-based; tied values share the mean of their ranks)."""
    return np.asarray(_sps.rankdata(x, method="average"), dtype=np.float64)


def delong_placements(
    y_true: ArrayLike, scores: ArrayLike
) -> tuple[float, NDArray[np.float64], NDArray[np.float64]]:
    """AUC and the DeLong structural components (placement values).

    Parameters
    ----------
    y_true : array_like, shape (n,)
        1 for a responder (positive), 0 otherwise.
    scores : array_like, shape (n,)
        Higher means more likely a responder.

    Returns
    -------
    auc : float
    v10 : ndarray, shape (m,)
        For each positive, the fraction of negatives it outranks (ties count 1/2).
    v01 : ndarray, shape (n - m,)
        For each negative, the fraction of positives that outrank it.
    """
    y, s = _validate_binary(y_true, scores)
    _require_both_classes(y)
    pos, neg = s[y == 1], s[y == 0]
    m, n = pos.size, neg.size
    r_all = _midrank(np.concatenate([pos, neg]))
    r_pos, r_neg = _midrank(pos), _midrank(neg)
    v10 = (r_all[:m] - r_pos) / n
    v01 = 1.0 - (r_all[m:] - r_neg) / m
    return float(v10.mean()), v10, v01


def delong_variance(v10: NDArray[np.float64], v01: NDArray[np.float64]) -> float:
    """DeLong variance of the AUC from its placement values: ``var(V10)/m + var(V01)/n`` (ddof = 1)."""
    s10 = float(np.var(v10, ddof=1)) if v10.size > 1 else 0.0
    s01 = float(np.var(v01, ddof=1)) if v01.size > 1 else 0.0
    return s10 / v10.size + s01 / v01.size


def delong_auc_ci(y_true: ArrayLike, scores: ArrayLike, alpha: float = 0.05) -> tuple[float, tuple[float, float]]:
    """ROC AUC with its DeLong ``1 - alpha`` confidence interval.

    Parameters
    ----------
    y_true : array_like, shape (n,)
        1 for a responder, 0 otherwise; both classes must be present.
    scores : array_like, shape (n,)
        Predicted score or probability (higher = responder).
    alpha : float
        Two-sided error level (0.05 gives a 95 % CI).

    Returns
    -------
    auc : float
    (low, high) : tuple of float
        Normal-approximation limits ``auc ± z * sqrt(var_DeLong)``, clipped to [0, 1].

    With fewer than two subjects in a class the DeLong variance (ddof = 1) does not exist and the limits are
    NaN (:func:`auc_estimate` says why).

    References
    ----------
    DeLong, DeLong & Clarke-Pearson, Biometrics 44:837 (1988); Sun & Xu, IEEE SPL 21:1389 (2014).
    """
    _check_alpha(alpha)
    auc, v10, v01 = delong_placements(y_true, scores)
    if min(v10.size, v01.size) < 2:  # the DeLong variance (ddof = 1) does not exist: no interval, not 0-width
        return auc, (float("nan"), float("nan"))
    return auc, normal_ci(auc, delong_variance(v10, v01), alpha)


def auc_estimate(y_true: ArrayLike, scores: ArrayLike, min_patients: int = 1,
                 alpha: float = 0.05) -> tuple[float, tuple[float, float]]:
    """:func:`delong_auc_ci`, or :class:`NotEstimableError` with the reason when the data cannot carry it.

    Not estimable: one class absent, fewer than 2 subjects in a class (no DeLong variance), or fewer than
    ``min_patients`` subjects (``configs/study.yaml`` ``statistics.min_patients_estimate``).
    """
    y = np.asarray(y_true)
    positives, negatives = int(np.sum(y == 1)), int(np.sum(y == 0))
    if y.size < min_patients:
        raise NotEstimableError(f"{y.size} subject(s), fewer than the protocol's minimum of {min_patients}")
    if min(positives, negatives) < 2:
        raise NotEstimableError(f"DeLong variance needs at least 2 subjects in each class, but had {positives} "
                                f"responder(s) and {negatives} non-responder(s)")
    return delong_auc_ci(y_true, scores, alpha)


def normal_ci(estimate: float, variance: float, alpha: float = 0.05) -> tuple[float, float]:
    """``estimate ± z_{1-alpha/2} sqrt(variance)`` clipped to [0, 1]."""
    half = float(_sps.norm.ppf(1.0 - alpha / 2.0)) * float(np.sqrt(max(variance, 0.0)))
    return max(0.0, estimate - half), min(1.0, estimate + half)


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise EvaluationInputError(f"alpha must lie in (0, 1), but was {alpha!r}; use 0.05 for a 95 % CI")


def youden_cutoff(y_true: ArrayLike, scores: ArrayLike) -> float:
    """The score threshold maximising Youden's J = sensitivity + specificity − 1.

    Candidate thresholds are the observed scores (a patient is positive when ``score >= cutoff``);
    on ties in J the highest threshold wins (the most specific rule).

    Returns
    -------
    float
        The cut-off, in score units.
    """
    y, s = _validate_binary(y_true, scores)
    _require_both_classes(y)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(1 - y_sorted)
    last_of_value = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    j = tp[last_of_value] / tp[-1] - fp[last_of_value] / fp[-1]
    return float(s_sorted[last_of_value][int(np.argmax(j))])


def proportion_ci(k: int, n: int, alpha: float = 0.05, method: CIMethod = "wilson") -> Proportion:
    """A proportion with a Wilson or Clopper–Pearson confidence interval.

    Parameters
    ----------
    k, n : int
        Successes and trials (``0 <= k <= n``).
    alpha : float
        Two-sided error level.
    method : {"wilson", "clopper-pearson"}

    Returns
    -------
    Proportion
        With NaN estimate and limits when ``n == 0`` (nothing to estimate, e.g. PPV with no positive call).
    """
    _check_alpha(alpha)
    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= n:
        raise EvaluationInputError(f"need 0 <= k <= n, but got k={k}, n={n}")
    if n == 0:
        return Proportion(k, n, float("nan"), float("nan"), float("nan"), method)
    p = k / n
    if method == "wilson":
        z = float(_sps.norm.ppf(1.0 - alpha / 2.0))
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        low, high = max(0.0, centre - half), min(1.0, centre + half)
    elif method == "clopper-pearson":
        low = 0.0 if k == 0 else float(_sps.beta.ppf(alpha / 2.0, k, n - k + 1))
        high = 1.0 if k == n else float(_sps.beta.ppf(1.0 - alpha / 2.0, k + 1, n - k))
    else:
        raise EvaluationInputError(f"method must be 'wilson' or 'clopper-pearson', but was {method!r}")
    return Proportion(k, n, p, float(low), float(high), method)


@dataclass(frozen=True)
class BinaryMetrics:
    """Accuracy of the rule ``score >= cutoff`` against the reference labels."""

    cutoff: float
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: Proportion
    specificity: Proportion
    ppv: Proportion
    npv: Proportion
    accuracy: Proportion


def confusion_counts(y_true: ArrayLike, scores: ArrayLike, cutoff: float) -> tuple[int, int, int, int]:
    """``(tp, fp, tn, fn)`` of the rule ``score >= cutoff``."""
    y, s = _validate_binary(y_true, scores)
    called = s >= cutoff
    tp = int(np.sum(called & (y == 1)))
    fp = int(np.sum(called & (y == 0)))
    tn = int(np.sum(~called & (y == 0)))
    fn = int(np.sum(~called & (y == 1)))
    return tp, fp, tn, fn


def binary_metrics_from_counts(
    tp: int, fp: int, tn: int, fn: int, cutoff: float, alpha: float = 0.05, method: CIMethod = "wilson"
) -> BinaryMetrics:
    """Sensitivity, specificity, PPV, NPV and accuracy with CIs from a confusion table."""
    return BinaryMetrics(
        cutoff=float(cutoff),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        sensitivity=proportion_ci(tp, tp + fn, alpha, method),
        specificity=proportion_ci(tn, tn + fp, alpha, method),
        ppv=proportion_ci(tp, tp + fp, alpha, method),
        npv=proportion_ci(tn, tn + fn, alpha, method),
        accuracy=proportion_ci(tp + tn, tp + fp + tn + fn, alpha, method),
    )


def binary_metrics(
    y_true: ArrayLike, scores: ArrayLike, cutoff: float, alpha: float = 0.05, method: CIMethod = "wilson"
) -> BinaryMetrics:
    """Accuracy of ``score >= cutoff`` with CIs (the cut-off comes from training data, not these labels)."""
    tp, fp, tn, fn = confusion_counts(y_true, scores, cutoff)
    return binary_metrics_from_counts(tp, fp, tn, fn, cutoff, alpha, method)


def brier_score(y_true: ArrayLike, prob: ArrayLike) -> float:
    """Mean squared difference between predicted probability and outcome (0 is perfect)."""
    y, p = _validate_binary(y_true, prob)
    _check_probabilities(p)
    return float(np.mean((p - y) ** 2))


def _check_probabilities(p: NDArray[np.float64]) -> None:
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise EvaluationInputError(
            f"probabilities must lie in [0, 1], but ranged {p.min():.4g}..{p.max():.4g}; pass calibrated probabilities"
        )


def calibration_curve(
    y_true: ArrayLike, prob: ArrayLike, n_bins: int = 10
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int_]]:
    """Reliability curve over ``n_bins`` equal-width bins of [0, 1].

    Returns
    -------
    observed : ndarray, shape (k,)
        Fraction of responders in each non-empty bin.
    predicted : ndarray, shape (k,)
        Mean predicted probability in each non-empty bin.
    counts : ndarray, shape (k,)
        Patients per non-empty bin.
    """
    y, p = _validate_binary(y_true, prob)
    _check_probabilities(p)
    if n_bins < 1:
        raise EvaluationInputError(f"n_bins must be >= 1, but was {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges[1:-1], p, side="right"), 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    sums_y = np.bincount(idx, weights=y, minlength=n_bins)
    sums_p = np.bincount(idx, weights=p, minlength=n_bins)
    keep = counts > 0
    return sums_y[keep] / counts[keep], sums_p[keep] / counts[keep], counts[keep]


def roc_points(y_true: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """ROC curve vertices ``(fpr, tpr)`` from (0, 0) to (1, 1), one per distinct score."""
    y, s = _validate_binary(y_true, scores)
    _require_both_classes(y)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp = np.cumsum(y_sorted)[last]
    fp = np.cumsum(1 - y_sorted)[last]
    return np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]]
