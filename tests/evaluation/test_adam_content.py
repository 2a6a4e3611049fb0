"""ADaM content (evaluation.cdisc.adam): population flags from the one definition, ADTTE contract, one iUPD date."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.cdisc.adam import make_adam, sas_date
from evaluation.exceptions import CdiscExportError
from evaluation.protocol import load_protocol

PROTOCOL = load_protocol()
IDS = ["FEDRESP-S01-0001", "FEDRESP-S01-0002", "FEDRESP-S01-0003", "FEDRESP-S01-0004"]


def _dm() -> pd.DataFrame:
    return pd.DataFrame({
        "STUDYID": "FEDRESP", "USUBJID": IDS, "SUBJID": ["0001", "0002", "0003", "0004"], "SITEID": "S01",
        "RFSTDTC": ["2027-01-01", "2027-01-01", "2027-01-01", ""], "AGE": 60.0, "AGEU": "YEARS", "SEX": "F",
        "ARMCD": "CIO", "ARM": "PD-1/PD-L1 inhibitor + chemotherapy",
        "ACTARM": ["PD-1/PD-L1 inhibitor + chemotherapy"] * 3 + [""],
        "DTHDTC": ["", "2026-12-27", "", ""], "DTHFL": ["", "Y", "", ""],  # subject 2 died 5 days before dose 1
    })


def _rs() -> pd.DataFrame:
    rows = []
    plan = {IDS[0]: ["iUPD", "iUPD", "iCPD"], IDS[1]: ["iSD", "iSD", "iSD"], IDS[2]: ["iPR", "iPR", "iPR"]}
    recist = {"iUPD": "PD", "iCPD": "PD", "iSD": "SD", "iPR": "PR"}
    for subject, responses in plan.items():
        for k, (response, day, visit) in enumerate(zip(responses, (62, 104, 167), ("T1", "T2", "FU1"), strict=True)):
            for criterion, value in (("RECIST 1.1", recist[response]), ("iRECIST", response)):
                rows.append({"USUBJID": subject, "RSEVALID": "FINAL", "RSTESTCD": "OVRLRESP", "RSCAT": criterion,
                             "RSSTRESC": value, "RSDY": float(day), "VISITNUM": float(k + 1), "VISIT": visit,
                             "RSSEQ": float(len(rows) + 1)})
    return pd.DataFrame(rows)


def test_regenerated_from_sdtm_alone() -> None:
    adam = make_adam({"dm": _dm(), "rs": _rs()}, PROTOCOL)
    adsl = adam["adsl"].set_index("USUBJID")
    assert adsl["TRT01P"].eq("PD-1/PD-L1 inhibitor + chemotherapy").all()
    assert adsl.loc[IDS[3], "TRT01A"] == "" and np.isnan(adsl.loc[IDS[3], "TRTSDT"])  # never treated
    assert adsl["PFSFL"].tolist() == ["Y", "N", "Y", "N"]
    assert "death dated before the first dose" in adsl.loc[IDS[1], "EXCLREAS"]
    adtte = adam["adtte"]
    assert set(adtte["USUBJID"]) == {IDS[0], IDS[2]}  # no death-before-dose event, no row without a first dose
    assert adtte["AVAL"].ge(1).all() and adtte[["STARTDT", "ADT"]].notna().all().all()
    assert (adtte["ADT"] - adtte["STARTDT"] + 1 == adtte["AVAL"]).all()
    ipfs = adtte[(adtte["USUBJID"] == IDS[0]) & (adtte["PARAMCD"] == "IPFS")].iloc[0]
    assert (ipfs["AVAL"], ipfs["CNSR"]) == (62.0, 0.0)  # the first iUPD dates the confirmed progression
    assert ipfs["ADT"] == sas_date("2027-03-03")


def test_flags_come_from_the_populations_when_given() -> None:
    pop = pd.DataFrame({"USUBJID": IDS, "SITEID": "S01", "ITTFL": "Y", "ELIGFL": ["Y", "Y", "N", "N"],
                        "EFFFL": ["Y", "Y", "N", "N"], "PFSFL": ["Y", "N", "N", "N"],
                        "EXCLREAS": ["", "PFS: open hard query (ORD-DOSE-DEATH on DEATH_DATE)",
                                     "not eligible: exclusion: other malignancy",
                                     "not eligible: unresolved hard query"]})
    adam = make_adam({"dm": _dm(), "rs": _rs()}, PROTOCOL, pop)
    adsl = adam["adsl"].set_index("USUBJID")
    for flag in ("ITTFL", "ELIGFL", "EFFFL", "PFSFL", "EXCLREAS"):
        assert adsl[flag].tolist() == pop[flag].tolist()
    assert set(adam["adtte"]["USUBJID"]) == {IDS[0]}
    with pytest.raises(CdiscExportError, match="no population flags"):
        make_adam({"dm": _dm(), "rs": _rs()}, PROTOCOL, pop.iloc[:2])
