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
