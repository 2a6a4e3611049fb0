"""Double reading: independent assessments, discordance, a recorded adjudicator choice, agreement."""

from __future__ import annotations

import pandas as pd
import pytest
from response_tables import PROTOCOL, table

from evaluation.adjudication import adjudicate, assess_readers, discordance, reader_agreement
from evaluation.exceptions import AdjudicationDecisionError, AdjudicationPendingError

A, B = "FEDRESP-S01-0001", "FEDRESP-S01-0002"
# Subject A: both readers see PR. Subject B: R1 sees SD, R2 sees PR (−30 %) → discordant on BOR.
READS = {
    ("R1", A): [("T0", -7, {"T1": 50.0}), ("T1", 62, {"T1": 30.0}), ("T2", 104, {"T1": 28.0})],
    ("R2", A): [("T0", -7, {"T1": 51.0}), ("T1", 62, {"T1": 31.0}), ("T2", 104, {"T1": 29.0})],
    ("R1", B): [("T0", -7, {"T1": 40.0}), ("T1", 62, {"T1": 30.0}), ("T2", 104, {"T1": 30.0})],
    ("R2", B): [("T0", -7, {"T1": 40.0}), ("T1", 62, {"T1": 28.0}), ("T2", 104, {"T1": 30.0})],
}


def _reads(extra: dict[tuple[str, str], list] | None = None) -> pd.DataFrame:
    reads = {**READS, **(extra or {})}
    return pd.concat([table(v, subject=s, reader=r) for (r, s), v in reads.items()], ignore_index=True)


def test_readers_are_assessed_independently_and_discordance_found() -> None:
    per_reader = assess_readers(_reads(), PROTOCOL)
    assert sorted(per_reader) == ["R1", "R2"]
    assert per_reader["R1"].subjects.set_index("USUBJID").at[B, "BOR"] == "SD"
    assert per_reader["R2"].subjects.set_index("USUBJID").at[B, "BOR"] == "PR"
    found = discordance(per_reader["R1"], per_reader["R2"]).set_index("USUBJID")["DISCORDANT_ON"]
    assert found[A] == "" and "BOR" in found[B]


def test_discordant_subject_needs_a_decision() -> None:
    per_reader = assess_readers(_reads(), PROTOCOL)
    with pytest.raises(AdjudicationPendingError, match=B):
        adjudicate(per_reader)
    provisional = adjudicate(per_reader, provisional=True)
    assert provisional.pending == [B]


def test_adjudicator_chooses_one_reader_whole() -> None:
    per_reader = assess_readers(_reads(), PROTOCOL)
    decisions = pd.DataFrame([{"USUBJID": B, "CHOSEN_READER": "R2", "ADJUDICATOR": "ADJ1",
                               "REASON": "R1 missed the T1 shrinkage of L01 on the arterial phase"}])
    result = adjudicate(per_reader, decisions)
    final = result.final.subjects.set_index("USUBJID")
    assert final.at[B, "BOR"] == "PR" and final.at[A, "BOR"] == "PR"
    # The chosen reader's visits are taken unchanged (no averaging of the two readers' sums).
    b_visits = result.final.visits[result.final.visits["USUBJID"] == B]["SLD_MM"].tolist()
    assert b_visits == [40.0, 28.0, 30.0]
    a_visits = result.final.visits[result.final.visits["USUBJID"] == A]["SLD_MM"].tolist()
    assert a_visits == [50.0, 30.0, 28.0]  # concordant → first reader
    record = result.record.set_index("USUBJID")
    assert record.at[B, "STATUS"] == "ADJUDICATED" and record.at[B, "ADJUDICATOR"] == "ADJ1"
    assert record.at[A, "STATUS"] == "CONCORDANT"


@pytest.mark.parametrize(
    ("decision", "message"),
    [
        ({"USUBJID": B, "CHOSEN_READER": "R3", "ADJUDICATOR": "ADJ1", "REASON": "x"}, "not one of"),
        ({"USUBJID": B, "CHOSEN_READER": "R2", "ADJUDICATOR": "", "REASON": "x"}, "needs an ADJUDICATOR"),
        ({"USUBJID": B, "CHOSEN_READER": "R2", "ADJUDICATOR": "ADJ1", "REASON": ""}, "REASON"),
        ({"USUBJID": B, "CHOSEN_READER": "R2", "ADJUDICATOR": "R1", "REASON": "x"}, "is one of the readers"),
        ({"USUBJID": A, "CHOSEN_READER": "R2", "ADJUDICATOR": "ADJ1", "REASON": "x"}, "not a discordant"),
    ],
)
def test_bad_decisions_are_refused(decision: dict[str, str], message: str) -> None:
    per_reader = assess_readers(_reads(), PROTOCOL)
    with pytest.raises(AdjudicationDecisionError, match=message):
        adjudicate(per_reader, pd.DataFrame([decision]), provisional=True)


def test_agreement_statistics_and_intra_reader() -> None:
    reread = {("R1#2", A): READS[("R1", A)], ("R1#2", B): READS[("R1", B)]}
    per_reader = assess_readers(_reads(reread), PROTOCOL)
    result = adjudicate(per_reader, provisional=True)
    report = reader_agreement(per_reader, result)
    inter = report["inter_reader"]
    assert isinstance(inter, dict)
    assert inter["n_subject_visits"] == 6
    assert 0.8 < float(inter["sld_icc"]) < 1.0
    assert inter["sld_bias_mm"] == pytest.approx((-1 - 1 - 1 + 0 + 2 + 0) / 6)
    assert report["adjudication_rate"] == pytest.approx(0.5)
    intra = report["intra_reader"]
    assert isinstance(intra, dict)
    assert intra["R1#2"]["sld_icc"] == pytest.approx(1.0)  # identical re-read
    assert intra["R1#2"]["visit_kappa"] == pytest.approx(1.0)
