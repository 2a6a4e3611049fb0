"""The console headline says "not reached" for a median PFS the Kaplan–Meier curve never reaches (metrics.json
``median_pfs_days: null`` with its reason), never "None d"."""

from __future__ import annotations

from typing import Any

from fedresponse.headline import headline


def _metrics(median: float | None, reason: str | None) -> dict[str, Any]:
    pooled: dict[str, Any] = {"early": {"auc": 0.7, "auc_ci": [0.6, 0.8]}, "full": {"auc": None}, "orr": 0.4,
                              "orr_ci": [0.3, 0.5], "orr_n": 36, "median_pfs_days": median,
                              "median_pfs_ci": [231.0, "inf"]}
    if reason:
        pooled["median_pfs_days_not_estimable"] = reason
    return {"pooled": pooled, "pooling": {"codec": "PlainCodec"}}


def test_a_median_not_reached_reads_not_reached() -> None:
    line = headline(_metrics(None, "median not reached: the Kaplan–Meier estimate stays at or above 0.58"))
    assert "median PFS not reached (231–inf)" in line and "None" not in line


def test_a_median_reads_in_days() -> None:
    assert "median PFS 336 d (231–inf)" in headline(_metrics(336.0, None))
