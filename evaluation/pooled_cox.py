"""A pooled Cox hazard ratio from site-level aggregates only: a site-stratified Cox model fitted by Newton.

Each site is a stratum with its own baseline hazard; the partial likelihood of the pooled model is the sum
of the sites' partial likelihoods. At the current coefficient β every site computes three aggregates of its
own stratum — the log partial likelihood, its gradient (the score ``U``) and the observed information ``I``
(minus the Hessian) — and sends them through the :class:`~evaluation.pooled.AggregateCodec` seam (encrypted
at the site, added by the server, decrypted by a key holder). The key holder takes the Newton step
``β ← β + I⁻¹U`` (halved while the likelihood falls) and broadcasts the new β. No patient row, and under
CKKS no single site's aggregate, is seen by anyone else; what is revealed is the sequence of summed
(loglik, U, I) at the visited β — the same information a coordinating centre of a pooled analysis sees.

At convergence the estimate equals the Cox model fitted on the union of the rows with the site as a stratum
(lifelines ``CoxPHFitter(strata=["site"])``, Efron ties); the standard error is ``sqrt(diag(I⁻¹))`` at the
estimate (Wald). Ties: Efron (1977), as lifelines; Breslow's partial likelihood is the ``d = 1`` case.

References
----------
Cox, JRSS-B 34:187 (1972); Efron, JASA 72:557 (1977); Lu et al., "WebDISCO: a web service for distributed
Cox model learning without patient-level data sharing", JAMIA 22:1212 (2015) for the distributed Newton scheme.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as _sps

from evaluation.exceptions import PooledStatisticsError
from evaluation.pooled import AggregateCodec, sum_encrypted

log = logging.getLogger(__name__)

METHOD = ("site-stratified Cox proportional-hazards model (Efron ties) fitted by Newton–Raphson on the sum of "
          "the sites' encrypted score and information at each step; Wald 95 % CI; no patient rows pooled")


@dataclass(frozen=True)
class SiteSurvival:
    """One site's patient-level survival data (it stays at the site).

    Attributes
    ----------
    durations : ndarray, shape (n,)
        Time to event or censoring, days.
    events : ndarray, shape (n,)
        1 = event, 0 = censored.
    covariates : ndarray, shape (n, p)
        Covariates (a 1-D array is one covariate).
    """

    durations: NDArray[np.float64]
    events: NDArray[np.int_]
    covariates: NDArray[np.float64]

    @classmethod
    def of(cls, durations: ArrayLike, events: ArrayLike, covariates: ArrayLike) -> SiteSurvival:
        """Validated arrays (covariates as a 2-D ``(n, p)`` array)."""
        t = np.asarray(durations, dtype=np.float64)
        e = np.asarray(events).astype(np.int_)
        x = np.asarray(covariates, dtype=np.float64)
        x = x[:, None] if x.ndim == 1 else x
        if t.ndim != 1 or e.shape != t.shape or x.shape[0] != t.size:
            raise PooledStatisticsError(f"need one time, event and covariate row per subject; got {t.shape}, "
                                        f"{e.shape}, {x.shape}")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(x))) or not set(np.unique(e).tolist()) <= {0, 1}:
            raise PooledStatisticsError("times and covariates must be finite and events 0/1; check the site's table")
        return cls(t, e, x)


@dataclass(frozen=True)
class PooledCox:
    """The pooled fit: coefficients, hazard ratios with Wald CI and p-values, and how it converged."""

    beta: NDArray[np.float64]  # (p,)
    se: NDArray[np.float64]  # (p,)
    hr: NDArray[np.float64]
    hr_low: NDArray[np.float64]
    hr_high: NDArray[np.float64]
    p: NDArray[np.float64]
    loglik: float
    iterations: int
    n: int
    events: int


def site_terms(site: SiteSurvival, beta: NDArray[np.float64]) -> NDArray[np.float64]:
    """Log partial likelihood, score and information of one stratum at ``beta`` (Efron ties).

    Returns
    -------
    ndarray, shape (1 + p + p*p,)
        ``[loglik, U_1..U_p, I_11..I_pp]`` — the only thing a site reports.
    """
    x = site.covariates - site.covariates.mean(axis=0)  # centring is exact for the partial likelihood
    p = x.shape[1]
    loglik, score, info = 0.0, np.zeros(p), np.zeros((p, p))
    theta = np.exp(x @ beta)
    for tau in np.unique(site.durations[site.events == 1]):
        risk = site.durations >= tau
        dead = risk & (site.durations == tau) & (site.events == 1)
        d = int(dead.sum())
        s0, s1 = theta[risk].sum(), theta[risk] @ x[risk]
        s2 = (x[risk] * theta[risk, None]).T @ x[risk]
        d0, d1 = theta[dead].sum(), theta[dead] @ x[dead]
        d2 = (x[dead] * theta[dead, None]).T @ x[dead]
        loglik += float(x[dead].sum(axis=0) @ beta)
        score += x[dead].sum(axis=0)
        for ell in range(d):
            f = ell / d
            phi0, phi1, phi2 = s0 - f * d0, s1 - f * d1, s2 - f * d2
            loglik -= float(np.log(phi0))
            score -= phi1 / phi0
            info += phi2 / phi0 - np.outer(phi1, phi1) / phi0**2
    return np.r_[loglik, score, info.ravel()]


def _summed_terms(sites: Sequence[SiteSurvival], beta: NDArray[np.float64],
                  codec: AggregateCodec) -> tuple[float, NDArray[np.float64], NDArray[np.float64]]:
    p = beta.size
    total = sum_encrypted([site_terms(s, beta) for s in sites], codec, 1 + p + p * p)
    return float(total[0]), total[1 : 1 + p], total[1 + p :].reshape(p, p)


def fit_pooled_cox(sites: Sequence[SiteSurvival], codec: AggregateCodec, *, alpha: float = 0.05,
                   max_iter: int = 50, tol: float = 1e-9) -> PooledCox:
    """Fit the site-stratified Cox model from the sites' summed (loglik, score, information).

    Parameters
    ----------
    sites : sequence of SiteSurvival
        One stratum per site, same covariates in the same order.
    codec : AggregateCodec
        ``PlainCodec`` (tests, one site) or ``CkksCodec`` (sites encrypt, the server only adds).
    alpha : float
        ``1 - alpha`` Wald intervals.
    max_iter, tol : int, float
        Newton iterations at most; stop when the largest step ``|Δβ|`` is below ``tol``.

    Raises
    ------
    PooledStatisticsError
        No site, no event, covariates differing in number, a covariate constant within every site (the
        stratified model cannot estimate it), or no convergence.
    """
    if not sites:
        raise PooledStatisticsError("no site reported survival aggregates; at least one site must take part")
    widths = {s.covariates.shape[1] for s in sites}
    if len(widths) != 1:
        raise PooledStatisticsError(f"sites report different numbers of covariates {sorted(widths)}; agree on one")
    if sum(int(s.events.sum()) for s in sites) == 0:
        raise PooledStatisticsError("no events at any site; a Cox model needs at least one event")
    beta = np.zeros(widths.pop())
    loglik, score, info = _summed_terms(sites, beta, codec)
    for iteration in range(1, max_iter + 1):
        if np.linalg.matrix_rank(info) < beta.size:
            raise PooledStatisticsError("the information matrix is singular: a covariate does not vary within any "
                                        "stratum at the event times; drop it or pool more sites")
        step = np.linalg.solve(info, score)
        for _ in range(30):  # step halving keeps the partial likelihood rising
            new_beta = beta + step
            new_loglik, new_score, new_info = _summed_terms(sites, new_beta, codec)
            if new_loglik >= loglik - 1e-12 * max(1.0, abs(loglik)):
                break
            step = step / 2
        beta, loglik, score, info = new_beta, new_loglik, new_score, new_info
        if np.max(np.abs(step)) < tol:
            return _result(beta, info, loglik, iteration, sites, alpha)
    raise PooledStatisticsError(f"pooled Cox fit did not converge in {max_iter} Newton steps (β = {beta.tolist()}); "
                                "check for a covariate that separates events (monotone likelihood)")


def _result(beta: NDArray[np.float64], info: NDArray[np.float64], loglik: float, iterations: int,
            sites: Sequence[SiteSurvival], alpha: float) -> PooledCox:
    se = np.sqrt(np.diag(np.linalg.inv(info)))
    z = float(_sps.norm.ppf(1.0 - alpha / 2.0))
    p = 2.0 * _sps.norm.sf(np.abs(beta / se))
    log.info("pooled Cox: β = %s after %d Newton step(s)", np.round(beta, 6).tolist(), iterations)
    return PooledCox(beta, se, np.exp(beta), np.exp(beta - z * se), np.exp(beta + z * se), p, loglik, iterations,
                     n=sum(s.durations.size for s in sites), events=sum(int(s.events.sum()) for s in sites))
