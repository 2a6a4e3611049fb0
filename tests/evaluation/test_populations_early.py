"""The early-mode population EARLYFL where evaluation reads predictions (evaluation.metrics.scored / analysed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from evaluation.metrics import SiteData, analysed, compute_metrics, scored, site_metrics
from evaluation.pooled import MODE_POPULATIONS
from evaluation.populations import derive_populations
from evaluation.protocol import load_protocol

IDS = [f"FEDRESP-S01-{i:04d}" for i in (1, 2, 3)]


def test_an_early_only_patient_is_scored_in_early_mode_and_not_in_full_mode() -> None:
    """A patient in EARLYFL but not EFFFL (T0 + T1, no T2) has an early-mode prediction row and no full-mode row:
    early mode scores it (EARLYFL), full mode and the reference endpoints (EFFFL) do not."""
    scans = pd.DataFrame([(u, v) for u in IDS for v in ("T0", "T1", "T2") if not (u == IDS[2] and v == "T2")],
                         columns=["USUBJID", "VISIT"])
    reference = pd.DataFrame({"USUBJID": IDS, "RESPONDER": ["Y", "N", "Y"]})
    eligibility = pd.DataFrame({"USUBJID": IDS, "ELIGIBLE": True, "REASONS": ""})
    pop = derive_populations("S01", IDS, eligibility, None, scans, reference, load_protocol().populations)
    assert pop["EARLYFL"].tolist() == ["Y", "Y", "Y"] and pop["EFFFL"].tolist() == ["Y", "Y", "N"]
    rows = [{"USUBJID": u, "MODE": m, "SCORE": 0.5, "LABEL": 1, "PFS_DAYS": 200.0, "PFS_EVENT": 0}
            for u in IDS for m in ("early", "full") if not (u == IDS[2] and m == "full")]
    data = SiteData("S01", pd.DataFrame(rows), populations=pop)
    frame = scored(data)
    assert frame["EVAL_early"].to_dict() == dict.fromkeys(IDS, True)
    assert frame["EVAL_full"].to_dict() == {IDS[0]: True, IDS[1]: True, IDS[2]: False}
    assert list(analysed(data).index) == IDS[:2]  # the reference endpoints stay on EFFFL
    metrics = site_metrics(data, {"early": 0.5, "full": 0.5})
    assert (metrics["early"]["n"], metrics["full"]["n"], metrics["n"]) == (3, 2, 2)
    assert (metrics["early"]["population"], metrics["full"]["population"]) == ("EARLYFL", "EFFFL")
    older = site_metrics(SiteData("S01", pd.DataFrame(rows), populations=pop.drop(columns="EARLYFL")),
                         {"early": 0.5, "full": 0.5})  # a file without EARLYFL: read as EFFFL (with_later_flags)
    assert (older["early"]["n"], older["full"]["n"]) == (2, 2)


def _site(site: str, rng: np.random.Generator, bins: np.ndarray, n: int = 24) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions and populations of one site: the last 4 patients early-only (EARLYFL, no full row), 3 EFFFL
    patients with an undefined durable-benefit label, the full label drawn apart from the early one, every
    score in its own 1/200 bin (``bins``, shape (2, n): distinct over sites, so the binned pooled AUC is exact)."""
    ids = [f"FEDRESP-{site}-{i:04d}" for i in range(1, n + 1)]
    early_y, full_y = rng.integers(0, 2, n), rng.integers(0, 2, n).astype(float)
    early_y[:2], full_y[:2], full_y[2:4] = [0, 1], [1, 0], [0, 1]
    full_y[4:7] = np.nan
    early_only = set(ids[-4:])
    rows = []
    for i, u in enumerate(ids):
        common = {"USUBJID": u, "PFS_DAYS": float(rng.integers(30, 500)), "PFS_EVENT": int(rng.integers(0, 2))}
        rows.append(common | {"MODE": "early", "SCORE": (bins[0, i] + 0.5) / 200, "LABEL": early_y[i]})
        if u not in early_only:
            rows.append(common | {"MODE": "full", "SCORE": (bins[1, i] + 0.5) / 200, "LABEL": full_y[i]})
    effi = ["N" if u in early_only else "Y" for u in ids]
    pop = pd.DataFrame({"USUBJID": ids, "SITEID": site, "ITTFL": "Y", "ELIGFL": effi, "EARLYFL": "Y", "EFFFL": effi,
                        "PFSFL": effi, "EXCLREAS": ["" if f == "Y" else "no protocol CT at T2" for f in effi]})
    return pd.DataFrame(rows), pop


def test_each_mode_is_pooled_on_its_own_subjects_against_its_own_label(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pooled (and site) AUC of full mode is scikit-learn's on the full-mode rows' own durable-benefit labels
    (not on the early label), early mode's counts the early-only patients, the reference endpoints EFFFL only."""
    monkeypatch.setattr("evaluation.metrics.min_cell_size", lambda: 1)
    rng = np.random.default_rng(7)
    bins = rng.choice(200, size=(2, 48), replace=False)
    sites = [SiteData(s, read, populations=pop) for k, s in enumerate(("S01", "S02"))
             for read, pop in [_site(s, rng, bins[:, 24 * k:24 * (k + 1)])]]
    cutoffs = {"early": 0.5, "full": 0.5}
    metrics = compute_metrics(sites, cutoffs)
    rows = pd.concat([d.predictions for d in sites])
    for mode in ("early", "full"):
        own = rows[(rows["MODE"] == mode) & rows["LABEL"].notna()]
        block = metrics["pooled"][mode]
        assert block["auc_binning_bound"] == 0  # no two subjects share a bin: the binned AUC is exact
        assert block["auc"] == pytest.approx(roc_auc_score(own["LABEL"].astype(int), own["SCORE"]), abs=1e-12)
        assert block["n"] == len(own) and block["population"] == MODE_POPULATIONS[mode]
        for d in sites:
            site_rows = own[own["USUBJID"].str.contains(f"-{d.site}-")]
            assert metrics["sites"][d.site][mode]["auc"] == pytest.approx(
                roc_auc_score(site_rows["LABEL"].astype(int), site_rows["SCORE"]))
    full = rows[(rows["MODE"] == "full") & rows["LABEL"].notna()]
    early_label = rows[rows["MODE"] == "early"].set_index("USUBJID")["LABEL"].loc[full["USUBJID"]]
    assert metrics["pooled"]["full"]["auc"] != pytest.approx(roc_auc_score(early_label, full["SCORE"]), abs=1e-3)
    assert metrics["pooled"]["early"]["n"] == 48 and metrics["pooled"]["full"]["n"] == 2 * (20 - 3)
    assert metrics["pooled"]["n"] == 40 and metrics["pooled"]["km"]["at_risk"][0] == 40  # EFFFL / PFSFL
    assert metrics["pooled"]["n_heldout"] == 48


def test_adsl_carries_earlyfl_with_its_define_metadata() -> None:
    """ADSL takes EARLYFL from populations.csv (an older file without it: EARLYFL = EFFFL), and the Define-XML
    metadata lists it as a derived Y/N flag with a label."""
    from evaluation.cdisc.adam import make_adam
    from evaluation.cdisc.labels import VARIABLE_LABELS
    from evaluation.cdisc.metadata import ADAM

    adam_ids = [f"FEDRESP-S01-{i:04d}" for i in (1, 2, 3, 4)]
    dm = pd.DataFrame({"STUDYID": "FEDRESP", "USUBJID": adam_ids, "SUBJID": [u[-4:] for u in adam_ids],
                       "SITEID": "S01", "RFSTDTC": "2027-01-01", "AGE": 60.0, "AGEU": "YEARS", "SEX": "F",
                       "ARMCD": "CIO", "ARM": "PD-1/PD-L1 inhibitor + chemotherapy",
                       "ACTARM": "PD-1/PD-L1 inhibitor + chemotherapy", "DTHDTC": "", "DTHFL": ""})
    rs = pd.DataFrame([{"USUBJID": u, "RSEVALID": "FINAL", "RSTESTCD": "OVRLRESP", "RSCAT": cat, "RSSTRESC": value,
                        "RSDY": 62.0, "VISITNUM": 1.0, "VISIT": "T1", "RSSEQ": float(2 * i + j + 1)}
                       for i, u in enumerate(adam_ids[:2])
                       for j, (cat, value) in enumerate((("RECIST 1.1", "SD"), ("iRECIST", "iSD")))])
    pop = pd.DataFrame({"USUBJID": adam_ids, "SITEID": "S01", "ITTFL": "Y", "ELIGFL": ["Y", "N", "N", "N"],
                        "EARLYFL": ["Y", "Y", "N", "N"], "EFFFL": ["Y", "N", "N", "N"], "PFSFL": ["Y", "N", "N", "N"],
                        "EXCLREAS": ["", "not eligible: imaging VISIT_MISSING", "x", "y"]})
    adsl = make_adam({"dm": dm, "rs": rs}, load_protocol(), pop)["adsl"]
    assert adsl["EARLYFL"].tolist() == ["Y", "Y", "N", "N"]
    older = make_adam({"dm": dm, "rs": rs}, load_protocol(), pop.drop(columns="EARLYFL"))["adsl"]
    assert older["EARLYFL"].tolist() == older["EFFFL"].tolist()
    assert "EARLYFL" in ADAM["adsl"] and "EARLYFL" in VARIABLE_LABELS
