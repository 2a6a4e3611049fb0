"""Small cells: a site whose cell of a pooled statistic is below statistics.min_cell_size contributes nothing to it,
and the output lists (site, statistic, reason)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from evaluation.metrics import SiteData, compute_metrics
from evaluation.pooled import AggregateLayout, SiteInputs, site_aggregate, suppress_small_cells
from evaluation.protocol import load_protocol

MIN_CELL = load_protocol().statistics.min_cell_size


def _inputs(n_pos: int, n_neg: int, rng: np.random.Generator) -> SiteInputs:
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.15), 0, 1)
    return SiteInputs(labels=y, pfs_days=rng.integers(20, 400, y.size).astype(float),
                      pfs_event=rng.integers(0, 2, y.size), scores={"early": s, "full": s},
                      cutoffs={"early": 0.5, "full": 0.5})


@pytest.mark.parametrize(("n_pos", "n_neg", "dropped"), [
    (MIN_CELL, MIN_CELL, set()),                                              # boundary: kept
    (MIN_CELL - 1, 20, {"early", "full", "km_reference"}),                   # one class below: model stats out
    (2, 1, {"early", "full", "km_all", "km_reference", "orr", "orr_itt"}),  # a tiny site contributes nothing
])
def test_which_statistics_a_small_site_drops(n_pos: int, n_neg: int, dropped: set[str]) -> None:
    layout = AggregateLayout()
    vector = site_aggregate(_inputs(n_pos, n_neg, np.random.default_rng(1)), layout)
    out, suppressed = suppress_small_cells(vector, layout, MIN_CELL, "S09")
    assert {s.statistic for s in suppressed} == dropped
    assert all(s.site == "S09" and f"< min_cell_size {MIN_CELL}" in s.reason for s in suppressed)
    blocks = layout.unpack(out)
    for name, _ in layout.blocks():
        statistic = name.split(".")[0] if name.split(".")[0] in ("early", "full") else name
        statistic = {"km_ref_pos": "km_reference", "km_ref_neg": "km_reference"}.get(statistic, statistic)
        if statistic in dropped:
            assert not blocks[name].any()


def test_pooled_statistics_rest_on_the_sites_that_pass() -> None:
    rng = np.random.default_rng(4)
    sites = []
    for site, (n_pos, n_neg) in {"S01": (12, 14), "S02": (3, 15)}.items():
        ids = [f"FEDRESP-{site}-{i:04d}" for i in range(1, n_pos + n_neg + 1)]
        y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
        rows = [{"USUBJID": u, "MODE": m, "SCORE": float(np.clip(rng.normal(0.4 + 0.2 * v, 0.2), 0, 1)),
                 "LABEL": int(v), "PFS_DAYS": float(rng.integers(30, 400)), "PFS_EVENT": int(rng.integers(0, 2))}
                for u, v in zip(ids, y, strict=True) for m in ("early", "full")]
        sites.append(SiteData(site, pd.DataFrame(rows).assign(SITEID=site)))
    metrics = compute_metrics(sites, {"early": 0.5, "full": 0.5})
    pooled = metrics["pooled"]
    assert {(s["site"], s["statistic"]) for s in pooled["suppressed"]} >= {("S02", "early"), ("S02", "full")}
    assert pooled["min_cell_size"] == MIN_CELL
    s01 = sites[0].predictions.query("MODE == 'full'")
    assert pooled["full"]["n"] == len(s01)  # the AUC rests on S01 alone
    bound = pooled["full"]["auc_binning_bound"] + 1e-12
    assert abs(pooled["full"]["auc"] - roc_auc_score(s01["LABEL"], s01["SCORE"])) <= bound
    assert pooled["n"] == 26 + 18  # ORR / overall counts pass at both sites


def test_what_leaves_a_federated_site_is_checked_too() -> None:
    from fl_client.pooled_evaluation import held_out_aggregate, training_histogram_layout, training_histograms

    ids = [f"FEDRESP-S05-{i:04d}" for i in range(1, 13)]
    rows = pd.DataFrame([{"USUBJID": u, "MODE": m, "SCORE": 0.05 * k + 0.1, "LABEL": int(k < 3), "PFS_DAYS": 50.0 + k,
                          "PFS_EVENT": 1} for k, u in enumerate(ids) for m in ("early", "full")]).assign(SITEID="S05")
    layout = AggregateLayout()
    blocks = layout.unpack(held_out_aggregate("S05", rows, ids, {"early": 0.5, "full": 0.5}, layout))
    assert not blocks["full.hist_pos"].any() and not blocks["full.confusion"].any()  # 3 responders < 5: not sent
    assert blocks["orr"][0] == 12  # the ORR denominator passes
    assert not training_histograms(rows, ids, training_histogram_layout()).any()
