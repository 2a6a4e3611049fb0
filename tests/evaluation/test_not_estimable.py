"""Statistics that cannot be estimated say so (``<key>: null`` + ``<key>_not_estimable``), never ``0.00 (0.00–0.00)``;
decrypted pooled counts are whole numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.exceptions import NotEstimableError
from evaluation.metrics import SiteData, compute_metrics, estimate
from evaluation.pooled import AggregateLayout, SiteInputs, pooled_metrics, site_aggregate
from evaluation.stats import auc_estimate, delong_auc_ci
from evaluation.survival import cox_hazard_ratio, kaplan_meier, median_or_reason, risk_table


def test_delong_with_a_class_of_one_is_not_estimable() -> None:
    y, s = np.array([1, 0, 0, 0, 0]), np.array([0.9, 0.1, 0.2, 0.3, 0.4])
    auc, ci = delong_auc_ci(y, s)
    assert auc == 1.0 and all(np.isnan(ci))  # no zero-width interval
    with pytest.raises(NotEstimableError, match="1 responder"):
        auc_estimate(y, s)
    with pytest.raises(NotEstimableError, match="minimum of 10"):
        auc_estimate(np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.1, 0.2]), min_patients=10)


def test_cox_that_does_not_converge_is_not_estimable() -> None:
    t = np.array([10.0, 20, 30, 40, 50, 60])
    with pytest.raises(NotEstimableError, match="did not converge"):
        cox_hazard_ratio(t, np.array([1, 1, 1, 0, 0, 0]), np.array([1.0, 1, 1, 0, 0, 0]))  # events in one group only


def test_median_not_reached_is_not_estimable() -> None:
    median, _, reason = median_or_reason(kaplan_meier(risk_table(np.array([10.0, 20, 30, 40]), np.array([1, 0, 0, 0]))))
    assert median is None and reason is not None and "not reached" in reason


@pytest.mark.parametrize("key", ["auc", "hr_responder"])
def test_the_convention(key: str) -> None:
    block: dict = {}

    def fails() -> tuple:
        raise NotEstimableError("why")

    estimate(block, key, fails)
    assert block[key] is None and block[f"{key}_ci"] is None and block[f"{key}_not_estimable"] == "why"
    estimate(block, key, lambda: (0.7, (0.5, 0.9)))
    assert block[key] == 0.7 and block[f"{key}_ci"] == [0.5, 0.9]


def test_site_blocks_name_the_reason() -> None:
    ids = [f"FEDRESP-S01-{i:04d}" for i in range(1, 7)]
    rows = [{"USUBJID": u, "MODE": m, "SCORE": 0.1 * (k + 1), "LABEL": int(k == 0), "PFS_DAYS": 100 + k,
             "PFS_EVENT": int(k < 2)} for k, u in enumerate(ids) for m in ("early", "full")]
    metrics = compute_metrics([SiteData("S01", pd.DataFrame(rows).assign(SITEID="S01"))], {"early": 0.5, "full": 0.5})
    site = metrics["sites"]["S01"]
    assert site["full"]["auc"] is None and "minimum" in site["full"]["auc_not_estimable"]
    assert site["hr_responder"] is None and site["hr_responder_not_estimable"]
    pooled = metrics["pooled"]  # 1 responder < min_cell_size: the site sends nothing for the mode, pooled says why
    assert {"site": "S01", "statistic": "full", "reason": "1 responders (< min_cell_size 5)"} in pooled["suppressed"]
    assert pooled["full"]["auc"] is None and "0 responder" in pooled["full"]["auc_not_estimable"]


def test_pooled_calibration_counts_are_rounded_after_decryption() -> None:
    layout = AggregateLayout()
    y = np.array([1, 0, 1, 0, 0, 1])
    s = np.array([0.05, 0.12, 0.55, 0.6, 0.91, 0.93])
    inputs = SiteInputs(labels=y, pfs_days=np.full(6, 50.0), pfs_event=np.zeros(6, int), scores={"early": s, "full": s},
                        cutoffs={"early": 0.5, "full": 0.5})
    vector = site_aggregate(inputs, layout)
    noisy = vector + np.random.default_rng(0).normal(0, 1e-7, vector.size)  # CKKS noise
    from evaluation.pooled import _round_counts

    cal = pooled_metrics(_round_counts(noisy, layout), {"early": 0.5, "full": 0.5}, layout)["full"]["calibration"]
    assert all(0.0 <= v <= 1.0 for v in cal["observed"])
    assert cal["count"] == [1.0, 1.0, 1.0, 1.0, 2.0]  # empty bins stay empty (noise ~1e-7 kept them before)
