"""One-line console summaries of an evaluation's ``metrics.json`` (``fedresponse evaluate`` and the demo).

Its own module so that the ``evaluate`` command and the demo's evaluate stage (which calls the command's
key-holder helpers) both read it without importing each other.
"""

from __future__ import annotations

from typing import Any


def fmt_num(value: object, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals when it is a float, else as written (``"inf"``, ``None``)."""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def fmt_ci(pair: list[object] | None, digits: int = 2) -> str:
    """``lo–hi`` of a confidence interval, ``–`` when there is none."""
    return "–" if not pair else f"{fmt_num(pair[0], digits)}–{fmt_num(pair[1], digits)}"


_CODEC_WORDS = {"CkksCodec": "pooled under CKKS encryption", "PlainCodec": "pooled in plaintext (no encryption)"}


def fmt_estimate(block: dict[str, Any], key: str, digits: int = 2) -> str:
    """``value (lo–hi)``, or ``not estimable`` when metrics.json says so (``<key>: null`` + ``<key>_not_estimable``)."""
    value = block.get(key)
    if value is None:
        return "not estimable"
    ci = block.get(f"{key}_ci")
    return fmt_num(value, digits) + (f" ({fmt_ci(ci, digits)})" if ci else "")


def _median(pooled: dict[str, Any]) -> str:
    """``336 d``, or why there is no median (not reached: the KM curve stays above 0.5)."""
    if pooled.get("median_pfs_days") is None:
        why = pooled.get("median_pfs_days_not_estimable")
        return "not reached" if not why or "not reached" in str(why) else f"not estimable ({why})"
    return f"{fmt_num(pooled['median_pfs_days'], 0)} d"


def headline(metrics: dict[str, Any]) -> str:
    """One line of the pooled headline numbers (as in metrics.json; ``inf`` = median or CI limit not reached)."""
    p = metrics["pooled"]
    codec = str(metrics["pooling"]["codec"])
    words = next((w for name, w in _CODEC_WORDS.items() if codec.startswith(name)), codec)
    suppressed = len(p.get("suppressed") or [])
    cells = f"; {suppressed} site statistic(s) withheld under the small-cell rule" if suppressed else ""
    sens = "not estimable" if p["full"].get("sensitivity") is None else fmt_num(p["full"]["sensitivity"])
    spec = "not estimable" if p["full"].get("specificity") is None else fmt_num(p["full"]["specificity"])
    return (f"pooled AUC early {fmt_estimate(p['early'], 'auc')}, full {fmt_estimate(p['full'], 'auc')}; "
            f"full-mode sens {sens}, spec {spec}; "
            f"ORR {fmt_num(p['orr'])} ({fmt_ci(p['orr_ci'])}) of {p.get('orr_n', '?')} enrolled; "
            f"median PFS {_median(p)} ({fmt_ci(p['median_pfs_ci'], 0)}) "
            f"[{words}{cells}]")
