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


def headline(metrics: dict[str, Any]) -> str:
    """One line of the pooled headline numbers (as in metrics.json; ``inf`` = median not reached)."""
    p = metrics["pooled"]
    return (f"pooled AUC early {fmt_num(p['early']['auc'])} ({fmt_ci(p['early']['auc_ci'])}), "
            f"full {fmt_num(p['full']['auc'])} ({fmt_ci(p['full']['auc_ci'])}); "
            f"full-mode sens {fmt_num(p['full']['sensitivity'])}, spec {fmt_num(p['full']['specificity'])}; "
            f"ORR {fmt_num(p['orr'])} ({fmt_ci(p['orr_ci'])}); median PFS {fmt_num(p['median_pfs_days'], 0)} d "
            f"({fmt_ci(p['median_pfs_ci'], 0)}) [{metrics['pooling']['codec']}]")
