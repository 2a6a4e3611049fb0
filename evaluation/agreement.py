"""Reader agreement statistics: ICC(2,1) absolute agreement, Cohen's kappa, Bland–Altman limits.

Plain functions over arrays; the double-reading workflow (:mod:`evaluation.adjudication`) and the study
report reuse them.

References
----------
Shrout PE, Fleiss JL. Intraclass correlations: uses in assessing rater reliability. Psychol Bull 1979;86:420-8.
McGraw KO, Wong SP. Forming inferences about some intraclass correlation coefficients. Psychol Methods
1996;1:30-46 (ICC(A,1), its F-based confidence interval, Table 7 / case 2A).
Cohen J. A coefficient of agreement for nominal scales. Educ Psychol Meas 1960;20:37-46.
Bland JM, Altman DG. Statistical methods for assessing agreement between two methods of clinical
measurement. Lancet 1986;1:307-10.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats


@dataclass(frozen=True)
class IccResult:
    """ICC(2,1) (two-way random effects, absolute agreement, single rater) with its confidence interval.

    Attributes
    ----------
    icc : float
        Point estimate.
    ci_low, ci_high : float
        Bounds of the ``1 − alpha`` confidence interval (McGraw & Wong 1996).
    n_subjects, n_raters : int
        Size of the ratings matrix used.
    ms_rows, ms_cols, ms_error : float
        Two-way ANOVA mean squares (subjects, raters, residual).
    """

    icc: float
    ci_low: float
    ci_high: float
    n_subjects: int
    n_raters: int
    ms_rows: float
    ms_cols: float
    ms_error: float


def _mean_squares(y: np.ndarray) -> tuple[float, float, float]:
    n, k = y.shape
    grand = y.mean()
    ss_rows = k * float(((y.mean(axis=1) - grand) ** 2).sum())
    ss_cols = n * float(((y.mean(axis=0) - grand) ** 2).sum())
    ss_total = float(((y - grand) ** 2).sum())
    ss_error = ss_total - ss_rows - ss_cols
    return ss_rows / (n - 1), ss_cols / (k - 1), ss_error / ((n - 1) * (k - 1))


def icc_a1(ratings: ArrayLike, alpha: float = 0.05) -> IccResult:
    """ICC(2,1) absolute agreement of ``k`` raters on ``n`` subjects, with a ``1 − alpha`` CI.

    Parameters
    ----------
    ratings : array_like, shape (n_subjects, n_raters)
        One row per subject (e.g. subject-visit SLD in mm), one column per rater; no missing values.
    alpha : float
        Two-sided error rate of the interval (0.05 → 95 % CI).

    Returns
    -------
    IccResult

    Notes
    -----
    ``ICC = (MSR − MSE) / (MSR + (k − 1)·MSE + k·(MSC − MSE)/n)`` (Shrout & Fleiss 1979, ICC(2,1));
    interval from McGraw & Wong 1996 (ICC(A,1)) with Satterthwaite degrees of freedom ``v``.

    Raises
    ------
    ValueError
        Fewer than 2 subjects or raters, missing values, or ``alpha`` outside (0, 1).
    """
    y = np.asarray(ratings, dtype=float)
    if y.ndim != 2 or y.shape[0] < 2 or y.shape[1] < 2:
        raise ValueError(f"ratings must be a (n_subjects ≥ 2, n_raters ≥ 2) matrix, but had shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("ratings contain missing or infinite values; drop incomplete subjects first")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), but was {alpha!r}")
    n, k = y.shape
    msr, msc, mse = _mean_squares(y)
    denominator = msr + (k - 1) * mse + k * (msc - mse) / n
    icc = (msr - mse) / denominator if denominator > 0 else float("nan")
    low, high = _icc_a1_interval(icc, msr, msc, mse, n, k, alpha)
    return IccResult(icc, low, high, n, k, msr, msc, mse)


def _icc_a1_interval(
    icc: float, msr: float, msc: float, mse: float, n: int, k: int, alpha: float
) -> tuple[float, float]:
    if not np.isfinite(icc) or icc >= 1 or mse == 0:
        return float("nan"), float("nan")
    a = k * icc / (n * (1 - icc))
    b = 1 + k * icc * (n - 1) / (n * (1 - icc))
    v = (a * msc + b * mse) ** 2 / ((a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / ((n - 1) * (k - 1)))
    f_low = stats.f.ppf(1 - alpha / 2, n - 1, v)
    f_high = stats.f.ppf(1 - alpha / 2, v, n - 1)
    low = n * (msr - f_low * mse) / (f_low * (k * msc + (k * n - k - n) * mse) + n * msr)
    high = n * (f_high * msr - mse) / (k * msc + (k * n - k - n) * mse + n * f_high * msr)
    return float(low), float(high)


@dataclass(frozen=True)
class KappaResult:
    """Cohen's kappa with its large-sample 95 % interval and the observed agreement."""

    kappa: float
    ci_low: float
    ci_high: float
    observed: float
    n: int


def cohen_kappa(a: Sequence[object], b: Sequence[object], labels: Sequence[object] | None = None) -> KappaResult:
    """Unweighted Cohen's kappa between two raters' categorical labels (Cohen 1960).

    Parameters
    ----------
    a, b : sequence
        Paired labels (e.g. the two readers' RECIST time-point responses per subject-visit).
    labels : sequence, optional
        Category set; defaults to the labels seen.

    Notes
    -----
    The interval uses the large-sample standard error
    ``sqrt(p_o (1 − p_o) / (n (1 − p_e)²))`` (Cohen 1960), clipped to [−1, 1]. Perfect agreement on a
    single category has no defined kappa: ``nan`` is returned.
    """
    if len(a) != len(b):
        raise ValueError(f"the two label sequences differ in length ({len(a)} vs {len(b)})")
    if len(a) == 0:
        raise ValueError("no paired labels to compare")
    cats = list(labels) if labels is not None else sorted({*a, *b}, key=str)
    index = {c: i for i, c in enumerate(cats)}
    unknown = {x for x in (*a, *b) if x not in index}
    if unknown:
        raise ValueError(f"labels {sorted(map(str, unknown))} are not in the category set {cats}")
    table = np.zeros((len(cats), len(cats)))
    for x, y in zip(a, b, strict=True):
        table[index[x], index[y]] += 1
    n = int(table.sum())
    p = table / n
    p_o = float(np.trace(p))
    p_e = float(p.sum(axis=1) @ p.sum(axis=0))
    if p_e == 1:
        return KappaResult(float("nan"), float("nan"), float("nan"), p_o, n)
    kappa = (p_o - p_e) / (1 - p_e)
    se = float(np.sqrt(p_o * (1 - p_o) / (n * (1 - p_e) ** 2)))
    z = float(stats.norm.ppf(0.975))
    return KappaResult(kappa, max(-1.0, kappa - z * se), min(1.0, kappa + z * se), p_o, n)


@dataclass(frozen=True)
class BlandAltman:
    """Bland–Altman summary of paired measurements (``a − b``), in the measurement's unit."""

    bias: float
    sd: float
    loa_low: float
    loa_high: float
    n: int


def bland_altman(a: ArrayLike, b: ArrayLike) -> BlandAltman:
    """Mean difference and 95 % limits of agreement ``bias ± 1.96 · sd`` (Bland & Altman 1986).

    Parameters
    ----------
    a, b : array_like, shape (n,)
        Paired measurements (e.g. two readers' SLD in mm); ``n ≥ 2``.
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"need two 1-D arrays of equal length ≥ 2, but had shapes {x.shape} and {y.shape}")
    diff = x - y
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1))
    return BlandAltman(bias, sd, bias - 1.96 * sd, bias + 1.96 * sd, int(x.size))
