"""Study days (CDISC: day 1 = first dose, no day 0) and protocol visit labels from configs/study.yaml."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from evaluation.protocol import load_protocol
from fl_client.ingest.visits import label_studies, parse_da, protocol_visit, study_day

PROTOCOL = load_protocol()
DOSE = date(2026, 3, 10)


@pytest.mark.parametrize(("offset", "ady"), [(-1, -1), (0, 1), (1, 2), (-28, -28), (61, 62)])
def test_study_day_has_no_day_zero(offset: int, ady: int) -> None:
    assert study_day(DOSE + timedelta(days=offset), DOSE) == ady


@pytest.mark.parametrize(("ady", "visit"), [
    (-29, None), (-28, "T0"), (-1, "T0"), (1, None), (54, None), (55, "T1"), (70, "T1"), (71, None),
    (96, None), (97, "T2"), (112, "T2"), (113, None),
])
def test_windows_are_inclusive_and_come_from_the_protocol(ady: int, visit: str | None) -> None:
    assert protocol_visit(ady, PROTOCOL) == visit


def test_labels_extra_and_undated_studies() -> None:
    studies = [("a", DOSE - timedelta(days=5)), ("b", DOSE + timedelta(days=61)), ("c", DOSE + timedelta(days=63)),
               ("d", DOSE + timedelta(days=200)), ("e", None)]
    labels = label_studies(studies, DOSE, PROTOCOL)
    assert labels["a"] == ("T0", -5, "") and labels["b"] == ("T1", 62, "")
    assert labels["c"][0].startswith("UNS") and "second study in the T1 window" in labels["c"][2]
    assert labels["d"][0].startswith("UNS") and "outside every protocol window" in labels["d"][2]
    assert labels["e"][2] == "study has no StudyDate"
    assert len({v for v, _, _ in labels.values()}) == 5  # every study keeps its own label


def test_without_first_dose_every_study_is_unscheduled() -> None:
    labels = label_studies([("a", DOSE)], None, PROTOCOL)
    assert labels["a"] == ("UNS1", None, "no FIRST_DOSE_DATE in the CRF for this subject")


@pytest.mark.parametrize(("text", "expected"), [
    ("20260310", date(2026, 3, 10)), ("2026-03-10", date(2026, 3, 10)), ("20260230", None), ("", None), ("2026", None),
])
def test_parse_da(text: str, expected: date | None) -> None:
    assert parse_da(text) == expected
