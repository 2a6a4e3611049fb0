"""The early-mode population EARLYFL where evaluation reads predictions (evaluation.metrics.analysed)."""

from __future__ import annotations

import pandas as pd

from evaluation.metrics import SiteData, analysed
from evaluation.populations import derive_populations
from evaluation.protocol import load_protocol

IDS = [f"FEDRESP-S01-{i:04d}" for i in (1, 2, 3)]


def test_evaluation_of_an_early_only_patient_leaves_it_out_without_crashing() -> None:
    """A patient in EARLYFL but not EFFFL (T0 + T1, no T2) has an early-mode prediction row and no full-mode
    row; the evaluation scores the EFFFL subjects as before and leaves that one out (it no longer crashes on
    the missing full-mode score)."""
    scans = pd.DataFrame([(u, v) for u in IDS for v in ("T0", "T1", "T2") if not (u == IDS[2] and v == "T2")],
                         columns=["USUBJID", "VISIT"])
    reference = pd.DataFrame({"USUBJID": IDS, "RESPONDER": ["Y", "N", "Y"]})
    eligibility = pd.DataFrame({"USUBJID": IDS, "ELIGIBLE": True, "REASONS": ""})
    pop = derive_populations("S01", IDS, eligibility, None, scans, reference, load_protocol().populations)
    assert pop["EARLYFL"].tolist() == ["Y", "Y", "Y"] and pop["EFFFL"].tolist() == ["Y", "Y", "N"]
    rows = [{"USUBJID": u, "MODE": m, "SCORE": 0.5, "LABEL": 1, "PFS_DAYS": 200.0, "PFS_EVENT": 0}
            for u in IDS for m in ("early", "full") if not (u == IDS[2] and m == "full")]
    wide = analysed(SiteData("S01", pd.DataFrame(rows), populations=pop))
    assert list(wide.index) == IDS[:2] and wide[["early", "full"]].notna().all().all()
