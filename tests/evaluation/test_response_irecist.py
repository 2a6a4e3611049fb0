"""iRECIST worked cases (Seymour et al., Lancet Oncol 2017;18:e143-52): confirmation window, further
increase, resets, new lesions and non-target confirmation."""

from __future__ import annotations

import pytest
from response_tables import column, subject

BASE = ("T0", -7, {"T1": 50.0, "NT1": "PRESENT"})
IUPD_DAY = 62
IUPD = ("T1", IUPD_DAY, {"T1": 70.0, "NT1": "PRESENT"})  # +40 %, +20 mm → iUPD


@pytest.mark.parametrize(
    ("gap", "expected"),
    [(27, "iUPD"), (28, "iCPD"), (56, "iCPD"), (57, "iUPD")],  # window 28–56 days inclusive
)
def test_confirmation_window(gap: int, expected: str) -> None:
    visits = [BASE, IUPD, ("T2", IUPD_DAY + gap, {"T1": 80.0, "NT1": "PRESENT"})]
    assert column(visits, "IRECIST_OVR") == ["iUPD", expected]
    assert column(visits, "RECIST_OVR") == ["PD", "PD"]


def test_early_scan_cannot_confirm_but_the_next_in_window_can() -> None:
    visits = [BASE, IUPD, ("U1", IUPD_DAY + 14, {"T1": 80.0, "NT1": "PRESENT"}),
              ("T2", IUPD_DAY + 42, {"T1": 80.0, "NT1": "PRESENT"})]
    assert column(visits, "IRECIST_OVR") == ["iUPD", "iUPD", "iCPD"]
    summary = subject(visits)
    assert (summary["IUPD_ADY"], summary["ICPD_ADY"]) == (IUPD_DAY, IUPD_DAY + 42)


def test_expired_iupd_is_replaced_by_a_fresh_one() -> None:
    # 57 days later the first iUPD can no longer be confirmed; the still-progressed scan is a new iUPD,
    # which the next scan 42 days later confirms.
    visits = [BASE, IUPD, ("FU1", IUPD_DAY + 57, {"T1": 80.0, "NT1": "PRESENT"}),
              ("FU2", IUPD_DAY + 99, {"T1": 85.0, "NT1": "PRESENT"})]
    assert column(visits, "IRECIST_OVR") == ["iUPD", "iUPD", "iCPD"]
    summary = subject(visits)
    assert (summary["IUPD_ADY"], summary["ICPD_ADY"]) == (IUPD_DAY, IUPD_DAY + 99)


@pytest.mark.parametrize(("later", "expected"), [(74.9, "iUPD"), (75.0, "iCPD")])
def test_further_increase_of_five_mm_in_target_sum(later: float, expected: str) -> None:
    visits = [BASE, IUPD, ("T2", 104, {"T1": later, "NT1": "PRESENT"})]
    assert column(visits, "IRECIST_OVR")[-1] == expected


def test_reset_after_isd_marks_pseudoprogression_and_needs_a_new_confirmation() -> None:
    visits = [BASE, IUPD,
              ("T2", 104, {"T1": 45.0, "NT1": "PRESENT"}),      # below PD again → iSD, bar resets
              ("FU1", 167, {"T1": 60.0, "NT1": "PRESENT"}),     # +33 % / +15 mm over nadir 45 → fresh iUPD
              ("FU2", 209, {"T1": 64.9, "NT1": "PRESENT"}),     # +4.9 mm → stays iUPD
              ("FU3", 251, {"T1": 70.0, "NT1": "PRESENT"})]     # 84 days after FU1: window passed → iUPD again
    assert column(visits, "IRECIST_OVR") == ["iUPD", "iSD", "iUPD", "iUPD", "iUPD"]
    summary = subject(visits)
    assert summary["PSEUDOPROG"] == "Y"
    assert summary["IBOR"] == "iSD"
    assert summary["BOR"] == "PD" and summary["PD_ADY"] == IUPD_DAY
    assert summary["ICPD_ADY"] is None


def test_response_after_iupd_is_pseudoprogression_and_counts_for_ibor() -> None:
    visits = [BASE, IUPD, ("T2", 104, {"T1": 30.0, "NT1": "PRESENT"}), ("FU1", 167, {"T1": 0.0, "NT1": "ABSENT"})]
    assert column(visits, "IRECIST_OVR") == ["iUPD", "iPR", "iCR"]
    summary = subject(visits)
    assert (summary["BOR"], summary["IBOR"], summary["PSEUDOPROG"]) == ("PD", "iCR", "Y")


@pytest.mark.parametrize(
    ("t2_lesions", "expected"),
    [
        ({"X1": 12.0}, "iUPD"),                    # same new lesion, no growth → iUPD
        ({"X1": 16.9}, "iUPD"),                    # new-target sum +4.9 mm
        ({"X1": 17.0}, "iCPD"),                    # new-target sum +5.0 mm
        ({"X1": 12.0, "X2": 6.0}, "iCPD"),         # more new lesions
        ({"X1": "ABSENT"}, "iSD"),                 # new lesion gone, targets stable → reset
    ],
)
def test_iupd_from_a_new_lesion(t2_lesions: dict[str, float | str], expected: str) -> None:
    visits = [BASE, ("T1", 62, {"T1": 50.0, "NT1": "PRESENT", "X1": 12.0}),
              ("T2", 104, {"T1": 50.0, "NT1": "PRESENT", **t2_lesions})]
    assert column(visits, "IRECIST_OVR") == ["iUPD", expected]


def test_small_new_lesion_is_non_target_and_confirms_on_any_increase() -> None:
    visits = [BASE, ("T1", 62, {"T1": 50.0, "NT1": "PRESENT", "X1": 6.0}),
              ("T2", 104, {"T1": 50.0, "NT1": "PRESENT", "X1": "INCREASED"})]
    assert column(visits, "IRECIST_OVR") == ["iUPD", "iCPD"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [("UNEQUIVOCAL_PROGRESSION", "iUPD"), ("INCREASED", "iCPD")],
)
def test_nontarget_iupd_confirmed_by_any_further_increase(status: str, expected: str) -> None:
    visits = [BASE, ("T1", 62, {"T1": 50.0, "NT1": "UNEQUIVOCAL_PROGRESSION"}),
              ("T2", 104, {"T1": 50.0, "NT1": status})]
    assert column(visits, "IRECIST_OVR") == ["iUPD", expected]


def test_progression_in_a_category_not_progressed_at_iupd_confirms() -> None:
    target_iupd = [BASE, IUPD, ("T2", 104, {"T1": 72.0, "NT1": "UNEQUIVOCAL_PROGRESSION"})]
    new_lesion = [BASE, IUPD, ("T2", 104, {"T1": 72.0, "NT1": "PRESENT", "X1": 5.0})]
    assert column(target_iupd, "IRECIST_OVR")[-1] == "iCPD"
    assert column(new_lesion, "IRECIST_OVR")[-1] == "iCPD"


def test_ne_after_iupd_keeps_it_pending() -> None:
    visits = [BASE, IUPD, ("T2", 104, {"NT1": "PRESENT"}), ("FU1", 110, {"T1": 80.0, "NT1": "PRESENT"})]
    assert column(visits, "IRECIST_OVR") == ["iUPD", "NE", "iCPD"]


def test_study_schedule_t2_confirms_t1() -> None:
    """DOMAIN §5: at 21-day cycles T2 (day ~104) confirms an iUPD at T1 (day ~62); one at T2 stays open."""
    at_t1 = [BASE, IUPD, ("T2", 104, {"T1": 80.0, "NT1": "PRESENT"})]
    at_t2 = [BASE, ("T1", 62, {"T1": 50.0, "NT1": "PRESENT"}), ("T2", 104, {"T1": 80.0, "NT1": "PRESENT"})]
    assert subject(at_t1)["IBOR"] == "iCPD"
    assert subject(at_t2)["IBOR"] == "iSD" and subject(at_t2)["ICPD_ADY"] is None
    assert subject(at_t2)["IUPD_ADY"] == 104
