"""Best overall response, unconfirmed (BOR) and confirmed (CBOR): Eisenhauer 2009 §4.4 and Table 3."""

from __future__ import annotations

import pytest
from response_tables import subject

from evaluation.response.bor import IRECIST, RECIST, best_overall_response, confirmed_best_overall_response

BASE = ("T0", -7, {"T1": 50.0})
SD, PR, CR, PD = {"T1": 50.0}, {"T1": 30.0}, {"T1": 0.0}, {"T1": 70.0}


@pytest.mark.parametrize(
    ("ady", "bor"),
    [(42, "PD"), (43, "SD")],  # SD counts from 42 days after the first dose (day 1) → ADY ≥ 43
)
def test_sd_needs_42_days_from_first_dose(ady: int, bor: str) -> None:
    assert subject([BASE, ("T1", ady, SD), ("T2", ady + 42, PD)])["BOR"] == bor


def test_early_sd_without_later_assessment_is_ne() -> None:
    assert subject([BASE, ("T1", 30, SD)])["BOR"] == "NE"


@pytest.mark.parametrize(
    ("gap", "cbor"),
    [(27, "SD"), (28, "PR")],  # a repeat PR 27 days later does not confirm; 28 days does
)
def test_confirmation_needs_28_days(gap: int, cbor: str) -> None:
    summary = subject([BASE, ("T1", 62, PR), ("T2", 62 + gap, PR)])
    assert summary["BOR"] == "PR"
    assert summary["CBOR"] == cbor


@pytest.mark.parametrize(
    ("sequence", "bor", "cbor"),
    [
        ([CR, CR], "CR", "CR"),
        ([CR, PR], "CR", "SD"),          # Table 3 note a: a lesion back after CR is PD; SD by duration
        ([PR, CR], "CR", "PR"),          # CR unconfirmed (no repeat CR); PR confirmed by the CR
        ([PR, SD], "PR", "SD"),
        ([PR, PD], "PR", "SD"),          # unconfirmed PR at day 62 ≥ 42 → SD
        ([CR, {"T1": "NE"}], "CR", "SD"),
        ([PR, {"T1": "NE"}, PR], "PR", "PR"),  # an NE in between does not break confirmation
        ([PR, SD, PR], "PR", "SD"),            # an SD in between does
        ([PD, PR], "PD", "PD"),          # nothing after PD counts
    ],
)
def test_table_3_sequences(sequence: list[dict[str, float | str]], bor: str, cbor: str) -> None:
    days = [62, 104, 167]
    visits = [BASE, *[(f"V{i}", days[i], lesions) for i, lesions in enumerate(sequence)]]
    summary = subject(visits)
    assert (summary["BOR"], summary["CBOR"]) == (bor, cbor)


def test_no_follow_up_is_ne() -> None:
    assert best_overall_response([], [], RECIST, 42) == "NE"
    assert confirmed_best_overall_response([], [], RECIST, 42, 28) == "NE"


@pytest.mark.parametrize(
    ("responses", "ibor"),
    [
        (["iUPD", "iPR", "iPR"], "iPR"),     # iRECIST: a response after an unconfirmed iUPD counts
        (["iUPD", "iCPD", "iPR"], "iCPD"),   # nothing after iCPD counts
        (["iSD", "iUPD"], "iSD"),
        (["iUPD"], "iUPD"),
        (["NE", "NE"], "NE"),
    ],
)
def test_irecist_best_response(responses: list[str], ibor: str) -> None:
    days = [62, 104, 167][: len(responses)]
    assert best_overall_response(days, responses, IRECIST, 42) == ibor
