"""DHI association with response and PFS per interval, raw and adjusted for the change in tumour volume.

The DHI is a secondary endpoint (docs/dhi.md): it should say something about response that the size change
does not already say. For every interval (``FROM → TO``) and every quantity (the DHI, its components, and
the volume change itself as the reference) :func:`dhi_association` reports

* ``auc`` with its DeLong 95 % CI — P(responder's value > non-responder's);
* ``rho_vol`` — Spearman correlation with ``DLOGVOL`` (how much of a size proxy the quantity is);
* ``partial_rho``, ``partial_p`` — partial Spearman correlation with the responder flag, controlling for
  ``DLOGVOL`` (ranks residualised on the ranks of ``DLOGVOL``; t-test with n − 3 degrees of freedom);
* ``hr``, ``hr_ci``, ``hr_p`` — Cox hazard ratio of PFS per SD of the quantity, **adjusted for DLOGVOL**
  (both standardised; lifelines), and ``hr_crude`` without the adjustment.

Input is a site's patient-level table; the output is site-level summary rows, so it runs inside a site
(or on the pooled synthetic benchmark), never on patient rows that crossed the hospital wall.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from evaluation.exceptions import EvaluationInputError
from evaluation.pooled import AggregateCodec
from evaluation.stats import delong_auc_ci

#: Quantities of a ``radiomics dhi`` table compared by :func:`dhi_association` (DLOGVOL is the size reference).
DEFAULT_QUANTITIES: tuple[str, ...] = ("DHI", "Z_DENSITY", "Z_SPATIAL", "Z_TEXTURE", "DELTA_ITH", "JSD", "DLOGVOL")


def partial_spearman(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[float, float]:
    """Spearman correlation of ``x`` and ``y`` controlling for ``z`` (ranks residualised on ranks of z).

    Returns (rho, two-sided p with n − 3 degrees of freedom); NaN when n < 4 or a residual is constant.
    """
    n = x.size
    if n < 4:
        return math.nan, math.nan
    rx, ry, rz = (sps.rankdata(v) for v in (x, y, z))
    design = np.column_stack([np.ones(n), rz])

    def resid(v: np.ndarray) -> np.ndarray:
        coef, *_ = np.linalg.lstsq(design, v, rcond=None)
        return np.asarray(v - design @ coef)

    ex, ey = resid(rx), resid(ry)
    if np.ptp(ex) < 1e-12 or np.ptp(ey) < 1e-12:
        return math.nan, math.nan
    rho = float(np.corrcoef(ex, ey)[0, 1])
    t = rho * math.sqrt((n - 3) / max(1e-300, 1.0 - rho * rho))
    return rho, float(2.0 * sps.t.sf(abs(t), n - 3))


def _cox(frame: pd.DataFrame, columns: list[str]) -> tuple[float, tuple[float, float], float]:
    """HR per SD of the first column (others as covariates), Wald 95 % CI and p; NaN when it cannot be fitted."""
    from lifelines import CoxPHFitter

    data = frame[["PFS_DAYS", "PFS_EVENT", *columns]].copy()
    for c in columns:
        data[c] = (data[c] - data[c].mean()) / data[c].std(ddof=0)
    try:
        fitter = CoxPHFitter().fit(data, duration_col="PFS_DAYS", event_col="PFS_EVENT")
    except Exception:  # lifelines raises several types on separation or non-convergence
        return math.nan, (math.nan, math.nan), math.nan
    beta, se = float(fitter.params_[columns[0]]), float(fitter.standard_errors_[columns[0]])
    p = float(fitter.summary.loc[columns[0], "p"])
    return math.exp(beta), (math.exp(beta - 1.96 * se), math.exp(beta + 1.96 * se)), p


def _row(sub: pd.DataFrame, quantity: str) -> dict[str, object]:
    x = sub[quantity].to_numpy(float)
    y = sub["RESPONDER"].to_numpy(int)
    vol = sub["DLOGVOL"].to_numpy(float)
    out: dict[str, object] = {"quantity": quantity, "n": int(x.size), "responders": int(y.sum())}
    if 0 < y.sum() < y.size and np.ptp(x) > 0:
        auc, ci = delong_auc_ci(y, x)
        out.update(auc=auc, auc_low=ci[0], auc_high=ci[1])
    out["rho_vol"] = float(sps.spearmanr(x, vol).statistic) if np.ptp(x) > 0 and np.ptp(vol) > 0 else math.nan
    rho, p = partial_spearman(x, y.astype(float), vol) if quantity != "DLOGVOL" else (math.nan, math.nan)
    out.update(partial_rho=rho, partial_p=p)
    if {"PFS_DAYS", "PFS_EVENT"} <= set(sub.columns) and sub["PFS_EVENT"].sum() > 1 and np.ptp(x) > 0:
        out["hr_crude"] = _cox(sub, [quantity])[0]
        hr, hci, hp = _cox(sub, [quantity] if quantity == "DLOGVOL" else [quantity, "DLOGVOL"])
        out.update(hr=hr, hr_low=hci[0], hr_high=hci[1], hr_p=hp)
    return out


def dhi_association(
    dhi: pd.DataFrame, outcomes: pd.DataFrame, quantities: Sequence[str] = DEFAULT_QUANTITIES
) -> pd.DataFrame:
    """Per interval and quantity: AUC, size correlation, volume-adjusted partial correlation and Cox HR.

    Parameters
    ----------
    dhi : DataFrame
        ``radiomics dhi`` rows: ``USUBJID, FROM, TO, DLOGVOL`` and the ``quantities`` (one lesion per patient).
    outcomes : DataFrame
        ``USUBJID, RESPONDER`` (0/1) and optionally ``PFS_DAYS, PFS_EVENT``.
    quantities : sequence of str

    Returns
    -------
    DataFrame
        One row per (``interval``, ``quantity``) with the columns of the module docstring.
    """
    need = {"USUBJID", "FROM", "TO", "DLOGVOL", *quantities}
    missing = sorted(need - set(dhi.columns))
    if missing:
        raise EvaluationInputError(f"the DHI table lacks {missing}; write it with `fedresponse radiomics dhi`")
    if not {"USUBJID", "RESPONDER"} <= set(outcomes.columns):
        raise EvaluationInputError(f"outcomes need USUBJID and RESPONDER, but had {list(outcomes.columns)}")
    merged = dhi.merge(outcomes, on="USUBJID", how="inner")
    rows = []
    for (a, b), sub in merged.groupby(["FROM", "TO"], sort=True):
        sub = sub.dropna(subset=[*quantities, "RESPONDER"])
        for q in quantities:
            rows.append({"interval": f"{a}-{b}", **_row(sub, q)})
    return pd.DataFrame(rows)


#: Two-sided level below which an association counts as significant in the size-proxy sentence.
PROXY_ALPHA = 0.05
#: Keys of one interval's site-level DHI block (``site_summary.json`` ``dhi_intervals``), estimates in pairs.
INTERVAL_KEYS: tuple[str, ...] = ("auc", "auc_ci", "rho_vol", "partial_rho", "partial_p", "hr", "hr_ci", "hr_p")


def _finite(value: object) -> float | None:
    """``value`` as a float, or None when missing or not finite (JSON ``null``)."""
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def interval_table(dhi: pd.DataFrame) -> pd.DataFrame:
    """One row per (patient, interval): the mean over lesions of the ``radiomics dhi`` rows with a DHI.

    Raises
    ------
    EvaluationInputError
        The table lacks the columns of ``fedresponse radiomics dhi``.
    """
    need = {"USUBJID", "FROM", "TO", "DLOGVOL", "DHI"}
    missing = sorted(need - set(dhi.columns))
    if missing:
        raise EvaluationInputError(f"the DHI table lacks {missing}; write it with `fedresponse radiomics dhi`")
    frame = dhi[["USUBJID", "FROM", "TO", "DLOGVOL", "DHI"]].copy()
    for c in ("DLOGVOL", "DHI"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    frame = frame.dropna()
    return frame.groupby(["USUBJID", "FROM", "TO"], as_index=False)[["DLOGVOL", "DHI"]].mean()


def _not_estimable(entry: dict[str, Any], keys: Sequence[str], reason: str) -> None:
    entry.update(dict.fromkeys(keys))
    entry.update({f"{k}_not_estimable": reason for k in keys if not k.endswith("_ci")})


def _interval_block(row: pd.Series, events: int, min_cell: int, min_n: int) -> dict[str, Any]:
    """One interval's DHI row of :func:`dhi_association` as it may cross the wall (small-cell rule applied)."""
    n, resp = int(row["n"]), int(row["responders"])
    entry: dict[str, Any] = {"interval": str(row["interval"]), "n": n, "responders": resp, "events": events}
    auc, low, high = (_finite(row.get(k)) for k in ("auc", "auc_low", "auc_high"))
    entry.update(auc=auc, auc_ci=[low, high] if auc is not None else None, rho_vol=_finite(row.get("rho_vol")),
                 partial_rho=_finite(row.get("partial_rho")), partial_p=_finite(row.get("partial_p")))
    hr, hlow, hhigh = (_finite(row.get(k)) for k in ("hr", "hr_low", "hr_high"))
    entry.update(hr=hr, hr_ci=[hlow, hhigh] if hr is not None else None, hr_p=_finite(row.get("hr_p")))
    for key in INTERVAL_KEYS:
        if entry[key] is None and not key.endswith("_ci"):
            entry[f"{key}_not_estimable"] = "not computable at this site (a constant value or no variation)"
    smaller = min(resp, n - resp)
    if n < min_n or smaller < min_cell:
        _not_estimable(entry, INTERVAL_KEYS, f"n = {n}, smaller response class {smaller} "
                       f"(protocol: n >= {min_n}, each class >= {min_cell})")
    elif events < min_cell:
        _not_estimable(entry, ("hr", "hr_ci", "hr_p"), f"{events} PFS events < min_cell_size {min_cell}")
    entry["size_proxy"] = size_proxy(entry)
    return entry


def size_proxy(entry: Mapping[str, object]) -> bool | None:
    """True when the raw DHI–response association is significant but the volume-adjusted one is not.

    Raw: the AUC's 95 % CI excludes 0.5; adjusted: ``partial_p >= PROXY_ALPHA``. None when either is missing.
    """
    ci, p = entry.get("auc_ci"), entry.get("partial_p")
    if not isinstance(ci, list) or None in ci or not isinstance(p, float):
        return None
    raw = ci[0] > 0.5 or ci[1] < 0.5
    return bool(raw and p >= PROXY_ALPHA)


def site_dhi_intervals(dhi: pd.DataFrame, outcomes: pd.DataFrame, *, min_cell: int,
                       min_n: int) -> list[dict[str, Any]]:
    """The site's per-interval DHI statistics (AUC, ρ with Δlog volume, partial ρ, adjusted Cox HR) to send.

    Site-level numbers only, each with its n; an interval whose smaller response class has fewer than
    ``min_cell`` patients (or fewer than ``min_n`` patients in all) is sent as ``<key>: null`` +
    ``<key>_not_estimable``, and the Cox HR likewise when PFS events are fewer than ``min_cell``.
    """
    table = interval_table(dhi)
    merged = table.merge(outcomes, on="USUBJID", how="inner")
    assoc = dhi_association(table, outcomes, ("DHI",)) if len(merged) else pd.DataFrame()
    out = []
    for _, row in assoc.iterrows():
        a, b = str(row["interval"]).split("-", 1)
        sub = merged[(merged["FROM"] == a) & (merged["TO"] == b)]
        events = int(sub["PFS_EVENT"].sum()) if "PFS_EVENT" in sub.columns else 0
        out.append(_interval_block(row, events, min_cell, min_n))
    return out


def pooled_partial_correlation(site_blocks: Sequence[Mapping[str, object]], *, covariates: int = 1,
                               alpha: float = 0.05) -> dict[str, Any]:
    """Inverse-variance Fisher-z meta-analysis of the sites' partial correlations for one interval.

    Each site's ``z = atanh(r)`` has variance ``1 / (n − 3 − covariates)``; the pooled z is the weighted
    mean, back-transformed with its normal CI and a two-sided p. Sites with ``partial_rho: null`` (small-cell
    rule) or ``n − 3 − covariates < 1`` are left out and listed in ``excluded``.
    """
    zs, weights, used, excluded = [], [], [], []
    for block in site_blocks:
        r, n = _finite(block.get("partial_rho")), int(block.get("n") or 0)  # type: ignore[call-overload]
        w = n - 3 - covariates
        if r is None or w < 1 or abs(r) >= 1.0:
            excluded.append(str(block.get("site")))
            continue
        zs.append(math.atanh(r))
        weights.append(float(w))
        used.append(str(block.get("site")))
    total = int(sum(weights)) + len(used) * (3 + covariates)
    out: dict[str, Any] = {"sites": used, "excluded": excluded, "n": total}
    if not zs:
        _not_estimable(out, ("partial_rho", "partial_rho_ci", "partial_p"), "no site sent an estimable partial "
                       "correlation (small-cell rule or too few patients)")
        return out
    z = float(np.average(zs, weights=weights))
    se = 1.0 / math.sqrt(sum(weights))
    q = float(sps.norm.ppf(1.0 - alpha / 2.0))
    out.update(partial_rho=math.tanh(z), partial_rho_ci=[math.tanh(z - q * se), math.tanh(z + q * se)],
               partial_p=float(2.0 * sps.norm.sf(abs(z) / se)))
    return out


def _inverse_variance(estimates: Sequence[tuple[str, float, float]], *, log_scale: bool,
                      alpha: float = 0.05) -> dict[str, Any]:
    """Fixed-effect inverse-variance pooling of (site, estimate, standard error); log scale for hazard ratios."""
    q = float(sps.norm.ppf(1.0 - alpha / 2.0))
    theta = np.array([math.log(e) if log_scale else e for _, e, _ in estimates])
    w = 1.0 / np.array([se * se for _, _, se in estimates])
    mean, se = float(np.sum(w * theta) / np.sum(w)), float(1.0 / math.sqrt(np.sum(w)))
    back = math.exp if log_scale else float
    return {"estimate": back(mean), "ci": [back(mean - q * se), back(mean + q * se)],
            "p": float(2.0 * sps.norm.sf(abs(mean - (0.0 if log_scale else 0.5)) / se))}


def _site_se(block: Mapping[str, Any], key: str, *, log_scale: bool) -> float | None:
    """The standard error a site's 95 % CI implies (Wald / DeLong normal interval), or None."""
    ci, value = block.get(f"{key}_ci"), _finite(block.get(key))
    if value is None or not isinstance(ci, list) or any(_finite(c) is None for c in ci):
        return None
    low, high = (math.log(c) if log_scale else c for c in ci)
    se = (high - low) / (2.0 * float(sps.norm.ppf(0.975)))
    return se if se > 0 else None


def _pooled_estimate(blocks: Sequence[Mapping[str, Any]], key: str, *, log_scale: bool) -> dict[str, Any]:
    usable = [(str(b.get("site")), float(b[key]), se) for b in blocks
              if (se := _site_se(b, key, log_scale=log_scale)) is not None]
    out: dict[str, Any] = {f"{key}_sites": [s for s, _, _ in usable]}
    if not usable:
        _not_estimable(out, (key, f"{key}_ci", f"{key}_p"), "no site sent an estimable value (small-cell rule)")
        return out
    pooled = _inverse_variance(usable, log_scale=log_scale)
    out.update({key: pooled["estimate"], f"{key}_ci": pooled["ci"], f"{key}_p": pooled["p"]})
    return out


def pooled_dhi_intervals(summaries: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    """Per interval, the DHI association pooled from the sites' ``dhi_intervals`` blocks (site numbers only).

    - ``partial_rho`` (CI, p): :func:`pooled_partial_correlation` (Fisher z, weights n − 3 − 1);
    - ``auc`` (CI, p vs 0.5) and ``hr`` (CI, p vs 1): fixed-effect inverse-variance meta-analysis of the site
      estimates, each site's SE from its 95 % CI (DeLong for the AUC, Wald on log HR for the Cox model).

    A site whose value was withheld (small-cell rule) contributes nothing to that statistic. None when no
    site sent per-interval DHI blocks.
    """
    by_interval: dict[str, list[Mapping[str, Any]]] = {}
    for site, summary in sorted(summaries.items()):
        for block in summary.get("dhi_intervals") or []:
            by_interval.setdefault(str(block["interval"]), []).append({"site": site, **block})
    if not by_interval:
        return None
    out = []
    for interval, blocks in sorted(by_interval.items()):
        entry: dict[str, Any] = {"interval": interval, "n": int(sum(int(b["n"]) for b in blocks)),
                                 "n_sites": len(blocks)}
        entry.update(_pooled_estimate(blocks, "auc", log_scale=False))
        entry.update(_pooled_estimate(blocks, "hr", log_scale=True))
        partial = pooled_partial_correlation(blocks)
        entry.update({k: partial[k] for k in partial if k.startswith("partial_")},
                     partial_rho_sites=partial["sites"], partial_rho_n=partial["n"])
        entry["size_proxy"] = size_proxy(entry)
        out.append(entry)
    return out


def pooled_adjusted_dhi_cox(sites: Mapping[str, pd.DataFrame], codec: AggregateCodec, *,
                            min_cell: int) -> dict[str, Any]:
    """Site-stratified two-covariate Cox of PFS on (DHI, DLOGVOL) for one interval, from summed site terms.

    Each site holds ``PFS_DAYS, PFS_EVENT, DHI, DLOGVOL`` (one row per patient; it stays at the site) and
    sends only :func:`evaluation.pooled_cox.site_terms` at each Newton step through ``codec``. The HR is per
    unit of DHI, adjusted for Δlog volume (no pooled SD is needed). A site with fewer than ``min_cell``
    patients or events contributes nothing (listed in ``suppressed``).
    """
    from evaluation.exceptions import PooledStatisticsError
    from evaluation.pooled_cox import SiteSurvival, fit_pooled_cox

    strata, suppressed = [], []
    for site, frame in sorted(sites.items()):
        rows = frame.dropna(subset=["PFS_DAYS", "PFS_EVENT", "DHI", "DLOGVOL"])
        events = int(rows["PFS_EVENT"].sum())
        if min(len(rows), events) < min_cell:
            suppressed.append({"site": site, "statistic": "dhi_hr_adjusted",
                               "reason": f"{len(rows)} subjects, {events} events (< min_cell_size {min_cell})"})
            continue
        strata.append(SiteSurvival.of(rows["PFS_DAYS"], rows["PFS_EVENT"], rows[["DHI", "DLOGVOL"]]))
    out: dict[str, Any] = {"suppressed": suppressed, "method": "site-stratified Cox on DHI + DLOGVOL (pooled_cox)"}
    try:
        fit = fit_pooled_cox(strata, codec)
    except PooledStatisticsError as exc:
        _not_estimable(out, ("hr", "hr_ci", "hr_p"), str(exc))
        return out
    out.update(hr=float(fit.hr[0]), hr_ci=[float(fit.hr_low[0]), float(fit.hr_high[0])], hr_p=float(fit.p[0]),
               hr_dlogvol=float(fit.hr[1]), n=fit.n, events=fit.events, iterations=fit.iterations)
    return out
