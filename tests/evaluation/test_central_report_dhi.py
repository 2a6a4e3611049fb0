"""The central report's pooled per-interval DHI association, built from the sites' summaries only."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from scipy import stats
from synthetic_run import make_run
from test_site_report_dhi import dhi_table

from evaluation.central_report import write_central_evaluation
from evaluation.evaluate import load_run
from evaluation.site_report import write_site_evaluation


@pytest.fixture(scope="module")
def handoff(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("dhicentral")
    paths = make_run(root, seed=7, n_sites=2, n_per_site=40)
    dhi_table(paths["run"], seed=1).to_csv(root / "dhi.csv", index=False)
    inputs = load_run(paths["run"], paths["cohort"], dhi_tables=[root / "dhi.csv"])
    folder = root / "handoff"
    for site in inputs.sites:
        write_site_evaluation(site, inputs, folder / site.site)
    sent = {s.site: json.loads((folder / s.site / "site_summary.json").read_text()) for s in inputs.sites}
    return {"root": root, "folder": folder, "sent": sent}


def _pooled(folder: Path, out: Path) -> tuple[dict, str]:
    written = write_central_evaluation(folder, out)
    return json.loads(written["metrics"].read_text()), written["report"].read_text()


def test_one_site_pools_to_that_sites_numbers(handoff: dict) -> None:
    one = handoff["root"] / "only_S01"
    shutil.copytree(handoff["folder"] / "S01", one / "S01")
    metrics, _ = _pooled(one, handoff["root"] / "central_one")
    site = {b["interval"]: b for b in handoff["sent"]["S01"]["dhi_intervals"]}
    for block in metrics["pooled"]["dhi_intervals"]:
        ref = site[block["interval"]]
        assert block["partial_rho"] == pytest.approx(ref["partial_rho"], abs=1e-12)
        assert block["auc"] == pytest.approx(ref["auc"], abs=1e-12)
        assert block["hr"] == pytest.approx(ref["hr"], rel=1e-9)
        assert block["n"] == ref["n"] and block["size_proxy"] == ref["size_proxy"]


def test_two_sites_pool_by_fisher_z_and_the_report_shows_it(handoff: dict) -> None:
    metrics, page = _pooled(handoff["folder"], handoff["root"] / "central")
    by_site = {s: {b["interval"]: b for b in v["dhi_intervals"]} for s, v in handoff["sent"].items()}
    for block in metrics["pooled"]["dhi_intervals"]:
        parts = [by_site[s][block["interval"]] for s in ("S01", "S02")]
        w = [p["n"] - 4 for p in parts]
        z = sum(wi * math.atanh(p["partial_rho"]) for wi, p in zip(w, parts, strict=True)) / sum(w)
        assert block["partial_rho"] == pytest.approx(math.tanh(z), abs=1e-12)
        assert block["partial_p"] == pytest.approx(2 * stats.norm.sf(abs(z) * math.sqrt(sum(w))), rel=1e-9)
        assert block["partial_rho_sites"] == ["S01", "S02"] and block["n"] == 80
        se = [(p["auc_ci"][1] - p["auc_ci"][0]) / (2 * stats.norm.ppf(0.975)) for p in parts]
        auc = sum(p["auc"] / s**2 for p, s in zip(parts, se, strict=True)) / sum(1 / s**2 for s in se)
        assert block["auc"] == pytest.approx(auc, abs=1e-12)
        assert min(p["auc"] for p in parts) - 1e-12 <= block["auc"] <= max(p["auc"] for p in parts) + 1e-12
    assert "partial ρ | Δlog volume (95 % CI)" in page and "Fisher-z" in page
    assert "FEDRESP-S0" not in json.dumps(metrics["pooled"]["dhi_intervals"])
