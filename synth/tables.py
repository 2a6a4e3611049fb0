"""The site's tabular exports: the CRF extract (with seeded errors), the BICR reads, the enrolment log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np

from synth.identity import PatientIdentity
from synth.population import Lesion, Patient, ady_to_offset

READERS = ("R1", "R2")
READER_BIAS = {"R1": 0.0, "R2": 0.015}  # relative systematic difference between readers
READER_CV = 0.035
READER_SD_MM = 0.6


def _iso(day: dt.date | None) -> str:
    return day.isoformat() if day else ""


def crf_row(patient: Patient, first_dose: dt.date, consent: dt.date) -> dict[str, object]:
    """The clean CRF row of a patient (before any seeded error)."""
    cov = patient.covariates

    def date_of(ady: int | None) -> dt.date | None:
        return None if ady is None else first_dose + dt.timedelta(days=ady_to_offset(ady))

    death = date_of(patient.os_days) if patient.os_event else None
    pd_date = date_of(patient.pfs_days) if patient.pfs_event and patient.pd_visit else None
    new_therapy = date_of(patient.pfs_days + 21) if pd_date else None
    if new_therapy and death and death <= new_therapy:
        new_therapy = None
    row: dict[str, object] = {"USUBJID": patient.usubjid, "SUBJID": patient.subjid, "SITEID": patient.site}
    row.update(cov)
    regimen = ("PEMBROLIZUMAB+CARBOPLATIN+PEMETREXED" if cov["HISTOLOGY"] != "SQUAMOUS"
               else "PEMBROLIZUMAB+CARBOPLATIN+PACLITAXEL")
    row.update({
        "REGIMEN": regimen, "PRIOR_RT_TARGET": "N", "OTHER_MALIGNANCY": "N", "ORGAN_FUNCTION": "ADEQUATE",
        "CONSENT_DATE": _iso(consent), "FIRST_DOSE_DATE": _iso(first_dose),
        "T0_DATE": _iso(date_of(patient.days[0])), "T1_DATE": _iso(date_of(patient.days[1])),
        "T2_DATE": _iso(date_of(patient.days[2])), "PD_DATE": _iso(pd_date), "NEW_THERAPY_DATE": _iso(new_therapy),
        "DEATH_DATE": _iso(death), "LAST_CONTACT_DATE": _iso(death or date_of(patient.os_days)),
    })
    return row


CRF_COLUMNS = ["USUBJID", "SUBJID", "SITEID", "AGE", "SEX", "HEIGHT_CM", "WEIGHT_KG", "SMOKING", "PACKYEARS", "ECOG",
               "STAGE", "HISTOLOGY", "EGFR", "ALK", "PDL1_TPS", "REGIMEN", "LINE", "PRIOR_RT", "PRIOR_RT_TARGET",
               "OTHER_MALIGNANCY", "ORGAN_FUNCTION", "CONSENT_DATE", "FIRST_DOSE_DATE", "T0_DATE", "T1_DATE",
               "T2_DATE", "PD_DATE", "NEW_THERAPY_DATE", "DEATH_DATE", "LAST_CONTACT_DATE"]


def _shift(value: object, days: int) -> str:
    return (dt.date.fromisoformat(str(value)) + dt.timedelta(days=days)).isoformat()


# Each seeded error: (error type, field, how to corrupt the row, description). The edit checks of the
# data validation plan must raise a query on that subject and field.
SeededError = tuple[str, str, Callable[[dict[str, object]], object], str]
SEEDED_ERRORS: list[SeededError] = [
    ("RANGE_HARD", "WEIGHT_KG", lambda r: 140.1, "weight above the hard range 40-140 kg"),
    ("RANGE_HARD", "WEIGHT_KG", lambda r: 39.9, "weight below the hard range 40-140 kg"),
    ("RANGE_SOFT", "HEIGHT_CM", lambda r: 212.0, "height above the soft range 140-210 cm"),
    ("RANGE_HARD", "PDL1_TPS", lambda r: 105, "PD-L1 TPS above 100 %"),
    ("VALID_CODE", "SEX", lambda r: "U", "sex code outside M/F"),
    ("VALID_CODE", "HISTOLOGY", lambda r: "SMALL_CELL", "histology not NSCLC (code list)"),
    ("COMPLETENESS", "ECOG", lambda r: "", "ECOG performance status missing"),
    ("COMPLETENESS", "FIRST_DOSE_DATE", lambda r: "", "first dose date missing"),
    ("VALID_DATE", "T1_DATE", lambda r: str(r["T1_DATE"])[:8] + "31" if str(r["T1_DATE"])[5:7] in ("02", "04",
     "06", "09", "11") else str(r["T1_DATE"])[:5] + "02-30", "impossible calendar date"),
    ("CROSS_FIELD", "PACKYEARS", lambda r: 30, "never smoker with pack-years > 0"),
    ("DATE_LOGIC", "CONSENT_DATE", lambda r: _shift(r["FIRST_DOSE_DATE"], 3), "consent after first dose"),
    ("DATE_LOGIC", "DEATH_DATE", lambda r: _shift(r["FIRST_DOSE_DATE"], -5), "death before first dose"),
    ("VISIT_WINDOW", "T2_DATE", lambda r: _shift(r["FIRST_DOSE_DATE"], 140), "T2 outside its protocol window"),
    ("ELIGIBILITY", "AGE", lambda r: 17, "age below 18 (inclusion)"),
    ("ELIGIBILITY", "STAGE", lambda r: "IIB", "stage II is not eligible (inclusion: stage III-IV)"),
    ("ELIGIBILITY", "OTHER_MALIGNANCY", lambda r: "Y", "other malignancy (exclusion)"),
    ("ELIGIBILITY", "PRIOR_RT_TARGET", lambda r: "Y", "prior radiotherapy of the target lesion (exclusion)"),
]


def _touches(error: SeededError) -> set[str]:
    kind, column, _, _ = error
    needs = {"FIRST_DOSE_DATE"} if kind in ("DATE_LOGIC", "VISIT_WINDOW") else set()
    return {column, *needs, *({"SMOKING"} if kind == "CROSS_FIELD" else set())}


def seed_crf_errors(rows: list[dict[str, object]], rng: np.random.Generator) -> list[dict[str, object]]:
    """Corrupt a documented set of CRF cells in place; return one truth row per seeded error.

    Every error type of :data:`SEEDED_ERRORS` is seeded at least once, plus one more per 15 subjects
    beyond 17 × 15. Errors go to about a quarter of the subjects (at most two per subject, never two that
    touch the same field or a field the other one derives from), as real CRF errors cluster.
    """
    n_errors = max(len(SEEDED_ERRORS), len(rows) // 15)
    n_subjects = min(len(rows), max(len(rows) // 4, (n_errors + 1) // 2))
    order = [int(i) for i in rng.permutation(len(rows))[:n_subjects]]
    corrupted: dict[int, set[str]] = {i: set() for i in order}
    counts = dict.fromkeys(order, 0)
    truth = []
    for k in range(n_errors):
        error = SEEDED_ERRORS[k % len(SEEDED_ERRORS)]
        kind, column, corrupt, description = error
        candidates = [i for i in order[k % n_subjects:] + order[: k % n_subjects]
                      if counts[i] < 2 and not (_touches(error) & corrupted[i])]
        if not candidates:
            continue
        index = candidates[0]
        row = rows[index]
        if kind == "CROSS_FIELD":
            row["SMOKING"], row["PACKYEARS"] = "NEVER", 0
        value = corrupt(row)
        row[column] = value
        corrupted[index] |= _touches(error)
        counts[index] += 1
        truth.append({"USUBJID": row["USUBJID"], "FIELD": column, "VALUE": value, "ERROR_TYPE": kind,
                      "DESCRIPTION": description})
    return truth


def enrolment_row(patient: Patient, identity: PatientIdentity) -> dict[str, object]:
    """The site's subject identification log line (PHI; stays at the site)."""
    return {"PatientID": identity.mrn, "PatientName": identity.name_alphabetic,
            "PatientBirthDate": identity.birth_date.isoformat(), "SUBJID": patient.subjid, "USUBJID": patient.usubjid}


def _true_measure(lesion: Lesion, index: int, truth: dict[tuple[str, str], tuple[float, float]],
                  visit: str, plan_ratio: float) -> float:
    measured = truth.get((visit, lesion.lesion_id))
    if measured is not None:
        return measured[1] if lesion.node else measured[0]
    return lesion.sizes[index] * plan_ratio


def _status(lesion: Lesion, size: float, baseline: float) -> str:
    if lesion.kind != "small_node":
        return "PRESENT" if size > 0 else "ABSENT"
    if size < 10.0:
        return "ABSENT"
    if size >= 1.45 * baseline:
        return "UNEQUIVOCAL_PROGRESSION"
    return "INCREASED" if size >= 1.25 * baseline else "PRESENT"


def reads_rows(
    patient: Patient, truth: dict[tuple[str, str], tuple[float, float]], rng: np.random.Generator
) -> list[dict[str, object]]:
    """Two independent readers' lesion measurements for every visit (imaged and follow-up)."""
    rows: list[dict[str, object]] = []
    for lesion in patient.lesions:
        first_visit = patient.visits[lesion.first_visit]
        first = truth.get((first_visit, lesion.lesion_id))
        plan0 = lesion.sizes[lesion.first_visit]
        ratio = ((first[1] if lesion.node else first[0]) / plan0) if first and plan0 > 0 else 1.0
        baseline = _true_measure(lesion, lesion.first_visit, truth, first_visit, ratio)
        for index in range(lesion.first_visit, len(patient.visits)):
            visit = patient.visits[index]
            true = _true_measure(lesion, index, truth, visit, ratio)
            for reader in READERS:
                row = _read_one(patient, lesion, index, visit, true, baseline, reader, rng)
                if row is not None:
                    rows.append(row)
    return rows


def _read_one(
    patient: Patient, lesion: Lesion, index: int, visit: str, true: float, baseline: float, reader: str,
    rng: np.random.Generator,
) -> dict[str, object] | None:
    category = lesion.category
    if category == "NEW" and true <= 0:
        return None  # a resolved new lesion is simply not reported again
    if category == "NEW" and reader == "R2" and true < 11.0 and rng.random() < 0.25:
        return None  # reader 2 misses a small new lesion: a planted disagreement
    noisy = true * (1 + READER_BIAS[reader] + rng.normal(0, READER_CV)) + rng.normal(0, READER_SD_MM)
    diam: object = round(max(noisy, 0.0), 1) if true > 0 else 0.0
    status = _status(lesion, true, baseline)
    if category == "NONTARGET":
        diam = ""
    elif index >= 3 and rng.random() < 0.01:
        diam, status = "", "NE"  # not evaluable on this follow-up scan
    return {"USUBJID": patient.usubjid, "VISIT": visit, "ADY": patient.days[index], "LESIONID": lesion.lesion_id,
            "ORGAN": lesion.organ, "CATEGORY": category, "NODE": "Y" if lesion.node else "N", "DIAM_MM": diam,
            "STATUS": status, "READER": reader}
