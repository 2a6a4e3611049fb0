"""SDTM DM, TU, TR and RS from a site's CRF extract and its independent readers' lesion measurements.

- DM: one row per subject of the CRF (single-arm study: PD-1/PD-L1 inhibitor + chemotherapy), with the
  SDTMIG 3.4 required and expected variables (reference dates, actual arm, COUNTRY).
- TU: one row per lesion and evaluator, at the visit the lesion was first recorded (TUTESTCD ``TUMIDENT``,
  TUMETHOD ``CT SCAN``).
- TR: one row per lesion, visit and evaluator: ``LDIAM`` (non-nodal long axis) / ``SAXIS`` (nodal short
  axis) in mm for measured lesions, ``TUMSTATE`` for lesions assessed by status only; a lesion the reader
  could not evaluate (``NE``) is ``TRSTAT = NOT DONE`` with ``TRREASND = NOT EVALUABLE``.
- CM: one row per subject whose CRF records a new anticancer therapy (``NEW_THERAPY_DATE`` → CMSTDTC).
- CE: one row per subject whose CRF records an investigator progression date (``PD_DATE`` → CESTDTC); ADTTE
  compares it with the radiological progression of RS (clinical progression, :mod:`evaluation.cdisc.pfs`).
- RS: one row per post-baseline visit, criterion (RECIST 1.1, iRECIST) and evaluator, the overall response
  (``OVRLRESP``) from :func:`evaluation.adjudication.assess_readers` (each reader assessed independently), and
  the final adjudicated assessment of ``fedresponse assess`` (``RSEVALID = FINAL``) when every site has one.

Visit numbers come from the protocol (T0/T1/T2 = its VISITNUMs); follow-up ``FUn`` gets ``T2 + n``.
Dates (``--DTC``) are ISO 8601 and come from the source's own dates: the store's CRF dates are already
shifted per patient (de-identification), and the date of an assessment is RFSTDTC moved by its study day
(:func:`dtc_of_day`), so no export step can bring back a real date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from evaluation.exceptions import CdiscExportError
from evaluation.protocol import StudyProtocol

ARMCD = "CIO"
ARM = "PD-1/PD-L1 inhibitor + chemotherapy"
#: DM COUNTRY (ISO 3166-1 alpha-3): every site of the registered multi-centre study (ChiCTR) is in China
COUNTRY = "CHN"
EVALUATOR = "INDEPENDENT ASSESSOR"
ADJUDICATED = "ADJUDICATION COMMITTEE"  # SDTMIG --EVAL example value (Evaluator codelist C78735)
FINAL = "FINAL"
METHOD = "CT SCAN"  # Method codelist (C85492)
CATEGORY_CT = {"TARGET": "TARGET", "NONTARGET": "NON-TARGET", "NEW": "NEW"}
#: collected lesion status (docs/cohort.md) -> TRSTRESC of TRTESTCD TUMSTATE; NE is a measurement not done
STATUS_CT = {"ABSENT": "ABSENT", "PRESENT": "PRESENT", "INCREASED": "INCREASED",
             "UNEQUIVOCAL_PROGRESSION": "UNEQUIVOCAL PROGRESSION"}
NOT_EVALUABLE = "NE"


@dataclass(frozen=True)
class SiteSource:
    """One site's raw inputs: the CRF extract (one row per subject), the lesion-measurement table and, when
    ``fedresponse assess`` ran, its final (adjudicated) per-visit assessment (``visits.csv``)."""

    site: str
    crf: pd.DataFrame
    reads: pd.DataFrame
    final_visits: pd.DataFrame | None = None


def visitnum(visit: str, protocol: StudyProtocol) -> float:
    """VISITNUM in time order: protocol visits as configured, ``FUn`` after the last one."""
    if visit in protocol.timepoints:
        return float(protocol.timepoints[visit].visitnum)
    if visit.startswith("FU") and visit[2:].isdigit():
        last = max(t.visitnum for t in protocol.timepoints.values())
        return float(last + int(visit[2:]))
    raise CdiscExportError(f"visit {visit!r} is neither a protocol visit {protocol.visits} nor FU<n>")


def _seq(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    frame.insert(3, name, frame.groupby("USUBJID").cumcount().astype(np.float64) + 1)
    return frame


def dtc_of_day(start: str, day: float) -> str:
    """ISO 8601 date of CDISC study day ``day`` (no day 0) relative to ``start`` (RFSTDTC); ``""`` if unknown."""
    if not start or day is None or pd.isna(day):
        return ""
    offset = int(day) - 1 if day > 0 else int(day)
    return (date.fromisoformat(start) + timedelta(days=offset)).isoformat()


def _dates(crf: pd.DataFrame, column: str) -> np.ndarray:
    """A CRF date column as ISO strings (``""`` when absent or missing)."""
    values = crf[column] if column in crf.columns else pd.Series([""] * len(crf), index=crf.index)
    return values.fillna("").astype(str).str.strip().to_numpy()


def _dtc(frame: pd.DataFrame, starts: dict[str, str], day_column: str) -> list[str]:
    return [dtc_of_day(starts.get(s, ""), d) for s, d in zip(frame["USUBJID"], frame[day_column], strict=True)]


def make_dm(crf: pd.DataFrame, study_id: str, country: str = COUNTRY) -> pd.DataFrame:
    """DM from the CRF extract (SDTMIG 3.4 variable order; ``country`` ISO 3166-1 alpha-3).

    RFSTDTC = RFXSTDTC = first dose; RFICDTC = informed consent; RFENDTC = RFPENDTC = last contact (or death);
    RFXENDTC and RACE are not collected by the CRF and stay null. A subject without a first dose is
    ``ARMNRS = NOT TREATED`` with ACTARMCD/ACTARM null.
    """
    needed = ["USUBJID", "SUBJID", "SITEID", "AGE", "SEX", "FIRST_DOSE_DATE"]
    missing = [c for c in needed if c not in crf.columns]
    if missing:
        raise CdiscExportError(f"crf lacks {missing}; DM needs {needed} (docs/cohort.md)")
    first, death = _dates(crf, "FIRST_DOSE_DATE"), _dates(crf, "DEATH_DATE")
    last = np.where(death != "", death, _dates(crf, "LAST_CONTACT_DATE"))
    treated = first != ""
    return pd.DataFrame({
        "STUDYID": study_id, "DOMAIN": "DM", "USUBJID": crf["USUBJID"].astype(str).to_numpy(),
        "SUBJID": crf["SUBJID"].astype(str).str.zfill(4).to_numpy(), "RFSTDTC": first, "RFENDTC": last,
        "RFXSTDTC": first, "RFXENDTC": "", "RFICDTC": _dates(crf, "CONSENT_DATE"), "RFPENDTC": last,
        "DTHDTC": death, "DTHFL": np.where(death != "", "Y", ""), "SITEID": crf["SITEID"].astype(str).to_numpy(),
        "AGE": pd.to_numeric(crf["AGE"], errors="coerce").astype(np.float64).to_numpy(), "AGEU": "YEARS",
        "SEX": crf["SEX"].astype(str).to_numpy(), "RACE": "", "ARMCD": ARMCD, "ARM": ARM,
        "ACTARMCD": np.where(treated, ARMCD, ""), "ACTARM": np.where(treated, ARM, ""),
        "ARMNRS": np.where(treated, "", "NOT TREATED"), "ACTARMUD": "", "COUNTRY": country,
    })


def _dated_events(crf: pd.DataFrame, column: str, study_id: str, domain: str,
                  fields: dict[str, str]) -> pd.DataFrame:
    from evaluation.cdisc.adam import study_day

    prefix = domain.upper()
    dates = crf.get(column, pd.Series([""] * len(crf), index=crf.index)).fillna("").astype(str).str.strip()
    chosen = crf[dates != ""]
    when = dates[dates != ""]
    start = chosen["FIRST_DOSE_DATE"].fillna("").astype(str)
    frame = pd.DataFrame({"STUDYID": study_id, "DOMAIN": prefix, "USUBJID": chosen["USUBJID"].astype(str)})
    for name, value in fields.items():
        frame[f"{prefix}{name}"] = value
    frame[f"{prefix}STDTC"] = when.to_numpy()
    frame[f"{prefix}STDY"] = [study_day(d, s) for d, s in zip(when, start, strict=True)]
    frame[f"{prefix}STDY"] = frame[f"{prefix}STDY"].astype(np.float64)
    return _seq(frame.sort_values("USUBJID", kind="stable"), f"{prefix}SEQ")


def make_cm(crf: pd.DataFrame, study_id: str) -> pd.DataFrame:
    """CM: the start of a new (subsequent) anticancer therapy recorded in the CRF (``NEW_THERAPY_DATE``)."""
    return _dated_events(crf, "NEW_THERAPY_DATE", study_id, "cm",
                         {"TRT": "NEW ANTICANCER THERAPY", "DECOD": "",  # CMDECOD (Exp): no drug name to code
                          "CAT": "SUBSEQUENT ANTICANCER THERAPY"})


def make_ce(crf: pd.DataFrame, study_id: str) -> pd.DataFrame:
    """CE: the investigator-recorded progression date of the CRF (``PD_DATE``), clinical or radiological."""
    return _dated_events(crf, "PD_DATE", study_id, "ce",
                         {"TERM": "PROGRESSIVE DISEASE", "DECOD": "DISEASE PROGRESSION",
                          "CAT": "INVESTIGATOR-REPORTED PROGRESSION"})


def make_tu(reads: pd.DataFrame, study_id: str, protocol: StudyProtocol, starts: dict[str, str]) -> pd.DataFrame:
    """TU: each lesion once per evaluator, at its first recorded visit (``starts``: USUBJID → RFSTDTC)."""
    ordered = reads.assign(_VN=reads["VISIT"].map(lambda v: visitnum(str(v), protocol))).sort_values(
        ["USUBJID", "READER", "_VN"])
    first = ordered.drop_duplicates(["USUBJID", "READER", "LESIONID"]).sort_values(["USUBJID", "READER", "LESIONID"])
    tu = pd.DataFrame({
        "STUDYID": study_id, "DOMAIN": "TU", "USUBJID": first["USUBJID"].astype(str),
        "TULNKID": first["LESIONID"].astype(str), "TUTESTCD": "TUMIDENT", "TUTEST": "Tumor Identification",
        "TUORRES": first["CATEGORY"].map(CATEGORY_CT).astype(str), "TULOC": first["ORGAN"].astype(str),
        "TUMETHOD": METHOD, "TUEVAL": EVALUATOR, "TUEVALID": first["READER"].astype(str),
        "VISITNUM": first["_VN"].astype(np.float64), "VISIT": first["VISIT"].astype(str),
        "TUDTC": _dtc(first, starts, "ADY"), "TUDY": first["ADY"].astype(np.float64),
    })
    tu.insert(tu.columns.get_loc("TUORRES") + 1, "TUSTRESC", tu["TUORRES"])
    return _seq(tu, "TUSEQ")


def make_tr(reads: pd.DataFrame, study_id: str, protocol: StudyProtocol, starts: dict[str, str]) -> pd.DataFrame:
    """TR: diameters (mm) and status per lesion, visit and evaluator (``starts``: USUBJID → RFSTDTC)."""
    r = reads.assign(_VN=reads["VISIT"].map(lambda v: visitnum(str(v), protocol)))
    r = r.sort_values(["USUBJID", "READER", "_VN", "LESIONID"])
    diam = pd.to_numeric(r["DIAM_MM"], errors="coerce")
    measured = diam.notna()
    node = r["NODE"].astype(str) == "Y"
    code = np.where(measured, np.where(node, "SAXIS", "LDIAM"), "TUMSTATE")
    test = {"SAXIS": "Short Axis", "LDIAM": "Longest Diameter", "TUMSTATE": "Tumor State"}
    status = r["STATUS"].fillna("").astype(str)
    not_done = ~measured & (status == NOT_EVALUABLE)
    unknown = sorted(set(status[~measured & ~not_done]) - set(STATUS_CT))
    if unknown:
        raise CdiscExportError(f"lesion STATUS {unknown} is not one of {[*STATUS_CT, NOT_EVALUABLE]}; fix the reads")
    orres = np.where(measured, diam.map(lambda v: f"{v:g}" if pd.notna(v) else ""), np.where(not_done, "", status))
    stresc = np.where(measured, orres, status.map(STATUS_CT).fillna(""))
    return _seq(pd.DataFrame({
        "STUDYID": study_id, "DOMAIN": "TR", "USUBJID": r["USUBJID"].astype(str), "TRLNKID": r["LESIONID"].astype(str),
        "TRTESTCD": code, "TRTEST": [test[c] for c in code], "TRORRES": orres,
        "TRORRESU": np.where(measured, "mm", ""), "TRSTRESC": stresc, "TRSTRESN": diam.astype(np.float64),
        "TRSTRESU": np.where(measured, "mm", ""), "TRSTAT": np.where(not_done, "NOT DONE", ""),
        "TRREASND": np.where(not_done, "NOT EVALUABLE", ""), "TRMETHOD": METHOD, "TREVAL": EVALUATOR,
        "TREVALID": r["READER"].astype(str), "VISITNUM": r["_VN"].astype(np.float64), "VISIT": r["VISIT"].astype(str),
        "TRDTC": _dtc(r, starts, "ADY"), "TRDY": r["ADY"].astype(np.float64),
    }), "TRSEQ")


def make_rs(reads: pd.DataFrame, study_id: str, protocol: StudyProtocol, starts: dict[str, str],
            final_visits: pd.DataFrame | None = None) -> pd.DataFrame:
    """RS: per post-baseline visit, RECIST 1.1 and iRECIST overall response of each evaluator, plus the final
    (adjudicated) assessment as evaluator ``FINAL`` when one is given."""
    from evaluation.adjudication import assess_readers

    rows = []
    per_evaluator = {reader: a.visits for reader, a in assess_readers(reads, protocol).items()}
    if final_visits is not None and len(final_visits):
        per_evaluator[FINAL] = final_visits
    for reader, all_visits in per_evaluator.items():
        evaluator = ADJUDICATED if reader == FINAL else EVALUATOR
        visits = all_visits[all_visits["RECIST_OVR"].fillna("").astype(str) != ""]
        for criterion, column in (("RECIST 1.1", "RECIST_OVR"), ("iRECIST", "IRECIST_OVR")):
            rows.append(pd.DataFrame({
                "STUDYID": study_id, "DOMAIN": "RS", "USUBJID": visits["USUBJID"].astype(str),
                "RSTESTCD": "OVRLRESP", "RSTEST": "Overall Response", "RSCAT": criterion,
                "RSORRES": visits[column].astype(str), "RSSTRESC": visits[column].astype(str), "RSEVAL": evaluator,
                "RSEVALID": reader, "VISITNUM": visits["VISIT"].map(lambda v: visitnum(str(v), protocol)),
                "VISIT": visits["VISIT"].astype(str), "RSDTC": _dtc(visits, starts, "ADY"),
                "RSDY": visits["ADY"].astype(np.float64),
            }))
    rs = pd.concat(rows, ignore_index=True).sort_values(["USUBJID", "RSEVALID", "RSCAT", "VISITNUM"], kind="stable")
    return _seq(rs, "RSSEQ")


def make_sdtm(sources: list[SiteSource], protocol: StudyProtocol) -> dict[str, pd.DataFrame]:
    """DM, TU, TR, RS, CM and CE over every site (USUBJID identical across datasets; CM/CE may be empty)."""
    crf = pd.concat([s.crf for s in sources], ignore_index=True)
    reads = pd.concat([s.reads for s in sources], ignore_index=True)
    finals = [s.final_visits for s in sources if s.final_visits is not None]
    final = pd.concat(finals, ignore_index=True) if len(finals) == len(sources) else None
    if "READER" not in reads.columns:
        reads = reads.assign(READER="R1")
    unknown = sorted(set(reads["USUBJID"]) - set(crf["USUBJID"]))
    if unknown:
        raise CdiscExportError(f"reads name subjects missing from the CRF: {unknown[:5]}; fix the source")
    dm = make_dm(crf, protocol.study_id)
    starts = dict(zip(dm["USUBJID"], dm["RFSTDTC"], strict=True))
    return {
        "dm": dm,
        "tu": make_tu(reads, protocol.study_id, protocol, starts),
        "tr": make_tr(reads, protocol.study_id, protocol, starts),
        "rs": make_rs(reads, protocol.study_id, protocol, starts, final),
        "cm": make_cm(crf, protocol.study_id),
        "ce": make_ce(crf, protocol.study_id),
    }
