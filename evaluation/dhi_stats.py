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
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from evaluation.exceptions import EvaluationInputError
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
