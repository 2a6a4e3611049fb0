"""RECIST 1.1 worked cases at and around every threshold (Eisenhauer et al., Eur J Cancer 2009;45:228-47)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from response_tables import PROTOCOL, column, run, subject, table

from evaluation.response import assess

# Baseline 100 mm over two lung/liver targets; T0 day -7, then follow-up days.
BASE = ("T0", -7, {"T1": 60.0, "T2": 40.0})


@pytest.mark.parametrize(
    ("t1", "expected", "pchg"),
    [
        ({"T1": 40.0, "T2": 30.0}, "PR", -30.0),   # exactly −30.0 % → PR
        ({"T1": 40.1, "T2": 30.0}, "SD", -29.9),   # −29.9 % → SD
        ({"T1": 0.0, "T2": 0.0}, "CR", -100.0),
        ({"T1": 60.0, "T2": 40.0}, "SD", 0.0),
        ({"T1": 79.9, "T2": 40.0}, "SD", 19.9),    # +19.9 % from nadir (baseline) → SD
        ({"T1": 80.0, "T2": 40.0}, "PD", 20.0),    # +20.0 % and +20 mm → PD
    ],
)
def test_target_thresholds_against_baseline(t1: dict[str, float], expected: str, pchg: float) -> None:
    visits = run([BASE, ("T1", 62, t1)]).visits
    assert visits["TRGRESP"].iloc[1] == expected
    assert visits["PCHG_BASE"].iloc[1] == pytest.approx(pchg, abs=1e-9)
    assert visits["RECIST_OVR"].iloc[1] == expected


@pytest.mark.parametrize(
    ("nadir", "later", "expected"),
    [
        (25.0, 30.0, "PD"),   # +20 % and +5.0 mm → PD
        (24.5, 29.4, "PR"),   # +20 % but only +4.9 mm → not PD (still −41 % from baseline 50)
        (25.0, 29.9, "PR"),   # +19.6 %, +4.9 mm
        (30.0, 35.9, "SD"),   # +19.67 % but +5.9 mm → not PD (needs both)
        (30.0, 36.0, "PD"),   # +20 %, +6 mm
    ],
)
def test_progression_needs_twenty_percent_and_five_mm_from_nadir(nadir: float, later: float, expected: str) -> None:
    visits = [("T0", -7, {"T1": 50.0}), ("T1", 62, {"T1": nadir}), ("T2", 104, {"T1": later})]
    assert column(visits, "TRGRESP")[-1] == expected


def test_nadir_is_the_smallest_earlier_sum_not_baseline() -> None:
    # 100 → 50 (PR) → 60: +20 % and +10 mm from the nadir 50, although −40 % from baseline.
    visits = [("T0", -7, {"T1": 100.0}), ("T1", 62, {"T1": 50.0}), ("T2", 104, {"T1": 60.0})]
    assert column(visits, "TRGRESP") == ["PR", "PD"]
    assert column(visits, "PCHG_NADIR")[-1] == pytest.approx(20.0)


def test_nadir_excludes_ne_visits() -> None:
    # T1 misses T2 (NE) with a partial sum of 10 mm; T2 = 40 mm must be judged against nadir 50, not 10.
    visits = [BASE, ("T1", 62, {"T1": 10.0}), ("T2", 104, {"T1": 25.0, "T2": 15.0}),
              ("FU1", 167, {"T1": 26.0, "T2": 22.0})]
    assert column(visits, "TRGRESP") == ["NE", "PR", "PD"]  # FU1: 48 vs nadir 40 → +20 %, +8 mm


def test_missing_target_is_ne_unless_the_rest_already_progressed() -> None:
    not_evaluable = [BASE, ("T1", 62, {"T1": 60.0})]
    progressed = [BASE, ("T1", 62, {"T1": 125.0})]  # measured 125 ≥ 100 · 1.2 and +25 mm even without T2
    ne_status = [BASE, ("T1", 62, {"T1": 50.0, "T2": "NE"})]
    assert column(not_evaluable, "RECIST_OVR") == ["NE"]
    assert column(progressed, "RECIST_OVR") == ["PD"]
    assert column(ne_status, "RECIST_OVR") == ["NE"]


@pytest.mark.parametrize(
    ("n1", "n2", "expected"),
    [
        (9.9, 9.0, "CR"),     # every node < 10 mm short axis → CR though the sum is 18.9 mm
        (10.0, 9.0, "PR"),    # one node at 10.0 mm is not normal → PR (−52.5 %)
        (15.0, 14.0, "SD"),
    ],
)
def test_node_only_disease(n1: float, n2: float, expected: str) -> None:
    visits = [("T0", -7, {"N1": 20.0, "N2": 20.0}), ("T1", 62, {"N1": n1, "N2": n2})]
    assert column(visits, "TRGRESP") == [expected]


def test_target_cr_with_nontarget_present_is_pr() -> None:
    visits = [("T0", -7, {"T1": 30.0, "NT1": "PRESENT"}), ("T1", 62, {"T1": 0.0, "NT1": "PRESENT"}),
              ("T2", 104, {"T1": 0.0, "NT1": "ABSENT"}), ("FU1", 167, {"T1": 0.0, "NT1": "NE"})]
    assert column(visits, "RECIST_OVR") == ["PR", "CR", "PR"]
    assert column(visits, "NTRGRESP") == ["NON-CR/NON-PD", "CR", "NE"]


@pytest.mark.parametrize(
    ("status", "nontarget", "overall"),
    [("PRESENT", "NON-CR/NON-PD", "SD"), ("INCREASED", "NON-CR/NON-PD", "SD"),
     ("UNEQUIVOCAL_PROGRESSION", "PD", "PD"), ("NE", "NE", "SD")],
)
def test_nontarget_status_with_stable_targets(status: str, nontarget: str, overall: str) -> None:
    visits = [("T0", -7, {"T1": 30.0, "NT1": "PRESENT"}), ("T1", 62, {"T1": 30.0, "NT1": status})]
    assert column(visits, "NTRGRESP") == [nontarget]
    assert column(visits, "RECIST_OVR") == [overall]


def test_nontarget_only_disease_follows_table_2() -> None:
    visits = [("T0", -7, {"NT1": "PRESENT", "NT2": "PRESENT"}),
              ("T1", 62, {"NT1": "PRESENT", "NT2": "ABSENT"}),
              ("T2", 104, {"NT1": "ABSENT", "NT2": "ABSENT"}),
              ("FU1", 167, {"NT1": "UNEQUIVOCAL_PROGRESSION", "NT2": "ABSENT"})]
    assert column(visits, "TRGRESP", allow_nontarget_only=True) == ["NA", "NA", "NA"]
    assert column(visits, "RECIST_OVR", allow_nontarget_only=True) == ["NON-CR/NON-PD", "CR", "PD"]
    assert subject(visits, allow_nontarget_only=True)["BOR"] == "CR"
    assert subject(visits, allow_nontarget_only=True)["CBOR"] == "NON-CR/NON-PD"
    # A CR seen once (no repeat ≥ 28 days later) falls back to NON-CR/NON-PD, not SD (Table 2 note).
    cr_then_pd = [visits[0], ("T1", 62, {"NT1": "ABSENT", "NT2": "ABSENT"}),
                  ("T2", 104, {"NT1": "UNEQUIVOCAL_PROGRESSION", "NT2": "ABSENT"})]
    assert subject(cr_then_pd, allow_nontarget_only=True)["CBOR"] == "NON-CR/NON-PD"
    stable = visits[:2]
    assert subject(stable, allow_nontarget_only=True)["BOR"] == "NON-CR/NON-PD"


def test_unequivocal_new_lesion_is_progression_whatever_the_targets() -> None:
    visits = [BASE, ("T1", 62, {"T1": 30.0, "T2": 10.0, "X1": 8.0})]
    assert column(visits, "TRGRESP") == ["PR"]
    assert column(visits, "NEWLES") == ["Y"]
    assert column(visits, "RECIST_OVR") == ["PD"]


def test_equivocal_new_lesion_confirmed_later_dates_progression_to_first_appearance() -> None:
    visits = [BASE, ("T1", 62, {"T1": 60.0, "T2": 40.0, "X1": "EQUIVOCAL"}),
              ("T2", 104, {"T1": 60.0, "T2": 40.0, "X1": 12.0})]
    assert column(visits, "NEWLES") == ["Y", "Y"]
    assert column(visits, "RECIST_OVR") == ["PD", "PD"]
    summary = subject(visits)
    assert summary["PD_ADY"] == 62
    assert summary["BOR"] == "PD"


def test_equivocal_new_lesion_never_confirmed_is_not_progression() -> None:
    visits = [BASE, ("T1", 62, {"T1": 60.0, "T2": 40.0, "X1": "EQUIVOCAL"}),
              ("T2", 104, {"T1": 60.0, "T2": 40.0, "X1": "ABSENT"})]
    assert column(visits, "NEWLES") == ["EQUIVOCAL", "N"]
    assert column(visits, "RECIST_OVR") == ["SD", "SD"]
    assert subject(visits)["PD_ADY"] is None


def test_reappearing_lesion_after_cr_is_progression() -> None:
    # After CR a reappearing 4 mm lesion is PD (Eisenhauer 2009 App. I) though +4 mm < 5 mm.
    visits = [("T0", -7, {"T1": 30.0}), ("T1", 62, {"T1": 0.0}), ("T2", 104, {"T1": 4.0})]
    assert column(visits, "TRGRESP") == ["CR", "PD"]
    # After PR the same +4 mm is added to the sum and judged by the 20 % / 5 mm rule.
    partial = [("T0", -7, {"T1": 30.0, "T2": 20.0}), ("T1", 62, {"T1": 0.0, "T2": 10.0}),
               ("T2", 104, {"T1": 4.0, "T2": 10.0})]
    assert column(partial, "TRGRESP") == ["PR", "PR"]


def test_baseline_row_carries_sum_and_no_response() -> None:
    visits = run([BASE, ("T1", 62, {"T1": 40.0, "T2": 30.0})]).visits
    first = visits.iloc[0]
    assert first["VISIT"] == "T0" and first["SLD_MM"] == 100.0
    assert first["RECIST_OVR"] == "" and first["IRECIST_OVR"] == ""


def test_row_order_and_other_subjects_do_not_change_a_result() -> None:
    cases = {
        "FEDRESP-S01-0001": [BASE, ("T1", 62, {"T1": 40.0, "T2": 30.0}), ("T2", 104, {"T1": 39.0, "T2": 30.0})],
        "FEDRESP-S01-0002": [("T0", -3, {"T1": 50.0, "NT1": "PRESENT"}), ("T1", 60, {"T1": 70.0, "NT1": "PRESENT"}),
                             ("T2", 101, {"T1": 45.0, "NT1": "PRESENT", "X1": "EQUIVOCAL"})],
        "FEDRESP-S01-0003": [("T0", -9, {"N1": 20.0}), ("T1", 66, {"N1": 8.0}), ("T2", 110, {"N1": 7.0})],
    }
    frame = pd.concat([table(v, subject=s) for s, v in cases.items()], ignore_index=True)
    expected = assess(frame, PROTOCOL)
    shuffled = frame.sample(frac=1.0, random_state=np.random.RandomState(4)).reset_index(drop=True)
    again = assess(shuffled, PROTOCOL)
    pd.testing.assert_frame_equal(again.visits, expected.visits)
    pd.testing.assert_frame_equal(again.subjects, expected.subjects)
    alone = assess(table(cases["FEDRESP-S01-0002"], subject="FEDRESP-S01-0002"), PROTOCOL)
    pd.testing.assert_frame_equal(alone.subjects, expected.subjects.iloc[[1]].reset_index(drop=True))
