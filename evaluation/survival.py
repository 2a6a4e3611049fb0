"""Progression-free survival: Kaplan–Meier, median with Brookmeyer–Crowley CI, log-rank, Cox HR, C-index.

The Kaplan–Meier estimate and the log-rank test are written over a *risk table* — numbers at risk and
events on a time grid — rather than over patient rows. With the grid set to every distinct observed
time the result is the ordinary (exact) estimate; with a coarser grid (fixed time bins) the same code
runs on the site-level aggregates of :mod:`evaluation.pooled`, so the pooled and the local analyses
share one implementation. Cox regression and Harrell's C-index need patient rows and use lifelines.

Conventions: times are days from the first dose (``PFS_DAYS``), ``event = 1`` for progression or death,
0 for censoring; at a tied time events are counted before censorings.

References
----------
Kaplan & Meier, JASA 53:457 (1958); Greenwood (1926); Kalbfleisch & Prentice (2002) for the log(−log)
interval; Brookmeyer & Crowley, Biometrics 38:29 (1982); Mantel (1966) / Peto & Peto (1972) log-rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as _sps

from evaluation.exceptions import EvaluationInputError, NotEstimableError

METHODS: dict[str, str] = {
    "km": "Kaplan–Meier product-limit estimate; pointwise 95 % CI from Greenwood's variance on the log(−log) scale",
    "median": "median PFS = first time S(t) ≤ 0.5 (midpoint where S = 0.5 exactly, as R/SAS); 95 % CI by "
    "Brookmeyer–Crowley (inverting the log(−log) band)",
    "logrank": "two-sided log-rank (Mantel–Haenszel) χ² test, 1 degree of freedom",
    "cox": "Cox proportional-hazards model (lifelines, Efron ties), HR = exp(β) with Wald 95 % CI",
    "cindex": "Harrell's concordance index (lifelines)",
}


@dataclass(frozen=True)
class RiskTable:
    """Numbers at risk and events on a time grid.

    Attributes
    ----------
    times : ndarray, shape (k,)
        Left edges of the grid cells, days, strictly increasing; cell ``i`` is ``[times[i], times[i+1])``
        and the last cell is open to the right.
    at_risk : ndarray, shape (k,)
        Subjects with time ``>= times[i]``.
    events : ndarray, shape (k,)
        Events in cell ``i``.
    """

    times: NDArray[np.float64]
    at_risk: NDArray[np.int64]
    events: NDArray[np.int64]

    def __add__(self, other: RiskTable) -> RiskTable:
        if self.times.shape != other.times.shape or not np.array_equal(self.times, other.times):
            raise EvaluationInputError("risk tables on different time grids cannot be added; use one shared grid")
        return RiskTable(self.times, self.at_risk + other.at_risk, self.events + other.events)


@dataclass(frozen=True)
class KaplanMeier:
    """A Kaplan–Meier curve on the grid of its risk table (``survival[i]`` holds just after ``times[i]``)."""

    table: RiskTable
    survival: NDArray[np.float64]
    low: NDArray[np.float64]
    high: NDArray[np.float64]
    alpha: float

    @property
    def times(self) -> NDArray[np.float64]:
        return self.table.times


def _validate_survival(durations: ArrayLike, events: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    t = np.asarray(durations, dtype=np.float64)
    e = np.asarray(events)
    if t.ndim != 1 or t.shape != e.shape:
        raise EvaluationInputError(f"durations and events must be 1-D of equal length, but had {t.shape}, {e.shape}")
    if t.size == 0:
        raise EvaluationInputError("no subjects: survival analysis needs at least one (time, event) pair")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise EvaluationInputError(
            f"PFS times must be finite and >= 0 days, but the smallest/largest were {np.nanmin(t)!r}/{np.nanmax(t)!r}"
        )
    if not set(np.unique(e).tolist()) <= {0, 1}:
        raise EvaluationInputError(f"events must be 0 (censored) or 1 (PD/death), but held {np.unique(e)[:5]}")
    return t, e.astype(np.int64)


def risk_table(durations: ArrayLike, events: ArrayLike, grid: ArrayLike | None = None) -> RiskTable:
    """Counts at risk and events on ``grid`` (default: every distinct observed time, i.e. exact).

    Parameters
    ----------
    durations : array_like, shape (n,)
        Days to event or censoring.
    events : array_like, shape (n,)
        1 = event, 0 = censored.
    grid : array_like, shape (k,), optional
        Increasing left cell edges in days; must start at or below the smallest time.
    """
    t, e = _validate_survival(durations, events)
    g = np.unique(t) if grid is None else np.asarray(grid, dtype=np.float64)
    if g.ndim != 1 or g.size == 0 or np.any(np.diff(g) <= 0):
        raise EvaluationInputError(f"grid must be a strictly increasing 1-D array, but was {g[:5]}...")
    if t.min() < g[0]:
        raise EvaluationInputError(f"grid starts at {g[0]} days, after the earliest time {t.min()}; start it at 0")
    at_risk = (t[None, :] >= g[:, None]).sum(axis=1).astype(np.int64)
    cell = np.searchsorted(g, t, side="right") - 1
    ev = np.bincount(cell[e == 1], minlength=g.size).astype(np.int64)
    return RiskTable(g, at_risk, ev)


def kaplan_meier(table: RiskTable, alpha: float = 0.05) -> KaplanMeier:
    """Kaplan–Meier estimate with Greenwood log(−log) pointwise ``1 - alpha`` limits."""
    n = table.at_risk.astype(np.float64)
    d = table.events.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        hazard = np.where(n > 0, d / n, 0.0)
        surv = np.cumprod(1.0 - hazard)
        green = np.cumsum(np.where(n - d > 0, d / (n * (n - d)), 0.0))
        log_s = np.log(surv)
        se = np.sqrt(green) / np.abs(log_s)
        z = float(_sps.norm.ppf(1.0 - alpha / 2.0))
        low = np.where((surv > 0) & (surv < 1), surv ** np.exp(z * se), np.where(surv >= 1, 1.0, 0.0))
        high = np.where((surv > 0) & (surv < 1), surv ** np.exp(-z * se), np.where(surv >= 1, 1.0, 0.0))
    return KaplanMeier(
        table,
        surv.astype(np.float64),
        np.nan_to_num(low).astype(np.float64),
        np.nan_to_num(high, nan=1.0).astype(np.float64),
        alpha,
    )


def _first_at_or_below(times: NDArray[np.float64], curve: NDArray[np.float64], level: float) -> float:
    hit = np.nonzero(curve <= level + 1e-9)[0]
    return float(times[hit[0]]) if hit.size else float("inf")


def median_survival(km: KaplanMeier) -> tuple[float, tuple[float, float]]:
    """Median survival time and its Brookmeyer–Crowley CI, days (``inf`` where not reached).

    The median is the first time with ``S(t) <= 0.5``; when the curve sits at exactly 0.5 over an interval
    the midpoint of that interval is reported (the convention of R ``survival`` and SAS ``LIFETEST``).
    lifelines and statsmodels return the interval's right end there, because their cumulative product
    lands a rounding error above 0.5.
    """
    median = _first_at_or_below(km.times, km.survival, 0.5)
    if np.isfinite(median):
        j = int(np.searchsorted(km.times, median))
        if abs(km.survival[j] - 0.5) < 1e-9:
            later = np.nonzero(km.survival[j:] < km.survival[j] - 1e-9)[0]
            if later.size:
                median = float((km.times[j] + km.times[j + later[0]]) / 2.0)
    return median, (_first_at_or_below(km.times, km.low, 0.5), _first_at_or_below(km.times, km.high, 0.5))


def at_risk_at(table: RiskTable, when: ArrayLike) -> NDArray[np.int64]:
    """Numbers at risk at the given days (exact when ``when`` lies on the grid or the grid is exact)."""
    w = np.asarray(when, dtype=np.float64)
    idx = np.searchsorted(table.times, w, side="left")
    padded = np.r_[table.at_risk, 0]
    return np.asarray(padded[idx], dtype=np.int64)


def logrank(table_a: RiskTable, table_b: RiskTable) -> tuple[float, float]:
    """Two-group log-rank test from risk tables on a shared grid.

    Returns
    -------
    chi2 : float
        ``(O_a - E_a)^2 / V``.
    p : float
        Two-sided p-value (χ², 1 df).
    """
    if not np.array_equal(table_a.times, table_b.times):
        raise EvaluationInputError("log-rank needs both groups on one time grid; build both with the same grid")
    n_a, n_b = table_a.at_risk.astype(float), table_b.at_risk.astype(float)
    d_a, d = table_a.events.astype(float), (table_a.events + table_b.events).astype(float)
    n = n_a + n_b
    ok = n > 0
    expected = np.sum(d[ok] * n_a[ok] / n[ok])
    frac = np.zeros_like(n)
    frac[ok] = n_a[ok] / n[ok]
    tie = np.where(n > 1, (n - d) / np.maximum(n - 1, 1), 1.0)
    var = float(np.sum(d * frac * (1 - frac) * tie))
    if var <= 0:
        return 0.0, 1.0
    chi2 = float((d_a.sum() - expected) ** 2 / var)
    return chi2, float(_sps.chi2.sf(chi2, 1))


def exact_logrank(durations: ArrayLike, events: ArrayLike, group: ArrayLike) -> tuple[float, float]:
    """Log-rank test of ``group == 1`` vs ``group == 0`` on the exact grid of observed times."""
    t, e = _validate_survival(durations, events)
    g = np.asarray(group).astype(bool)
    if g.shape != t.shape or g.all() or not g.any():
        raise EvaluationInputError(f"group must split the {t.size} subjects into two non-empty groups")
    grid = np.unique(t)
    return logrank(risk_table(t[g], e[g], grid), risk_table(t[~g], e[~g], grid))


def cox_hazard_ratio(
    durations: ArrayLike, events: ArrayLike, covariate: ArrayLike, alpha: float = 0.05
) -> tuple[float, tuple[float, float], float]:
    """Cox proportional-hazards HR for one covariate (per unit; for a 0/1 group, group 1 vs 0).

    Returns
    -------
    hr : float
    (low, high) : tuple of float
        Wald ``1 - alpha`` limits.
    p : float
        Wald p-value.

    Raises
    ------
    NotEstimableError
        The fit does not converge (lifelines' convergence warning, or |log HR| > :data:`MAX_ABS_LOG_HR`).
    """
    import pandas as pd

    t, e = _validate_survival(durations, events)
    x = np.asarray(covariate, dtype=np.float64)
    if x.shape != t.shape or np.ptp(x) == 0 or e.sum() == 0:
        raise EvaluationInputError("Cox regression needs a varying covariate and at least one event")
    frame = pd.DataFrame({"T": t, "E": e, "X": x})
    beta, se, fitter = _fit_cox(frame, alpha)
    z = float(_sps.norm.ppf(1.0 - alpha / 2.0))
    p = float(fitter.summary.loc["X", "p"])
    return float(np.exp(beta)), (float(np.exp(beta - z * se)), float(np.exp(beta + z * se))), p


#: |log HR| beyond this (HR outside 1e-4..1e4) means monotone likelihood: the fit ran off to infinity.
MAX_ABS_LOG_HR = 9.2


def _fit_cox(frame: Any, alpha: float) -> tuple[float, float, Any]:
    """(beta, se, fitter), or :class:`NotEstimableError` when the Newton–Raphson fit does not converge."""
    import warnings

    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError, ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            fitter = CoxPHFitter(alpha=alpha).fit(frame, duration_col="T", event_col="E")
        except (ConvergenceError, ConvergenceWarning) as exc:
            raise NotEstimableError(f"the Cox model did not converge: {str(exc).splitlines()[0]}") from exc
    beta, se = float(fitter.params_["X"]), float(fitter.standard_errors_["X"])
    if not (np.isfinite(beta) and np.isfinite(se)) or abs(beta) > MAX_ABS_LOG_HR:
        raise NotEstimableError(f"the Cox model did not converge (log HR {beta:.3g}, SE {se:.3g}: monotone likelihood, "
                                "e.g. no event in one group)")
    return beta, se, fitter


def median_or_reason(km: KaplanMeier) -> tuple[float | None, tuple[float, float], str | None]:
    """:func:`median_survival` for ``metrics.json``: ``(median, ci, None)``, or ``(None, ci, reason)`` when the
    Kaplan–Meier curve never reaches 0.5 (a median not reached is not estimable, never a number)."""
    median, ci = median_survival(km)
    if np.isfinite(median):
        return median, ci, None
    lowest = float(km.survival.min()) if km.survival.size else 1.0
    return None, ci, f"median not reached: the Kaplan–Meier estimate stays at or above {lowest:.2f}"


def concordance(durations: ArrayLike, events: ArrayLike, scores: ArrayLike) -> float:
    """Harrell's C-index of ``scores`` (higher score = longer expected PFS)."""
    from lifelines.utils import concordance_index

    t, e = _validate_survival(durations, events)
    return float(concordance_index(t, np.asarray(scores, dtype=np.float64), e))


def landmark(
    durations: ArrayLike, events: ArrayLike, responder: ArrayLike, landmark_day: float
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.bool_], NDArray[np.bool_]]:
    """Landmark analysis of survival by achieved response (Anderson, Cain & Gelber, J Clin Oncol 1983).

    Comparing survival by a response that is only known later favours responders (they had to survive long
    enough to respond: guarantee-time bias). The landmark method fixes the response status at a landmark day
    and follows only the subjects still event-free and in follow-up then, from the landmark on.

    Parameters
    ----------
    durations, events : array_like, shape (n,)
        PFS in days from the first dose, 1 = event.
    responder : array_like, shape (n,)
        Response status known at the landmark (1/0); NaN when unknown (left out).
    landmark_day : float
        Study day of the landmark (the protocol's T1 window end).

    Returns
    -------
    time, event, group, kept
        Time since the landmark (days) and event of the kept subjects, their response group (True =
        responder), and the boolean mask (shape (n,)) of who was kept.
    """
    t, e = _validate_survival(durations, events)
    r = np.asarray(responder, dtype=np.float64)
    kept = (t > landmark_day) & np.isfinite(r)
    return t[kept] - landmark_day, e[kept], r[kept] == 1, kept
