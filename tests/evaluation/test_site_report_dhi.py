"""The site report's per-interval DHI section and what of it ``site_summary.json`` sends."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_run import make_run

from evaluation.dhi_stats import site_dhi_intervals
from evaluation.evaluate import load_run
from evaluation.metrics import analysed
from evaluation.site_report import write_site_evaluation


def dhi_table(run: Path, seed: int = 0) -> pd.DataFrame:
    """``radiomics dhi``-shaped rows for every predicted patient: T0→T1 a size proxy, T1→T2 a real signal."""
    rng = np.random.default_rng(seed)
    pred = pd.concat([pd.read_csv(p) for p in sorted(run.rglob("predictions.csv"))]).drop_duplicates("USUBJID")
    y, n = pred["LABEL"].to_numpy(int), len(pred)
    dlogvol = -0.6 * y + rng.normal(0, 0.4, n)
    rows = []
    for lesion in ("L01", "L02"):  # two lesions per patient: the report uses their mean
        rows.append(pd.DataFrame({"USUBJID": pred["USUBJID"], "LESIONID": lesion, "FROM": "T0", "TO": "T1",
                                  "DLOGVOL": dlogvol, "DHI": -dlogvol + rng.normal(0, 0.15, n)}))
        rows.append(pd.DataFrame({"USUBJID": pred["USUBJID"], "LESIONID": lesion, "FROM": "T1", "TO": "T2",
                                  "DLOGVOL": rng.normal(0, 0.3, n), "DHI": 1.0 * y + rng.normal(0, 0.8, n)}))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def site_out(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("dhisite")
    paths = make_run(root, seed=5, n_sites=2, n_per_site=40)
    table = dhi_table(paths["run"])
    table.to_csv(root / "dhi.csv", index=False)
    inputs = load_run(paths["run"], paths["cohort"], dhi_tables=[root / "dhi.csv"])
    site = inputs.sites[0]
    written = write_site_evaluation(site, inputs, root / "site")
    return {"site": site, "table": table, **written}


def test_summary_sends_the_per_interval_statistics_of_this_site_only(site_out: dict) -> None:
    summary = json.loads(site_out["summary"].read_text())
    blocks = summary["dhi_intervals"]
    assert [b["interval"] for b in blocks] == ["T0-T1", "T1-T2"]
    wide = analysed(site_out["site"])
    outcomes = pd.DataFrame({"USUBJID": wide.index, "RESPONDER": wide["LABEL"].astype(int),
                             "PFS_DAYS": wide["PFS_DAYS"], "PFS_EVENT": wide["PFS_EVENT"].astype(int)})
    outcomes = outcomes.reset_index(drop=True)
    expected = site_dhi_intervals(site_out["table"], outcomes, min_cell=5, min_n=10)
    for sent, ref in zip(blocks, expected, strict=True):
        assert sent["site"] == "S01" and sent["n"] == ref["n"] == len(wide)
        for key in ("auc", "partial_rho", "partial_p", "hr", "rho_vol"):
            assert sent[key] == pytest.approx(ref[key], rel=1e-9)
    assert blocks[0]["size_proxy"] is True and blocks[1]["size_proxy"] is False
    text = site_out["summary"].read_text()
    assert "FEDRESP-S01-" not in text and "FEDRESP-S02-" not in text  # no identifier crosses


def test_site_html_tells_the_pi_when_the_dhi_is_only_a_size_proxy(site_out: dict) -> None:
    page = site_out["report"].read_text()
    assert "partial ρ | Δlog volume (p)" in page and "Cox HR per SD, volume-adjusted" in page
    assert "T0→T1: the DHI is only a size proxy here" in page
    assert "T1→T2: the DHI is not merely a size proxy" in page


def test_without_a_dhi_table_the_section_says_how_to_get_one(tmp_path: Path) -> None:
    paths = make_run(tmp_path, seed=2, n_sites=1, n_per_site=12)
    inputs = load_run(paths["run"], paths["cohort"])
    written = write_site_evaluation(inputs.sites[0], inputs, tmp_path / "site")
    assert json.loads(written["summary"].read_text())["dhi_intervals"] is None
    assert "No per-interval DHI table" in written["report"].read_text()
