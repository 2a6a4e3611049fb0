"""Analysis populations: one definition (configs/study.yaml), derived per site from the store's tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from evaluation.populations import POPULATION_COLUMNS, consort_counts, derive_populations, read_populations
from evaluation.protocol import configs_dir, load_protocol

RULES = load_protocol().populations
IDS = [f"FEDRESP-S09-{i:04d}" for i in range(1, 8)]
ELIGIBILITY = pd.DataFrame({
    "USUBJID": IDS,
    "ELIGIBLE": [True, False, False, False, True, True, False],
    "REASONS": [
        "",
        "EXC-OTHERMAL: exclusion: other malignancy; REQ-BASE: unresolved hard query on ECOG",
        "imaging LESION_COVERAGE at T1: lesion L02 touches the edge",
        "ORD-DOSE-DEATH: unresolved hard query on DEATH_DATE",  # an endpoint query: out of PFS, not of the study
        "",
        "",
        "WIN-T2: unresolved hard query on T2_DATE",
    ],
})
QUERIES = pd.DataFrame({
    "USUBJID": [IDS[1], IDS[3], IDS[6], IDS[0]],
    "FIELD": ["ECOG", "DEATH_DATE", "T2_DATE", "DEATH_DATE"],
    "RULE_ID": ["REQ-BASE", "ORD-DOSE-DEATH", "WIN-T2", "ORD-CONTACT-DEATH"],
    "SEVERITY": ["HARD", "HARD", "HARD", "SOFT"],  # a SOFT query on an endpoint field excludes nobody
})
SCANS = pd.DataFrame([(u, v) for u in IDS for v in ("T0", "T1", "T2") if not (u == IDS[4] and v == "T2")],
                     columns=["USUBJID", "VISIT"])
REFERENCE = pd.DataFrame({"USUBJID": [u for u in IDS if u != IDS[5]], "RESPONDER": "Y"})


@pytest.fixture
def pop() -> pd.DataFrame:
    return derive_populations("S09", [*IDS, "FEDRESP-S09-0099"], ELIGIBILITY, QUERIES, SCANS, REFERENCE, RULES)


@pytest.mark.parametrize(
    ("subject", "flags", "reason"),
    [
        (IDS[0], "YYYY", ""),
        (IDS[1], "YNNN", "not eligible: exclusion: other malignancy; not eligible: unresolved hard query"),
        (IDS[2], "YNNN", "not eligible: imaging LESION_COVERAGE"),
        (IDS[3], "YYYN", "PFS: open hard query (ORD-DOSE-DEATH on DEATH_DATE)"),
        (IDS[4], "YYNN", "no protocol CT at T2"),
        (IDS[5], "YYNN", "no reference label"),
        (IDS[6], "YNNN", "not eligible: unresolved hard query"),
        ("FEDRESP-S09-0099", "YNNN", "not eligible: no eligibility record (no CRF row)"),
    ],
)
def test_each_population_rule(pop: pd.DataFrame, subject: str, flags: str, reason: str) -> None:
    row = pop.set_index("USUBJID").loc[subject]
    assert "".join(row[f] for f in ("ITTFL", "ELIGFL", "EFFFL", "PFSFL")) == flags
    assert row["EXCLREAS"] == reason


def test_consort_adds_up(pop: pd.DataFrame) -> None:
    flow = consort_counts(pop)
    assert flow["enrolled"] == 8 and flow["eligible"] == 4 and flow["analysed"] == 2 and flow["pfs_analysed"] == 1
    assert flow["excluded"] == {"exclusion: other malignancy": 1, "imaging LESION_COVERAGE": 1,
                                "no eligibility record (no CRF row)": 1, "unresolved hard query": 1}
    assert sum(flow["excluded"].values()) == flow["enrolled"] - flow["eligible"]
    assert flow["by_reason_not_analysed"] == {"no protocol CT at T2": 1, "no reference label": 1}
    assert sum(flow["by_reason_not_analysed"].values()) == flow["eligible"] - flow["analysed"]


def test_read_populations_round_trip_and_errors(pop: pd.DataFrame, tmp_path: Path) -> None:
    (tmp_path / "assessment").mkdir()
    pop.to_csv(tmp_path / "assessment" / "populations.csv", index=False)
    back = read_populations(tmp_path)  # a store: found under assessment/
    assert list(back.columns) == list(POPULATION_COLUMNS)
    pd.testing.assert_frame_equal(back, pop.astype(str))
    with pytest.raises(FileNotFoundError, match="fedresponse assess"):
        read_populations(tmp_path / "nowhere")
    pop.assign(EFFFL="yes").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="EFFFL must be Y or N"):
        read_populations(tmp_path / "bad.csv")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"populations": {"efficacy_visits": ["T0", "T3"]}}, "not protocol time points"),
        ({"populations": {"efficacy_visits": ["T0"], "endpoint_fields": {"OSFL": ["DEATH_DATE"]}}}, "unknown endpoint"),
        ({"statistics": {"min_cell_size": 0, "min_patients_estimate": 10}}, "min_cell_size"),
    ],
)
def test_protocol_rejects_bad_population_rules(tmp_path: Path, change: dict, match: str) -> None:
    data = yaml.safe_load((configs_dir() / "study.yaml").read_text(encoding="utf-8")) | change
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ValidationError, match=match):
        load_protocol(tmp_path / "study.yaml")


def test_early_population_does_not_require_t2() -> None:
    """EARLYFL = eligible + CT at T0 and T1 + a reference label: a T2 scan is not needed (no selection on the
    future), EFFFL still needs it; without T1 a subject is in neither."""
    ids = [f"FEDRESP-S09-{i:04d}" for i in (11, 12, 13, 14)]
    eligibility = pd.DataFrame({"USUBJID": ids, "ELIGIBLE": [True, True, True, False],
                                "REASONS": ["", "", "", "EXC-OTHERMAL: exclusion: other malignancy"]})
    visits = {ids[0]: ("T0", "T1", "T2"), ids[1]: ("T0", "T1"), ids[2]: ("T0", "T2"), ids[3]: ("T0", "T1")}
    scans = pd.DataFrame([(u, v) for u, vs in visits.items() for v in vs], columns=["USUBJID", "VISIT"])
    reference = pd.DataFrame({"USUBJID": ids, "RESPONDER": ["Y", "N", "Y", "Y"]})
    pop = derive_populations("S09", ids, eligibility, None, scans, reference, RULES).set_index("USUBJID")
    assert pop.loc[ids, "EARLYFL"].tolist() == ["Y", "Y", "N", "N"]
    assert pop.loc[ids, "EFFFL"].tolist() == ["Y", "N", "N", "N"]
    assert pop.loc[ids[1], "EXCLREAS"] == "no protocol CT at T2"
    assert pop.loc[ids[2], "EXCLREAS"] == "no protocol CT at T1"
    unlabelled = derive_populations("S09", ids[:1], eligibility, None, scans, reference.iloc[1:], RULES)
    assert unlabelled.loc[0, ["EARLYFL", "EFFFL"]].tolist() == ["N", "N"]  # no reference label: no early label
    flow = consort_counts(pop.reset_index())  # the CONSORT flow still counts EFFFL
    assert flow["analysed"] == 1 and flow["by_reason_not_analysed"] == {"no protocol CT at T1": 1,
                                                                        "no protocol CT at T2": 1}


def test_early_population_is_a_superset_of_efficacy(pop: pd.DataFrame) -> None:
    early, efficacy = (set(pop.loc[pop[f] == "Y", "USUBJID"]) for f in ("EARLYFL", "EFFFL"))
    assert efficacy <= early and early - efficacy == {IDS[4], IDS[6]}  # T0 + T1, no T2; a T2 window query


def test_reasons_about_t2_only_do_not_remove_a_subject_from_early_mode() -> None:
    """A T2 scan outside its window (ingest: HARD query on T2_DATE and imaging VISIT_MISSING at T2) makes the
    subject ineligible for EFFFL but not for EARLYFL; any reason about T0/T1 or the baseline removes it from both."""
    ids = [f"FEDRESP-S09-{i:04d}" for i in (21, 22, 23, 24)]
    reasons = ["WIN-T2: unresolved hard query on T2_DATE; imaging VISIT_MISSING at T2: no CT study of the subject "
               "falls inside the T2 window [97, 112] (study days)",
               "WIN-T2: unresolved hard query on T2_DATE; imaging LESION_COVERAGE at T1: lesion L02 touches the edge",
               "DAT-VALID: unresolved hard query on T1_DATE",
               "imaging VISIT_MISSING at T2: no CT; EXC-OTHERMAL: exclusion: other malignancy"]
    eligibility = pd.DataFrame({"USUBJID": ids, "ELIGIBLE": False, "REASONS": reasons})
    scans = pd.DataFrame([(u, v) for u in ids for v in ("T0", "T1")], columns=["USUBJID", "VISIT"])
    reference = pd.DataFrame({"USUBJID": ids, "RESPONDER": "N"})
    pop = derive_populations("S09", ids, eligibility, None, scans, reference, RULES)
    assert pop["ELIGFL"].tolist() == ["N"] * 4 and pop["EFFFL"].tolist() == ["N"] * 4
    assert pop["EARLYFL"].tolist() == ["Y", "N", "N", "N"]
    assert consort_counts(pop)["excluded"] == {"exclusion: other malignancy": 1, "imaging LESION_COVERAGE": 1,
                                               "imaging VISIT_MISSING": 1, "unresolved hard query": 1}


def test_read_populations_before_earlyfl(pop: pd.DataFrame, tmp_path: Path) -> None:
    """A file written before EARLYFL existed is read with EARLYFL = EFFFL (the narrower set), in column order."""
    pop.drop(columns="EARLYFL").to_csv(tmp_path / "old.csv", index=False)
    back = read_populations(tmp_path / "old.csv")
    assert list(back.columns) == list(POPULATION_COLUMNS)
    assert back["EARLYFL"].tolist() == back["EFFFL"].tolist()


def test_protocol_rejects_early_visits_outside_efficacy(tmp_path: Path) -> None:
    data = yaml.safe_load((configs_dir() / "study.yaml").read_text(encoding="utf-8"))
    data["populations"]["early_visits"] = ["T0", "T3"]
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ValidationError, match=r"early_visits \['T3'\]"):
        load_protocol(tmp_path / "study.yaml")
