"""The package's headline efficacy results (``adam/results.json``), computed from the ADaM datasets with the
platform's statistics code — what the shipped ``adam/programs/results.py`` must reproduce with pandas alone.

ORR = (CR + PR) / N of ADRS BOR/CBOR/IBOR/ICBOR over ``ITTFL = Y`` (all enrolled: the protocol's denominator)
and ``EFFFL = Y``, Clopper–Pearson 95 % (:func:`evaluation.stats.proportion_ci`); PFS/IPFS Kaplan–Meier median
with the Brookmeyer–Crowley 95 % interval (:mod:`evaluation.survival`), ``None`` where not reached. Aggregates
only: no subject-level value.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from evaluation.stats import proportion_ci
from evaluation.survival import kaplan_meier, median_survival, risk_table

RESPONDERS = {"CR", "PR", "iCR", "iPR"}
BEST = ("BOR", "CBOR", "IBOR", "ICBOR")
TTE = ("PFS", "IPFS")


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def headline_results(adsl: pd.DataFrame, adrs: pd.DataFrame, adtte: pd.DataFrame) -> dict[str, Any]:
    """``{"ORR_<BOR code>_<flag>": {...}, "<PFS code>_MEDIAN": {...}}`` (see the module docstring)."""
    out: dict[str, Any] = {}
    for code in BEST:
        best = adrs[adrs["PARAMCD"] == code].set_index("USUBJID")["AVALC"]
        for flag in ("ITTFL", "EFFFL"):
            subjects = adsl.loc[adsl[flag] == "Y", "USUBJID"]
            k = int(sum(best.get(s, "") in RESPONDERS for s in subjects))
            est = proportion_ci(k, len(subjects), method="clopper-pearson")
            out[f"ORR_{code}_{flag}"] = {"responders": k, "n": len(subjects),
                                         "rate": est.estimate if len(subjects) else None,
                                         "ci95": [est.low, est.high] if len(subjects) else None}
    for code in TTE:
        rows = adtte[adtte["PARAMCD"] == code]
        entry: dict[str, Any] = {"n": len(rows), "events": int((rows["CNSR"] == 0).sum()), "median": None,
                                 "ci95": [None, None]}
        if len(rows):
            km = kaplan_meier(risk_table(rows["AVAL"].to_numpy(float), (rows["CNSR"] == 0).to_numpy(int)))
            med, (low, high) = median_survival(km)
            entry |= {"median": _finite(med), "ci95": [_finite(low), _finite(high)]}
        out[f"{code}_MEDIAN"] = entry
    return out
