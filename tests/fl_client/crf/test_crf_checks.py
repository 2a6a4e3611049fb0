"""Every edit check of configs/dvp.yaml at its boundaries (DOMAIN.md §4: 39.9 dirty, 40 clean, 140 clean,
140.1 dirty), plus eligibility and the engine's own rules."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from evaluation.protocol import load_protocol
from fl_client.crf.checks import eligibility, run_checks
from fl_client.crf.dvp import load_dvp
from fl_client.exceptions import DvpError

PROTOCOL = load_protocol()
PLAN = load_dvp()

CLEAN = {
    "USUBJID": "FEDRESP-S01-0001", "SUBJID": "0001", "SITEID": "S01", "AGE": "64", "SEX": "M", "HEIGHT_CM": "172",
    "WEIGHT_KG": "70", "SMOKING": "FORMER", "PACKYEARS": "20", "ECOG": "1", "STAGE": "IVA",
    "HISTOLOGY": "ADENOCARCINOMA", "EGFR": "NEGATIVE", "ALK": "NEGATIVE", "PDL1_TPS": "50",
    "REGIMEN": "PEMBROLIZUMAB+CARBOPLATIN+PEMETREXED", "LINE": "1", "PRIOR_RT": "N", "PRIOR_RT_TARGET": "N",
    "OTHER_MALIGNANCY": "N", "ORGAN_FUNCTION": "ADEQUATE", "CONSENT_DATE": "2026-01-02",
    "FIRST_DOSE_DATE": "2026-01-10", "T0_DATE": "2026-01-03", "T1_DATE": "2026-03-13", "T2_DATE": "2026-04-24",
    "PD_DATE": "", "NEW_THERAPY_DATE": "", "DEATH_DATE": "", "LAST_CONTACT_DATE": "2026-09-01",
}


def _queries(**changes: str) -> pd.DataFrame:
    return run_checks(pd.DataFrame([{**CLEAN, **changes}]), PLAN, PROTOCOL)


def _day(ady: int) -> str:
    """ISO date of study day ``ady`` for CLEAN's first dose (no day 0)."""
    offset = ady - 1 if ady > 0 else ady
    return str((pd.Timestamp(CLEAN["FIRST_DOSE_DATE"]) + pd.Timedelta(days=offset)).date())


def test_clean_row_raises_nothing_and_is_eligible() -> None:
    assert _queries().empty
    table = eligibility(pd.DataFrame([CLEAN]), PLAN, PROTOCOL)
    assert table["ELIGIBLE"].tolist() == [True]


# (field, value, rule expected or None for clean)
BOUNDARIES = [
    ("WEIGHT_KG", "39.9", "RNG-WEIGHT"), ("WEIGHT_KG", "40", None), ("WEIGHT_KG", "140", None),
    ("WEIGHT_KG", "140.1", "RNG-WEIGHT"), ("WEIGHT_KG", "heavy", "RNG-WEIGHT"),
    ("HEIGHT_CM", "139.9", "RNG-HEIGHT"), ("HEIGHT_CM", "140", None), ("HEIGHT_CM", "210", None),
    ("HEIGHT_CM", "210.1", "RNG-HEIGHT"), ("HEIGHT_CM", "99.9", "RNG-HEIGHT-HARD"),
    ("HEIGHT_CM", "250.1", "RNG-HEIGHT-HARD"),
    ("AGE", "17", "RNG-AGE-SOFT"), ("AGE", "18", None), ("AGE", "95", None), ("AGE", "96", "RNG-AGE-SOFT"),
    ("AGE", "-1", "RNG-AGE"), ("AGE", "120", "RNG-AGE-SOFT"), ("AGE", "121", "RNG-AGE"),
    ("PDL1_TPS", "-0.1", "RNG-PDL1"), ("PDL1_TPS", "0", None), ("PDL1_TPS", "100", None),
    ("PDL1_TPS", "100.1", "RNG-PDL1"),
    ("PACKYEARS", "-0.1", "RNG-PACKYRS"), ("PACKYEARS", "150", None), ("PACKYEARS", "150.1", "RNG-PACKYRS-SOFT"),
    ("PACKYEARS", "200.1", "RNG-PACKYRS"), ("LINE", "0", "RNG-LINE"), ("LINE", "10", None), ("LINE", "11", "RNG-LINE"),
    ("SEX", "U", "COD-SEX"), ("SEX", "F", None), ("SMOKING", "SOMETIMES", "COD-SMOKING"),
    ("ECOG", "5", "COD-ECOG"), ("ECOG", "2", "INC-ECOG"), ("ECOG", "1.0", None), ("ECOG", "0", None),
    ("STAGE", "IIB", "COD-STAGE"), ("HISTOLOGY", "SMALL_CELL", "COD-HISTOLOGY"), ("EGFR", "MAYBE", "COD-EGFR"),
    ("ALK", "+", "COD-ALK"), ("PRIOR_RT", "YES", "COD-PRIORRT"), ("ORGAN_FUNCTION", "POOR", "COD-ORGAN"),
    ("OTHER_MALIGNANCY", "Y", "EXC-OTHERMAL"), ("ORGAN_FUNCTION", "INSUFFICIENT", "EXC-ORGAN"),
    ("ECOG", "", "REQ-BASE"), ("FIRST_DOSE_DATE", "", "REQ-BASE"), ("LAST_CONTACT_DATE", "", "REQ-CONTACT"),
    ("SUBJID", "", "REQ-ID"), ("USUBJID", "FEDRESP-S02-0001", "ID-USUBJID"),
    ("T1_DATE", "2026-02-30", "DAT-VALID"), ("T1_DATE", "13/03/2026", "DAT-VALID"),
    ("CONSENT_DATE", "2026-01-10", None), ("CONSENT_DATE", "2026-01-11", "ORD-CONSENT-DOSE"),
    ("DEATH_DATE", "2026-01-09", "ORD-DOSE-DEATH"), ("PD_DATE", "2026-01-09", "ORD-DOSE-PD"),
    ("NEW_THERAPY_DATE", "2026-01-09", "ORD-DOSE-NEWTX"), ("LAST_CONTACT_DATE", "2026-01-09", "ORD-DOSE-CONTACT"),
    ("DEATH_DATE", "2026-08-31", "ORD-CONTACT-DEATH"), ("DEATH_DATE", "2026-09-01", None),
    ("PD_DATE", "2026-09-02", "ORD-PD-CONTACT"),
    ("T0_DATE", _day(-29), "WIN-T0"), ("T0_DATE", _day(-28), None), ("T0_DATE", _day(-1), None),
    ("T0_DATE", _day(1), "WIN-T0"),
    ("T1_DATE", _day(54), "WIN-T1"), ("T1_DATE", _day(55), None), ("T1_DATE", _day(70), None),
    ("T1_DATE", _day(71), "WIN-T1"),
    ("T2_DATE", _day(96), "WIN-T2"), ("T2_DATE", _day(97), None), ("T2_DATE", _day(112), None),
    ("T2_DATE", _day(113), "WIN-T2"),
]


@pytest.mark.parametrize(("field", "value", "rule"), BOUNDARIES, ids=[f"{f}={v!r}" for f, v, _ in BOUNDARIES])
def test_boundaries(field: str, value: str, rule: str | None) -> None:
    queries = _queries(**{field: value})
    if rule is None:
        assert queries.empty, queries.to_dict("records")
    else:
        assert rule in set(queries["RULE_ID"]), queries.to_dict("records")
        hit = queries[queries["RULE_ID"] == rule].iloc[0]
        assert hit["USUBJID"] == CLEAN["USUBJID"] if field != "USUBJID" else value
        assert hit["MESSAGE"]
        assert hit["SEVERITY"] in ("HARD", "SOFT")


@pytest.mark.parametrize(("changes", "rule", "field"), [
    ({"SMOKING": "NEVER", "PACKYEARS": "30"}, "XF-NEVER-PACKYRS", "PACKYEARS"),
    ({"SMOKING": "CURRENT", "PACKYEARS": ""}, "REQ-PACKYRS", "PACKYEARS"),
    ({"PRIOR_RT_TARGET": "Y", "PRIOR_RT": "N"}, "XF-PRIORRT", "PRIOR_RT"),
    ({"T1_DATE": "2026-01-03"}, "ORD-T0-T1", "T1_DATE"),
])
def test_cross_field(changes: dict[str, str], rule: str, field: str) -> None:
    queries = _queries(**changes)
    assert ((queries["RULE_ID"] == rule) & (queries["FIELD"] == field)).any(), queries.to_dict("records")


def test_never_smoker_with_zero_packyears_is_clean_and_packyears_optional() -> None:
    assert _queries(SMOKING="NEVER", PACKYEARS="0").empty
    assert _queries(SMOKING="NEVER", PACKYEARS="").empty


@pytest.mark.parametrize(("changes", "reason"), [
    ({"AGE": "17"}, "INC-AGE"), ({"ECOG": "2"}, "INC-ECOG"), ({"STAGE": "IIB"}, "INC-STAGE"),
    ({"PRIOR_RT_TARGET": "Y", "PRIOR_RT": "Y"}, "EXC-PRIORRT"), ({"OTHER_MALIGNANCY": "Y"}, "EXC-OTHERMAL"),
    ({"WEIGHT_KG": "140.1"}, "RNG-WEIGHT"),  # an unresolved hard query also makes the subject ineligible
])
def test_eligibility_reasons(changes: dict[str, str], reason: str) -> None:
    table = eligibility(pd.DataFrame([{**CLEAN, **changes}]), PLAN, PROTOCOL)
    assert table["ELIGIBLE"].tolist() == [False]
    assert reason in table["REASONS"].iloc[0]


def test_query_ids_are_stable_and_unique() -> None:
    rows = pd.DataFrame([{**CLEAN, "WEIGHT_KG": "39"}, {**CLEAN, "USUBJID": "FEDRESP-S01-0002", "SUBJID": "0002",
                                                          "SEX": "X", "AGE": "12"}])
    first, second = run_checks(rows, PLAN, PROTOCOL), run_checks(rows, PLAN, PROTOCOL)
    pd.testing.assert_frame_equal(first, second)
    assert first["QUERY_ID"].is_unique and first["QUERY_ID"].iloc[0] == "Q00001"
    assert list(first.columns) == ["QUERY_ID", "USUBJID", "FIELD", "VALUE", "RULE_ID", "SEVERITY", "MESSAGE"]


@pytest.mark.parametrize(("text", "message"), [
    ("rules: [{id: R1, type: range, field: AGE}]", "needs min or max"),
    ("rules: [{id: R1, type: codes, field: SEX}]", "needs"),
    ("rules: [{id: R1, type: nonsense}]", "type"),
    ("rules: [{id: R1, type: required, fields: [A]}, {id: R1, type: required, fields: [B]}]", "unique"),
    ("rules: [{id: R1, type: required, fields: [A], when: {field: X}}]", "exactly one"),
])
def test_invalid_plan_is_explained(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "dvp.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DvpError, match=message):
        load_dvp(path)
