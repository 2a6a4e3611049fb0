"""Bad lesion-measurement tables are refused with the offending row named."""

from __future__ import annotations

import pandas as pd
import pytest
from response_tables import PROTOCOL, table

from evaluation.exceptions import MeasurementTableError
from evaluation.response import assess, validate_measurements

GOOD = [("T0", -7, {"T1": 50.0, "NT1": "PRESENT"}), ("T1", 62, {"T1": 40.0, "NT1": "PRESENT", "X1": 12.0})]


def _edit(column: str, row: int, value: object) -> pd.DataFrame:
    frame = table(GOOD)
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    return frame


@pytest.mark.parametrize(
    ("frame", "message", "shown"),
    [
        (_edit("CATEGORY", 0, "MEASURED"), "unknown CATEGORY", "MEASURED"),
        (_edit("DIAM_MM", 2, -1.0), "negative", "-1.0"),
        (_edit("NODE", 0, "maybe"), "NODE must be Y or N", "MAYBE"),
        (_edit("STATUS", 1, "GONE"), "unknown STATUS", "GONE"),
        (_edit("STATUS", 1, "EQUIVOCAL"), "NEW lesions only", "EQUIVOCAL"),
        (_edit("ADY", 2, 0), "ADY is 0", "'ADY': 0"),
        (_edit("ADY", 2, "soon"), "ADY must be a number", "soon"),
        (_edit("ADY", 2, 63), "different ADY", "63"),
        (_edit("DIAM_MM", 0, 0.0), "baseline target needs a diameter", "'LESIONID': 'T1'"),
        (_edit("CATEGORY", 1, "NEW"), "NEW lesions cannot exist at baseline", "NT1"),
        (_edit("LESIONID", 2, "T9"), "without a baseline TARGET row", "T9"),
        (_edit("LESIONID", 3, "NT9"), "without a baseline NONTARGET row", "NT9"),
        (_edit("LESIONID", 4, "T1"), "duplicated rows", "'LESIONID': 'T1'"),
        (table([("BASE", -7, {"T1": 50.0}), ("T1", 62, {"T1": 40.0})]), "no baseline (T0) rows", "BASE"),
        (_edit("NODE", 2, "Y"), "changes NODE", "T1"),
    ],
)
def test_bad_input_is_refused_with_the_row(frame: pd.DataFrame, message: str, shown: str) -> None:
    with pytest.raises(MeasurementTableError) as caught:
        validate_measurements(frame, PROTOCOL)
    assert message in str(caught.value)
    assert shown in str(caught.value)


def test_baseline_without_targets_is_refused_unless_allowed() -> None:
    frame = table([("T0", -7, {"NT1": "PRESENT"}), ("T1", 62, {"NT1": "PRESENT"})])
    with pytest.raises(MeasurementTableError, match="no TARGET lesion"):
        validate_measurements(frame, PROTOCOL)
    assert len(validate_measurements(frame, PROTOCOL, allow_nontarget_only=True)) == 2


def test_duplicated_rows_and_missing_columns() -> None:
    frame = table(GOOD)
    with pytest.raises(MeasurementTableError, match="duplicated"):
        validate_measurements(pd.concat([frame, frame.iloc[[0]]]), PROTOCOL)
    with pytest.raises(MeasurementTableError, match=r"lacks column\(s\) \['STATUS'\]"):
        validate_measurements(frame.drop(columns="STATUS"), PROTOCOL)


def test_same_lesion_read_by_two_readers_is_not_a_duplicate_but_needs_splitting() -> None:
    both = pd.concat([table(GOOD, reader="R1"), table(GOOD, reader="R2")], ignore_index=True)
    assert len(validate_measurements(both, PROTOCOL)) == len(both)
    with pytest.raises(MeasurementTableError, match="several readers"):
        assess(both, PROTOCOL)


def test_codes_are_case_and_space_tolerant() -> None:
    frame = table(GOOD)
    frame["CATEGORY"] = frame["CATEGORY"].str.lower() + " "
    assert assess(frame, PROTOCOL).visits["RECIST_OVR"].tolist() == ["", "PD"]


def test_soft_protocol_deviation_is_logged_not_refused(caplog: pytest.LogCaptureFixture) -> None:
    frame = table([("T0", -7, {"T1": 8.0}), ("T1", 62, {"T1": 8.0})])
    validate_measurements(frame, PROTOCOL)
    assert "below the measurable size" in caplog.text
