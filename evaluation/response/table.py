"""The lesion-measurement table: its columns, codes, and the checks it must pass before assessment.

Contract (ARCHITECTURE, "Lesion measurement table"), one row per lesion, visit and reader:
``USUBJID, VISIT, ADY, LESIONID, ORGAN, CATEGORY (TARGET|NONTARGET|NEW), NODE (Y|N), DIAM_MM, STATUS``
and an optional ``READER``. ``DIAM_MM`` is the long axis (non-nodal) or the short axis (nodal) in mm;
``STATUS`` (``ABSENT|PRESENT|INCREASED|UNEQUIVOCAL_PROGRESSION|NE``) describes lesions that are not
measured. One extension is accepted for new lesions only: ``STATUS = EQUIVOCAL`` (RECIST 1.1 §4.3.2,
"if a new lesion is equivocal ... continued follow-up will clarify"), see ``docs/response.md``.

The checks refuse the table with the offending rows named (:class:`MeasurementTableError`); soft protocol
deviations (more than five targets, a target below the measurable size) are only logged.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from evaluation.exceptions import MeasurementTableError
from evaluation.protocol import StudyProtocol

log = logging.getLogger(__name__)

REQUIRED_COLUMNS: tuple[str, ...] = (
    "USUBJID", "VISIT", "ADY", "LESIONID", "ORGAN", "CATEGORY", "NODE", "DIAM_MM", "STATUS",
)
CATEGORIES = frozenset({"TARGET", "NONTARGET", "NEW"})
STATUSES = frozenset({"", "ABSENT", "PRESENT", "INCREASED", "UNEQUIVOCAL_PROGRESSION", "NE", "EQUIVOCAL"})
_KEY = ["USUBJID", "VISIT", "LESIONID"]


def _rows(frame: pd.DataFrame) -> list[dict[str, object]]:
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in frame.to_dict("records")]


def _refuse(message: str, frame: pd.DataFrame) -> None:
    if len(frame):
        raise MeasurementTableError(message, _rows(frame))


def normalise_measurements(raw: pd.DataFrame) -> pd.DataFrame:
    """Return a typed copy of the table: upper-case codes, empty-string STATUS, float DIAM_MM, int ADY.

    Raises
    ------
    MeasurementTableError
        A required column is missing, or ADY / DIAM_MM hold something that is not a number.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise MeasurementTableError(
            f"the lesion-measurement table lacks column(s) {missing}; columns seen: {list(raw.columns)}; "
            f"expected {list(REQUIRED_COLUMNS)} (+ optional READER)"
        )
    table = raw.copy()
    for column in ("USUBJID", "VISIT", "LESIONID", "ORGAN", "CATEGORY", "NODE", "STATUS"):
        table[column] = table[column].fillna("").astype(str).str.strip()
    for column in ("CATEGORY", "NODE", "STATUS"):
        table[column] = table[column].str.upper()
    if "READER" in table.columns:
        table["READER"] = table["READER"].fillna("").astype(str).str.strip()
    for column in ("ADY", "DIAM_MM"):
        numeric = pd.to_numeric(table[column], errors="coerce")
        bad = numeric.isna() & table[column].notna() & (table[column].astype(str).str.strip() != "")
        _refuse(f"{column} must be a number; fix or blank these value(s)", table[bad])
        table[column] = numeric.astype(float)
    _refuse("ADY (study day of the scan) is missing; every row needs the scan's study day", table[table["ADY"].isna()])
    _refuse("ADY is 0, a day that does not exist in CDISC study days (day 1 = first dose, the day before is -1)",
            table[table["ADY"] == 0])
    _refuse("ADY must be a whole study day", table[table["ADY"] != np.floor(table["ADY"])])
    table["ADY"] = table["ADY"].astype(int)
    return table


def _check_codes(table: pd.DataFrame) -> None:
    _refuse(f"unknown CATEGORY; allowed: {sorted(CATEGORIES)}", table[~table["CATEGORY"].isin(CATEGORIES)])
    _refuse("NODE must be Y or N", table[~table["NODE"].isin({"Y", "N"})])
    allowed = sorted(s for s in STATUSES if s)
    _refuse(f"unknown STATUS; allowed: {allowed} or empty", table[~table["STATUS"].isin(STATUSES)])
    equivocal_elsewhere = (table["STATUS"] == "EQUIVOCAL") & (table["CATEGORY"] != "NEW")
    _refuse("EQUIVOCAL is a status of NEW lesions only", table[equivocal_elsewhere])
    for column in ("USUBJID", "VISIT", "LESIONID"):
        _refuse(f"{column} is empty", table[table[column] == ""])
    _refuse("DIAM_MM is negative; a diameter is a length ≥ 0 mm (0 = lesion disappeared)", table[table["DIAM_MM"] < 0])
    key = [*(["READER"] if "READER" in table.columns else []), *_KEY]
    _refuse(f"duplicated rows: the same {'/'.join(key)} appears more than once; keep one row per lesion and visit",
            table[table.duplicated(key, keep=False)])
    days = table.groupby(["USUBJID", "VISIT"])["ADY"].transform("nunique")
    _refuse("one visit has rows with different ADY; a visit is one scan on one study day", table[days > 1])


def _check_baselines(table: pd.DataFrame, keys: list[str], baseline_visit: str, allow_nontarget_only: bool) -> None:
    """Per subject (and reader): a baseline exists, comes first, and holds what the criteria need."""
    is_base = table["VISIT"] == baseline_visit
    base = table[is_base]
    with_base = set(map(tuple, base[keys].drop_duplicates().to_numpy().tolist()))
    subjects = table[keys].drop_duplicates()
    lacking = subjects[[tuple(k) not in with_base for k in subjects.to_numpy().tolist()]]
    if len(lacking):
        first = lacking.iloc[0].to_dict()
        seen = sorted(table.merge(lacking.iloc[[0]], on=keys)["VISIT"].unique())
        raise MeasurementTableError(
            f"subject {first['USUBJID']} has no baseline ({baseline_visit}) rows; visits seen: {seen}",
            lacking.to_dict("records"),
        )
    base_day = base.groupby(keys)["ADY"].first().rename("_BASE_ADY").reset_index()
    dated = table.merge(base_day, on=keys, how="left")
    _refuse("a visit lies on or before baseline; baseline must be the subject's first scan",
            dated[~is_base.to_numpy() & (dated["ADY"] <= dated["_BASE_ADY"]).to_numpy()])
    _refuse("NEW lesions cannot exist at baseline", base[base["CATEGORY"] == "NEW"])
    targets = base[base["CATEGORY"] == "TARGET"]
    _refuse("a baseline target needs a diameter > 0 mm", targets[~(targets["DIAM_MM"] > 0)])
    with_targets = set(map(tuple, targets[keys].drop_duplicates().to_numpy().tolist()))
    no_targets = base[[tuple(k) not in with_targets for k in base[keys].to_numpy().tolist()]]
    if len(no_targets) and not allow_nontarget_only:
        raise MeasurementTableError(
            f"subject {no_targets['USUBJID'].iloc[0]}: baseline ({baseline_visit}) has no TARGET lesion; the "
            "protocol requires at least one measurable target (pass allow_nontarget_only=True / "
            "--allow-nontarget-only to assess non-target-only disease by RECIST 1.1 Table 2)",
            _rows(no_targets),
        )


def _check_lesion_ids(table: pd.DataFrame, keys: list[str], baseline_visit: str) -> None:
    """Follow-up TARGET/NONTARGET rows need their baseline row; NEW ids are new; NODE never changes."""
    is_base = table["VISIT"] == baseline_visit
    base = table.loc[is_base, [*keys, "LESIONID", "CATEGORY"]].rename(columns={"CATEGORY": "_BASE_CATEGORY"})
    later = table[~is_base].merge(base, on=[*keys, "LESIONID"], how="left")
    for category in ("TARGET", "NONTARGET"):
        rows = later[(later["CATEGORY"] == category) & (later["_BASE_CATEGORY"] != category)]
        _refuse(f"{category} lesion(s) without a baseline {category} row (a lesion first seen after baseline is NEW)",
                rows)
    reused = (later["CATEGORY"] == "NEW") & later["_BASE_CATEGORY"].notna()
    _refuse("NEW lesion ids reuse a baseline lesion id", later[reused])
    flags = table.groupby([*keys, "LESIONID"])["NODE"].transform("nunique")
    _refuse("a lesion changes NODE between visits", table[flags > 1])


def _warn_deviations(table: pd.DataFrame, keys: list[str], baseline_visit: str, protocol: StudyProtocol) -> None:
    rules = protocol.recist
    targets = table[(table["VISIT"] == baseline_visit) & (table["CATEGORY"] == "TARGET")]
    for key, count in targets.groupby(keys).size().items():
        if count > rules.max_targets:
            log.warning("%s: %d baseline targets (RECIST 1.1 allows %d)", key, count, rules.max_targets)
    for key, count in targets.groupby([*keys, "ORGAN"]).size().items():
        if count > rules.max_targets_per_organ:
            log.warning("%s: %d targets in one organ (RECIST 1.1 allows %d)", key, count, rules.max_targets_per_organ)
    minimum = np.where(targets["NODE"] == "Y", rules.node_measurable_min_mm, rules.measurable_min_mm)
    for row in targets[targets["DIAM_MM"].to_numpy() < minimum].itertuples():
        log.warning("subject %s: baseline target %s measures %.1f mm, below the measurable size", row.USUBJID,
                    row.LESIONID, row.DIAM_MM)


def validate_measurements(
    raw: pd.DataFrame, protocol: StudyProtocol, *, allow_nontarget_only: bool = False
) -> pd.DataFrame:
    """Check a lesion-measurement table and return its normalised copy.

    Parameters
    ----------
    raw : DataFrame
        The table as read (one row per lesion, visit and reader).
    protocol : StudyProtocol
        Fixes the baseline visit name (the first protocol visit, ``T0``) and the RECIST size rules.
    allow_nontarget_only : bool
        Accept subjects whose baseline has non-target lesions only (RECIST 1.1 Table 2). The study's
        eligibility requires a measurable target, so the default refuses them.

    Returns
    -------
    DataFrame
        Normalised table (see :func:`normalise_measurements`).

    Raises
    ------
    MeasurementTableError
        Unknown codes, negative diameters, duplicated rows, a subject without baseline or without
        baseline targets, a TARGET/NONTARGET row without its baseline row, and the like; the message
        names the offending rows.
    """
    table = normalise_measurements(raw)
    _check_codes(table)
    baseline_visit = protocol.visits[0]
    keys = ["READER", "USUBJID"] if "READER" in table.columns else ["USUBJID"]
    _check_baselines(table, keys, baseline_visit, allow_nontarget_only)
    _check_lesion_ids(table, keys, baseline_visit)
    _warn_deviations(table, keys, baseline_visit, protocol)
    return table
