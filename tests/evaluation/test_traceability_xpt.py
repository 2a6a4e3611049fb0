"""A reviewer regenerates the headline numbers of ``metrics.json`` from the exported XPT files with pandas, lifelines
and statsmodels alone: ORR (all enrolled and analysed, Clopper–Pearson), median iRECIST PFS with its CI, per site
and pooled; and the reference's PFS (what the model and the report use) equals ADTTE subject by subject."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.utils import median_survival_times
from statsmodels.stats.proportion import proportion_confint

from evaluation.cdisc.export import export_cdisc
from evaluation.evaluate import load_run
from evaluation.metrics import compute_metrics
from evaluation.pooled import AggregateLayout
from evaluation.populations import derive_populations
from evaluation.protocol import load_protocol
from evaluation.response.pipeline import run_assessment
from evaluation.response.reference import events_from_crf

START = date(2026, 3, 2)
VISITS = (("T0", -6), ("T1", 63), ("T2", 105), ("FU1", 168), ("FU2", 231), ("FU3", 294))
PROTOCOL = load_protocol()


def _site(root: Path, site: str, n: int, rng: np.random.Generator) -> None:
    folder = root / site
    folder.mkdir(parents=True)
    reads, crf = [], []
    for k in range(1, n + 1):
        usubjid = f"FEDRESP-{site}-{k:04d}"
        base = float(rng.uniform(30, 80))
        slope = float(rng.choice([-0.45, -0.3, -0.1, 0.1, 0.3, 0.6]))  # relative change per visit
        bump = int(rng.integers(1, 6)) if rng.uniform() < 0.3 else None  # pseudoprogression-like rise
        for j, (visit, ady) in enumerate(VISITS[: int(rng.integers(3, 7))]):
            diam = base * max(0.05, 1 + slope * j) * (1.3 if j == bump else 1.0)
            reads.append({"USUBJID": usubjid, "VISIT": visit, "ADY": ady, "LESIONID": "L01", "ORGAN": "LUNG",
                          "CATEGORY": "TARGET", "NODE": "N", "DIAM_MM": round(diam, 1), "STATUS": "PRESENT",
                          "READER": "R1"})
        death = int(rng.integers(120, 400)) if rng.uniform() < 0.25 else None
        crf.append({"USUBJID": usubjid, "SUBJID": f"{k:04d}", "SITEID": site, "AGE": int(rng.integers(40, 80)),
                    "SEX": str(rng.choice(["M", "F"])), "FIRST_DOSE_DATE": START.isoformat(),
                    "DEATH_DATE": (START + timedelta(days=death - 1)).isoformat() if death else "",
                    "NEW_THERAPY_DATE": ""})
    pd.DataFrame(reads).to_csv(folder / "reads.csv", index=False)
    pd.DataFrame(crf).to_csv(folder / "crf.csv", index=False)


def _assess(cohort: Path, run: Path, site: str, rng: np.random.Generator) -> None:
    """What a site does: assess, label, derive its populations, score its patients (predictions.csv)."""
    reads = pd.read_csv(cohort / site / "reads.csv")
    crf = pd.read_csv(cohort / site / "crf.csv", dtype=str, keep_default_na=False)
    out = run / "sites" / site
    run_assessment(reads, out, PROTOCOL, events=events_from_crf(crf))
    reference = pd.read_csv(out / "reference.csv", keep_default_na=False, na_values=[""])
    ids = crf["USUBJID"].tolist()
    eligibility = pd.DataFrame({"USUBJID": ids, "ELIGIBLE": True, "REASONS": ""})
    scans = reads.loc[reads["VISIT"].isin(PROTOCOL.visits), ["USUBJID", "VISIT"]].drop_duplicates()
    derive_populations(site, ids, eligibility, None, scans, reference.astype(str),
                       PROTOCOL.populations).to_csv(out / "populations.csv", index=False)
    y = (reference["RESPONDER"] == "Y").astype(int)
    pd.concat([pd.DataFrame({"USUBJID": reference["USUBJID"], "MODE": mode,
                             "SCORE": np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1).round(6), "LABEL": y,
                             "PFS_DAYS": reference["IPFS_DAYS"], "PFS_EVENT": reference["IPFS_EVENT"]})
               for mode in ("early", "full")]).to_csv(out / "predictions.csv", index=False)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> dict:
    rng = np.random.default_rng(12)
    root = tmp_path_factory.mktemp("trace")
    for site, n in (("S01", 16), ("S02", 14)):
        _site(root / "cohort", site, n, rng)
        _assess(root / "cohort", root / "run", site, rng)
    exact = AggregateLayout(pfs_grid_days=tuple(float(d) for d in range(0, 800)))  # 1-day grid: pooled KM exact
    metrics = compute_metrics(load_run(root / "run").sites, {"early": 0.5, "full": 0.5}, layout=exact)
    paths = export_cdisc(root / "cohort", root / "cdisc", protocol=PROTOCOL)
    xpt = {name: pd.read_sas(paths[name], format="xport", encoding="utf-8") for name in ("adsl", "adrs", "adtte")}
    for frame in xpt.values():
        for column in frame.columns:  # pandas reads SAS 0.0 as 16**-65
            if frame[column].dtype == float:
                frame[column] = frame[column].where(frame[column].isna() | (frame[column].abs() > 1e-70), 0.0)
    return {"metrics": metrics, "run": root / "run", **xpt}


def _orr(adsl: pd.DataFrame, adrs: pd.DataFrame, flag: str) -> tuple[int, int]:
    ids = set(adsl.loc[adsl[flag] == "Y", "USUBJID"])
    best = adrs[(adrs["PARAMCD"] == "CBOR") & adrs["USUBJID"].isin(ids)]
    return int(best["AVALC"].isin(["CR", "PR"]).sum()), len(ids)


def _median(adtte: pd.DataFrame) -> tuple[float, list[float]]:
    km = KaplanMeierFitter().fit(adtte["AVAL"], adtte["CNSR"] == 0)  # CNSR 0 = event, > 0 = a censoring code
    ci = median_survival_times(km.confidence_interval_).iloc[0].tolist()
    # R / SAS convention (docs/report.md): where S(t) is exactly 0.5, the midpoint to the next event time
    sf = km.survival_function_.iloc[:, 0]
    events = sorted(adtte.loc[adtte["CNSR"] == 0, "AVAL"].unique())
    below = sf[sf <= 0.5 + 1e-12]
    median = float(below.index[0]) if len(below) else float("inf")
    if len(below) and abs(below.iloc[0] - 0.5) < 1e-12:
        later = [t for t in events if t > median]
        median = (median + later[0]) / 2 if later else median
    return median, [float(c) for c in ci]


def test_reference_pfs_equals_adtte_subject_by_subject(package: dict) -> None:
    adtte = package["adtte"]
    for site in ("S01", "S02"):
        ref = pd.read_csv(package["run"] / "sites" / site / "reference.csv").set_index("USUBJID")
        for code, days, event in (("PFS", "PFS_DAYS", "PFS_EVENT"), ("IPFS", "IPFS_DAYS", "IPFS_EVENT")):
            rows = adtte[(adtte["PARAMCD"] == code) & adtte["USUBJID"].str.contains(f"-{site}-")].set_index("USUBJID")
            assert len(rows) == len(ref)
            assert (rows["AVAL"] == ref.loc[rows.index, days]).all(), code
            assert ((rows["CNSR"] == 0).astype(int) == ref.loc[rows.index, event]).all(), code


def test_headline_numbers_regenerate_from_the_xpt_files(package: dict) -> None:
    metrics, adsl, adrs, adtte = package["metrics"], package["adsl"], package["adrs"], package["adtte"]
    ipfs = adtte[adtte["PARAMCD"] == "IPFS"].merge(adsl[["USUBJID", "SITEID", "PFSFL"]], on="USUBJID")
    ipfs = ipfs[ipfs["PFSFL"] == "Y"]
    blocks = {"pooled": (adsl, adrs, ipfs)}
    for site in ("S01", "S02"):
        keep = adsl["SITEID"] == site
        blocks[site] = (adsl[keep], adrs[adrs["USUBJID"].isin(adsl.loc[keep, "USUBJID"])], ipfs[ipfs["SITEID"] == site])
    for where, (sl, rs, tte) in blocks.items():
        block = metrics["pooled"] if where == "pooled" else metrics["sites"][where]
        k, n = _orr(sl, rs, "ITTFL")  # protocol: over all enrolled
        assert (block["orr_n"], block["orr"]) == (n, pytest.approx(k / n))
        assert block["orr_ci"] == pytest.approx(list(proportion_confint(k, n, method="beta")))
        k, n = _orr(sl, rs, "EFFFL")
        assert (block["orr_analysed_n"], block["orr_analysed"]) == (n, pytest.approx(k / n))
        assert block["orr_analysed_ci"] == pytest.approx(list(proportion_confint(k, n, method="beta")))
        median, ci = _median(tte)
        assert block["median_pfs_days"] == (median if np.isfinite(median) else None), where
        assert [float(c) for c in block["median_pfs_ci"]] == ci, where  # a limit not reached is inf
        assert block["n"] == int((sl["EFFFL"] == "Y").sum())
