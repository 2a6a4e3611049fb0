"""SDTM DM, TU, TR and RS from a site's CRF extract and its independent readers' lesion measurements.

- DM: one row per subject of the CRF (single-arm study: PD-1/PD-L1 inhibitor + chemotherapy).
- TU: one row per lesion and evaluator, at the visit the lesion was first recorded (TUTESTCD ``TUMIDENT``).
- TR: one row per lesion, visit and evaluator: ``LDIAM`` (non-nodal long axis) / ``SAXIS`` (nodal short
  axis) in mm for measured lesions, ``TUMSTATE`` for lesions assessed by status only.
- CM: one row per subject whose CRF records a new anticancer therapy (``NEW_THERAPY_DATE`` → CMSTDTC).
- CE: one row per subject whose CRF records an investigator progression date (``PD_DATE`` → CESTDTC); ADTTE
  compares it with the radiological progression of RS (clinical progression, :mod:`evaluation.cdisc.pfs`).
- RS: one row per post-baseline visit, criterion (RECIST 1.1, iRECIST) and evaluator, the overall response
  (``OVRLRESP``) from :func:`evaluation.adjudication.assess_readers` (each reader assessed independently), and
  the final adjudicated assessment of ``fedresponse assess`` (``RSEVALID = FINAL``) when every site has one.

Visit numbers come from the protocol (T0/T1/T2 = its VISITNUMs); follow-up ``FUn`` gets ``T2 + n``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from evaluation.exceptions import CdiscExportError
from evaluation.protocol import StudyProtocol

ARMCD = "CIO"
ARM = "PD-1/PD-L1 inhibitor + chemotherapy"
EVALUATOR = "INDEPENDENT ASSESSOR"
ADJUDICATED = "ADJUDICATOR"
FINAL = "FINAL"
CATEGORY_CT = {"TARGET": "TARGET", "NONTARGET": "NON-TARGET", "NEW": "NEW"}


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


def make_dm(crf: pd.DataFrame, study_id: str) -> pd.DataFrame:
    """DM from the CRF extract."""
    needed = ["USUBJID", "SUBJID", "SITEID", "AGE", "SEX", "FIRST_DOSE_DATE"]
    missing = [c for c in needed if c not in crf.columns]
    if missing:
        raise CdiscExportError(f"crf lacks {missing}; DM needs {needed} (docs/cohort.md)")
    death = crf.get("DEATH_DATE", pd.Series([""] * len(crf))).fillna("").astype(str)
    return pd.DataFrame({
        "STUDYID": study_id, "DOMAIN": "DM", "USUBJID": crf["USUBJID"].astype(str),
        "SUBJID": crf["SUBJID"].astype(str).str.zfill(4), "RFSTDTC": crf["FIRST_DOSE_DATE"].fillna("").astype(str),
        "SITEID": crf["SITEID"].astype(str), "AGE": pd.to_numeric(crf["AGE"], errors="coerce").astype(np.float64),
        "AGEU": "YEARS", "SEX": crf["SEX"].astype(str), "ARMCD": ARMCD, "ARM": ARM,
        "DTHDTC": death.to_numpy(), "DTHFL": np.where(death.to_numpy() != "", "Y", ""),
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
                         {"TRT": "NEW ANTICANCER THERAPY", "CAT": "SUBSEQUENT ANTICANCER THERAPY"})


def make_ce(crf: pd.DataFrame, study_id: str) -> pd.DataFrame:
    """CE: the investigator-recorded progression date of the CRF (``PD_DATE``), clinical or radiological."""
    return _dated_events(crf, "PD_DATE", study_id, "ce",
                         {"TERM": "PROGRESSIVE DISEASE", "DECOD": "DISEASE PROGRESSION",
                          "CAT": "INVESTIGATOR-REPORTED PROGRESSION"})


def make_tu(reads: pd.DataFrame, study_id: str, protocol: StudyProtocol) -> pd.DataFrame:
    """TU: each lesion once per evaluator, at its first recorded visit."""
    ordered = reads.assign(_VN=reads["VISIT"].map(lambda v: visitnum(str(v), protocol))).sort_values(
        ["USUBJID", "READER", "_VN"])
    first = ordered.drop_duplicates(["USUBJID", "READER", "LESIONID"]).sort_values(["USUBJID", "READER", "LESIONID"])
    tu = pd.DataFrame({
        "STUDYID": study_id, "DOMAIN": "TU", "USUBJID": first["USUBJID"].astype(str),
        "TULNKID": first["LESIONID"].astype(str), "TUTESTCD": "TUMIDENT", "TUTEST": "Tumor Identification",
        "TUORRES": first["CATEGORY"].map(CATEGORY_CT).astype(str), "TULOC": first["ORGAN"].astype(str),
        "TUEVAL": EVALUATOR, "TUEVALID": first["READER"].astype(str), "VISITNUM": first["_VN"].astype(np.float64),
        "VISIT": first["VISIT"].astype(str), "TUDY": first["ADY"].astype(np.float64),
    })
    tu.insert(tu.columns.get_loc("TUORRES") + 1, "TUSTRESC", tu["TUORRES"])
    return _seq(tu, "TUSEQ")


def make_tr(reads: pd.DataFrame, study_id: str, protocol: StudyProtocol) -> pd.DataFrame:
    """TR: diameters (mm) and status per lesion, visit and evaluator."""
    r = reads.assign(_VN=reads["VISIT"].map(lambda v: visitnum(str(v), protocol)))
    r = r.sort_values(["USUBJID", "READER", "_VN", "LESIONID"])
    diam = pd.to_numeric(r["DIAM_MM"], errors="coerce")
    measured = diam.notna()
    node = r["NODE"].astype(str) == "Y"
    code = np.where(measured, np.where(node, "SAXIS", "LDIAM"), "TUMSTATE")
    test = {"SAXIS": "Short Axis", "LDIAM": "Longest Diameter", "TUMSTATE": "Tumor State"}
    status = r["STATUS"].fillna("").astype(str)
    orres = np.where(measured, diam.map(lambda v: f"{v:g}" if pd.notna(v) else ""), status)
    return _seq(pd.DataFrame({
        "STUDYID": study_id, "DOMAIN": "TR", "USUBJID": r["USUBJID"].astype(str), "TRLNKID": r["LESIONID"].astype(str),
        "TRTESTCD": code, "TRTEST": [test[c] for c in code], "TRORRES": orres,
        "TRORRESU": np.where(measured, "mm", ""), "TRSTRESC": orres, "TRSTRESN": diam.astype(np.float64),
        "TRSTRESU": np.where(measured, "mm", ""), "TREVAL": EVALUATOR, "TREVALID": r["READER"].astype(str),
        "VISITNUM": r["_VN"].astype(np.float64), "VISIT": r["VISIT"].astype(str), "TRDY": r["ADY"].astype(np.float64),
    }), "TRSEQ")


def make_rs(reads: pd.DataFrame, study_id: str, protocol: StudyProtocol,
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
                "VISIT": visits["VISIT"].astype(str), "RSDY": visits["ADY"].astype(np.float64),
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
    return {
        "dm": make_dm(crf, protocol.study_id),
        "tu": make_tu(reads, protocol.study_id, protocol),
        "tr": make_tr(reads, protocol.study_id, protocol),
        "rs": make_rs(reads, protocol.study_id, protocol, final),
        "cm": make_cm(crf, protocol.study_id),
        "ce": make_ce(crf, protocol.study_id),
    }
