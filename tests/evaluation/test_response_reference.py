"""Dynamic-iRECIST reference labels: responder, pseudoprogression, PFS with DOMAIN §6 censoring, model slot."""

from __future__ import annotations

import pandas as pd
import pytest
from response_tables import PROTOCOL, run

from evaluation.response.reference import attach_pseudoprogression_probability, events_from_crf, reference_labels

S = "FEDRESP-S01-0001"
BASE = ("T0", -7, {"T1": 50.0})


def _label(visits: list, death: float | None = None, therapy: float | None = None) -> dict[str, object]:
    events = pd.DataFrame({"USUBJID": [S], "DEATH_ADY": [death], "NEWTHER_ADY": [therapy]})
    row = reference_labels(run(visits), PROTOCOL, events).iloc[0].to_dict()
    return {k: (None if pd.isna(v) else v) for k, v in row.items()}


@pytest.mark.parametrize(
    ("visits", "responder", "confirmed"),
    [
        ([BASE, ("T1", 62, {"T1": 30.0}), ("T2", 104, {"T1": 30.0})], "Y", "Y"),            # iPR confirmed
        ([BASE, ("T1", 62, {"T1": 30.0}), ("T2", 104, {"T1": 45.0})], "N", ""),             # iPR then iSD
        ([BASE, ("T1", 62, {"T1": 45.0}), ("T2", 104, {"T1": 30.0})], "Y", "UNCONFIRMABLE"),  # iPR at last scan
        ([BASE, ("T1", 62, {"T1": 70.0}), ("T2", 104, {"T1": 30.0}), ("FU1", 167, {"T1": 30.0})], "Y", "Y"),
    ],
)
def test_responder(visits: list, responder: str, confirmed: str) -> None:
    label = _label(visits)
    assert (label["RESPONDER"], label["RESP_CONFIRMED"]) == (responder, confirmed)


def test_pfs_event_is_the_confirmed_iupd_day() -> None:
    visits = [BASE, ("T1", 62, {"T1": 70.0}), ("T2", 104, {"T1": 80.0})]
    label = _label(visits)
    assert (label["IPFS_DAYS"], label["IPFS_EVENT"], label["IPFS_SOURCE"]) == (62, 1, "ICPD")
    assert (label["PFS_DAYS"], label["PFS_EVENT"], label["PFS_SOURCE"]) == (62, 1, "PD")
    assert label["IUPD_OPEN"] == "N"


def test_open_iupd_is_censored_and_offers_the_model_slot() -> None:
    visits = [BASE, ("T1", 62, {"T1": 50.0}), ("T2", 104, {"T1": 70.0})]
    label = _label(visits)
    assert (label["IPFS_DAYS"], label["IPFS_EVENT"], label["IPFS_SOURCE"]) == (104, 0, "CENSORED_LAST_ASSESSMENT")
    assert (label["PFS_DAYS"], label["PFS_EVENT"], label["PFS_SOURCE"]) == (104, 1, "PD")
    assert (label["IUPD_OPEN"], label["IUPD_OPEN_ADY"], label["P_PSEUDO"]) == ("Y", 104, None)
    reference = reference_labels(run(visits), PROTOCOL)
    filled = attach_pseudoprogression_probability(reference, {S: 0.3})
    assert filled["P_PSEUDO"].tolist() == [0.3]
    with pytest.raises(ValueError, match="not a probability"):
        attach_pseudoprogression_probability(reference, {S: 1.3})


def test_slot_only_for_open_iupd() -> None:
    reference = reference_labels(run([BASE, ("T1", 62, {"T1": 30.0})]), PROTOCOL)
    with pytest.raises(ValueError, match="no open iUPD"):
        attach_pseudoprogression_probability(reference, {S: 0.5})


def test_pseudoprogression_is_carried() -> None:
    visits = [BASE, ("T1", 62, {"T1": 70.0}), ("T2", 104, {"T1": 40.0})]
    label = _label(visits)
    assert label["PSEUDOPROG"] == "Y"
    assert (label["IPFS_DAYS"], label["IPFS_EVENT"]) == (104, 0)  # the iUPD was never confirmed
    assert (label["PFS_DAYS"], label["PFS_EVENT"]) == (62, 1)  # RECIST 1.1 counts the first PD


@pytest.mark.parametrize(
    ("death", "therapy", "expected"),
    [
        (150.0, None, (150, 1, "DEATH")),                           # death 46 days after the last scan
        # ADTTE's rule (evaluation.cdisc.pfs): FU1 and FU2 missed when the event lies after FU2's latest on-time
        # day, 104 + (230 − 104) + 7 + 7 = 244 (each of the two visits at the late end of its window)
        (104 + 140, None, (244, 1, "DEATH")),
        (104 + 141, None, (104, 0, "CENSORED_MISSED_VISITS")),      # ≥ 2 missed visits → censor
        (None, 90.0, (62, 0, "CENSORED_NEW_THERAPY")),              # new therapy before the progression
        (None, None, (104, 0, "CENSORED_LAST_ASSESSMENT")),
    ],
)
def test_pfs_censoring(death: float | None, therapy: float | None, expected: tuple[int, int, str]) -> None:
    visits = [BASE, ("T1", 62, {"T1": 45.0}), ("T2", 104, {"T1": 45.0})]
    label = _label(visits, death, therapy)
    assert (label["PFS_DAYS"], label["PFS_EVENT"], label["PFS_SOURCE"]) == expected
    assert (label["IPFS_DAYS"], label["IPFS_EVENT"], label["IPFS_SOURCE"]) == expected


def test_progression_after_new_therapy_is_censored_before_therapy() -> None:
    visits = [BASE, ("T1", 62, {"T1": 45.0}), ("T2", 104, {"T1": 70.0}), ("FU1", 140, {"T1": 80.0})]
    label = _label(visits, therapy=100.0)
    assert (label["PFS_DAYS"], label["PFS_EVENT"], label["PFS_SOURCE"]) == (62, 0, "CENSORED_NEW_THERAPY")
    assert (label["IPFS_DAYS"], label["IPFS_EVENT"], label["IPFS_SOURCE"]) == (62, 0, "CENSORED_NEW_THERAPY")


def test_events_from_crf_use_cdisc_study_days() -> None:
    crf = pd.DataFrame({"USUBJID": [S, "B"], "FIRST_DOSE_DATE": ["2027-01-10", "2027-01-10"],
                        "DEATH_DATE": ["2027-01-10", ""], "NEW_THERAPY_DATE": ["2027-01-09", "2027-03-11"]})
    events = events_from_crf(crf)
    assert events["DEATH_ADY"].tolist()[0] == 1  # the first-dose day is day 1
    assert pd.isna(events["DEATH_ADY"].tolist()[1])
    assert events["NEWTHER_ADY"].tolist() == [-1, 61]  # the day before is -1; no day 0


def test_event_before_first_dose_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    visits = [BASE, ("T1", 62, {"T1": 45.0}), ("T2", 104, {"T1": 45.0})]
    label = _label(visits, death=-5.0)
    assert (label["PFS_DAYS"], label["PFS_EVENT"], label["PFS_SOURCE"]) == (104, 0, "CENSORED_LAST_ASSESSMENT")
    assert "before the first dose" in caplog.text


def test_irc_versus_investigator_direction_and_size() -> None:
    from evaluation.response.reference import irc_vs_investigator

    subjects = pd.DataFrame({"USUBJID": ["A", "B", "C", "D"], "PD_ADY": pd.array([62, 104, None, None], "Int64")})
    crf = pd.DataFrame({"USUBJID": ["A", "B", "C", "D"], "FIRST_DOSE_DATE": ["2027-01-01"] * 4,
                        "DEATH_DATE": [""] * 4, "NEW_THERAPY_DATE": [""] * 4,
                        "PD_DATE": ["2027-03-14", "2027-04-10", "2027-05-01", ""]})  # days 73, 100, 121, none
    result = irc_vs_investigator(subjects, events_from_crf(crf))
    assert result["progression_status_agreement"] == 0.75  # C: investigator only
    assert (result["both"], result["irc_earlier"], result["irc_later"]) == (2, 1, 1)
    assert result["median_day_difference"] == pytest.approx(((62 - 73) + (104 - 100)) / 2)
    assert result["investigator_only"] == 1 and result["irc_only"] == 0


@pytest.mark.parametrize(
    ("responses", "expected"),
    [
        (["iSD", "iUPD", "iCPD"], (104, None)),
        (["iUPD", "iUPD", "iCPD"], (62, None)),            # a fresh iUPD after an expired window: first iUPD dates it
        (["iUPD", "NE", "iCPD"], (62, None)),              # NE keeps the run
        (["iUPD", "iSD", "iUPD", "iCPD"], (167, None)),    # a reset starts a new run
        (["iUPD", "iSD", "iUPD"], (None, 167)),            # still open at the end
        (["iSD", "iPR", "iPR"], (None, None)),
    ],
)
def test_one_dating_rule_for_a_confirmed_iupd(responses: list[str], expected: tuple) -> None:
    """Seymour 2017: a confirmed progression is dated at the first iUPD; the reference, the featurizer (IPFS_DAYS)
    and ADTTE IPFS all use :func:`evaluation.response.irecist.progression_event_day`."""
    from evaluation.cdisc.adam import _confirmed_iupd_day
    from evaluation.response.irecist import progression_event_day

    days = [62, 104, 167, 230][: len(responses)]
    assert progression_event_day(days, responses) == expected
    rows = pd.DataFrame({"RSDY": days, "RSSTRESC": responses})
    assert _confirmed_iupd_day(rows) == (expected[0] if expected[0] is not None else pytest.approx(float("nan"),
                                                                                                    nan_ok=True))
