"""Regenerate the headline efficacy results from the submitted ADaM datasets (pandas + pyreadstat only).

Run from the package::

    python adam/programs/results.py [ADAM_DIR] [OUT_JSON]

Defaults: ``..`` (the ADaM folder, relative to this file) and ``./results.json``. Computes, with no statistics
package (the formulas are written out below):

- ORR = (CR + PR) / N for ADRS ``BOR``/``CBOR`` (RECIST 1.1 unconfirmed/confirmed) and ``IBOR``/``ICBOR``
  (iRECIST: iCR/iPR), over all enrolled (ADSL ``ITTFL = Y``, the protocol's denominator) and over the efficacy
  population (``EFFFL = Y``), with the exact Clopper–Pearson 95 % interval (Clopper & Pearson 1934), found by
  bisection on the binomial tail;
- PFS and IPFS (ADTTE, event = ``CNSR = 0``): N, events, Kaplan–Meier median with the Brookmeyer–Crowley 95 %
  interval (Brookmeyer & Crowley 1982) from the Greenwood log(−log) pointwise band; a median the curve does not
  reach is ``null``;

writes them to OUT_JSON and, when ADAM_DIR holds the package's ``results.json`` (written by the export with
the platform's statistics code), compares: exit status 0 when every number agrees to 1e-6, 1 otherwise.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyreadstat

HERE = Path(__file__).resolve().parent
RESPONDERS = {"CR", "PR", "iCR", "iPR"}
BEST = ("BOR", "CBOR", "IBOR", "ICBOR")
TTE = ("PFS", "IPFS")
ALPHA = 0.05


def read_xpt(path: Path) -> pd.DataFrame:
    frame, _ = pyreadstat.read_xport(str(path), disable_datetime_conversion=True)
    return frame


def _log_pmf(i: int, n: int, p: float) -> float:
    return (math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p)
            + (n - i) * math.log1p(-p))


def _upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.exp(_log_pmf(i, n, p)) for i in range(k, n + 1))


def _bisect(f: Any, target: float, increasing: bool) -> float:
    low, high = 0.0, 1.0
    for _ in range(200):
        mid = (low + high) / 2
        if (f(mid) < target) == increasing:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def clopper_pearson(k: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Exact interval: P(X >= k | low) = alpha/2 and P(X <= k | high) = alpha/2."""
    low = 0.0 if k == 0 else _bisect(lambda p: _upper_tail(k, n, p), alpha / 2, increasing=True)
    high = 1.0 if k == n else _bisect(lambda p: 1.0 - _upper_tail(k + 1, n, p), alpha / 2, increasing=False)
    return low, high


def normal_quantile(q: float) -> float:
    """z with Phi(z) = q (bisection on the error function)."""
    low, high = -10.0, 10.0
    for _ in range(200):
        mid = (low + high) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < q:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def orr(adsl: pd.DataFrame, adrs: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for code in BEST:
        best = adrs[adrs["PARAMCD"] == code].set_index("USUBJID")["AVALC"]
        for flag in ("ITTFL", "EFFFL"):
            subjects = adsl.loc[adsl[flag] == "Y", "USUBJID"]
            n = len(subjects)
            k = int(sum(best.get(s, "") in RESPONDERS for s in subjects))
            low, high = clopper_pearson(k, n) if n else (float("nan"), float("nan"))
            out[f"ORR_{code}_{flag}"] = {"responders": k, "n": n, "rate": k / n if n else None,
                                         "ci95": [low, high] if n else None}
    return out


def _first_at_or_below(times: list[float], curve: list[float], level: float) -> float | None:
    return next((t for t, s in zip(times, curve, strict=True) if s <= level + 1e-9), None)


def kaplan_meier(days: list[float], events: list[int], z: float) -> tuple[list[float], list[float], list[float],
                                                                          list[float]]:
    """Times, S(t) and the Greenwood log(-log) pointwise band (low, high) at every distinct time."""
    times = sorted(set(days))
    surv, green, s, g = [], [], 1.0, 0.0
    for t in times:
        n = sum(d >= t for d in days)
        d = sum(1 for x, e in zip(days, events, strict=True) if x == t and e == 1)
        s *= 1 - d / n
        g += d / (n * (n - d)) if n - d > 0 else 0.0
        surv.append(s)
        green.append(g)
    low, high = [], []
    for s, g in zip(surv, green, strict=True):
        if 0 < s < 1:
            se = math.sqrt(g) / abs(math.log(s))
            low.append(s ** math.exp(z * se))
            high.append(s ** math.exp(-z * se))
        else:
            low.append(1.0 if s >= 1 else 0.0)
            high.append(1.0 if s >= 1 else 0.0)
    return times, surv, low, high


def median(times: list[float], surv: list[float]) -> float | None:
    """First time with S <= 0.5; the midpoint of a flat stretch at exactly 0.5 (R survival, SAS LIFETEST)."""
    found = _first_at_or_below(times, surv, 0.5)
    if found is None:
        return None
    j = times.index(found)
    if abs(surv[j] - 0.5) < 1e-9:
        later = [i for i in range(j, len(surv)) if surv[i] < surv[j] - 1e-9]
        if later:
            return (times[j] + times[later[0]]) / 2
    return found


def pfs(adtte: pd.DataFrame) -> dict[str, Any]:
    z = normal_quantile(1 - ALPHA / 2)
    out: dict[str, Any] = {}
    for code in TTE:
        rows = adtte[adtte["PARAMCD"] == code]
        days = [float(v) for v in rows["AVAL"]]
        events = [1 if c == 0 else 0 for c in rows["CNSR"]]
        times, surv, low, high = kaplan_meier(days, events, z) if days else ([], [], [], [])
        out[f"{code}_MEDIAN"] = {"n": len(days), "events": sum(events), "median": median(times, surv),
                                 "ci95": [_first_at_or_below(times, low, 0.5), _first_at_or_below(times, high, 0.5)]}
    return out


def _numbers(value: Any) -> list[float | None]:
    if isinstance(value, dict):
        return [x for key in sorted(value) for x in _numbers(value[key])]
    if isinstance(value, list):
        return [x for item in value for x in _numbers(item)]
    return [None if value is None else float(value)]


def agree(mine: dict[str, Any], submitted: dict[str, Any]) -> list[str]:
    """Keys whose numbers differ (beyond 1e-6) between two results documents."""
    bad = [key for key in sorted(set(mine) | set(submitted)) if key not in mine or key not in submitted]
    for key in sorted(set(mine) & set(submitted)):
        a, b = _numbers(mine[key]), _numbers(submitted[key])
        if len(a) != len(b) or any((x is None) != (y is None) or (x is not None and y is not None and not (
                math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-6) or (math.isnan(x) and math.isnan(y))))
                for x, y in zip(a, b, strict=False)):
            bad.append(key)
    return bad


def main(argv: list[str]) -> int:
    adam_dir = Path(argv[1]) if len(argv) > 1 else HERE.parent
    out = Path(argv[2]) if len(argv) > 2 else Path("results.json")
    adsl, adrs, adtte = (read_xpt(adam_dir / f"{name}.xpt") for name in ("adsl", "adrs", "adtte"))
    results = orr(adsl, adrs) | pfs(adtte)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    for key, value in results.items():
        print(f"{key}: {value}")
    submitted = adam_dir / "results.json"
    if not submitted.exists():
        return 0
    bad = agree(results, json.loads(submitted.read_text(encoding="utf-8")))
    print("results MATCH the package's results.json" if not bad else f"results DIFFER in {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
