"""ADaM ADSL, ADRS and ADTTE, derived **only from the SDTM datasets** (DM, RS, CM, CE) so that a reviewer can
regenerate them from the submitted raw data with this program (DOMAIN §3, traceability).

- ADSL: one row per DM subject; ``TRTSDT`` = RFSTDTC as a SAS date; ``TRT01P`` = ARM, ``TRT01A`` = ACTARM (empty
  for a subject never treated). Population flags ``ITTFL, ELIGFL, EARLYFL, EFFFL, PFSFL`` and ``EXCLREAS`` are
  the sites' ``populations.csv`` (:mod:`evaluation.populations`, the one definition) when given; regenerated from SDTM
  alone they are ``ITTFL = Y``, ``ELIGFL = EARLYFL = EFFFL =`` has a post-baseline response, and ``PFSFL = EFFFL``
  without a death dated before the first dose.
- ADTTE rows exist only for ``PFSFL = Y`` subjects with a first dose: every row has ``STARTDT``/``ADT`` and
  ``AVAL ≥ 1``; a subject left out says why in ADSL ``EXCLREAS`` (e.g. a death before the first dose, an open
  hard query of the data validation plan).
- ADRS (primary evaluator): per visit ``OVR`` (RECIST 1.1) and ``IOVR`` (iRECIST) copied from RS; per subject
  ``BOR``/``CBOR`` (RECIST 1.1 unconfirmed/confirmed) and ``IBOR``/``ICBOR`` (iRECIST) from
  :mod:`evaluation.response.bor` applied to those RS rows.
- ADTTE: ``PFS`` — first RECIST PD or death; ``IPFS`` — the date of the iUPD that an iCPD confirmed, or death;
  censored by the rules of :mod:`evaluation.cdisc.pfs` (new anticancer therapy from CM, clinical progression
  from CE, two or more missed assessments, no event) with one ``CNSR`` code per reason. ``AVAL`` in days from
  the first dose (``ADT − STARTDT + 1``, the study day).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from evaluation.protocol import StudyProtocol

SAS_EPOCH = date(1960, 1, 1)
RESPONSE_CODE = {"CR": 1, "iCR": 1, "PR": 2, "iPR": 2, "SD": 3, "iSD": 3, "NON-CR/NON-PD": 3, "NON-iCR/NON-iUPD": 3,
                 "PD": 4, "iUPD": 4, "iCPD": 5, "NE": 6}
PARAMS = {
    "OVR": ("Overall Response by Visit (RECIST 1.1)", "RECIST 1.1"),
    "IOVR": ("Overall Response by Visit (iRECIST)", "iRECIST"),
    "BOR": ("Best Overall Response (RECIST 1.1)", "RECIST 1.1"),
    "CBOR": ("Confirmed Best Overall Resp (RECIST 1.1)", "RECIST 1.1"),
    "IBOR": ("Best Overall Response (iRECIST)", "iRECIST"),
    "ICBOR": ("Confirmed Best Overall Resp (iRECIST)", "iRECIST"),
}


def sas_date(iso: str) -> float:
    """ISO date → SAS date (days since 1960-01-01); NaN for an empty value."""
    return float((date.fromisoformat(iso) - SAS_EPOCH).days) if iso else float("nan")


def study_day(iso: str, start: str) -> float:
    """CDISC study day of ``iso`` relative to ``start`` (no day 0)."""
    if not iso or not start:
        return float("nan")
    delta = (date.fromisoformat(iso) - date.fromisoformat(start)).days
    return float(delta + 1 if delta >= 0 else delta)


def make_adsl(dm: pd.DataFrame, rs: pd.DataFrame, populations: pd.DataFrame | None = None) -> pd.DataFrame:
    """ADSL from DM (and RS for the regenerated efficacy flag; ``populations`` for the study's flags)."""
    trtsdt = dm["RFSTDTC"].fillna("").astype(str).map(sas_date).astype(np.float64)
    actarm = dm["ACTARM"] if "ACTARM" in dm.columns else np.where(trtsdt.notna(), dm["ARM"], "")
    adsl = pd.DataFrame({
        "STUDYID": dm["STUDYID"], "USUBJID": dm["USUBJID"], "SUBJID": dm["SUBJID"], "SITEID": dm["SITEID"],
        "AGE": dm["AGE"], "AGEU": dm["AGEU"], "SEX": dm["SEX"], "ARMCD": dm["ARMCD"], "ARM": dm["ARM"],
        "TRT01P": dm["ARM"], "TRT01A": actarm, "TRTSDT": trtsdt, "DTHFL": dm["DTHFL"],
    })
    flags = _population_flags(dm, rs, trtsdt) if populations is None else _given_flags(adsl, populations)
    return pd.concat([adsl.reset_index(drop=True), flags.reset_index(drop=True)], axis=1)


def _population_flags(dm: pd.DataFrame, rs: pd.DataFrame, trtsdt: pd.Series) -> pd.DataFrame:
    """The flags as far as SDTM alone can say (regeneration without the sites' populations.csv)."""
    responded = dm["USUBJID"].isin(set(rs["USUBJID"])).to_numpy()
    death = dm["DTHDTC"].fillna("").astype(str).map(sas_date).to_numpy(np.float64)
    early_death = np.isfinite(death) & (death < trtsdt.to_numpy(np.float64))
    reasons = np.where(~responded, "no post-baseline response", np.where(
        early_death, "PFS: death dated before the first dose (open hard query)", ""))
    yn = {True: "Y", False: "N"}
    return pd.DataFrame({"ITTFL": "Y", "ELIGFL": [yn[bool(r)] for r in responded],
                         "EARLYFL": [yn[bool(r)] for r in responded], "EFFFL": [yn[bool(r)] for r in responded],
                         "PFSFL": [yn[bool(r and not d)] for r, d in zip(responded, early_death, strict=True)],
                         "EXCLREAS": reasons})


def _given_flags(adsl: pd.DataFrame, populations: pd.DataFrame) -> pd.DataFrame:
    """The sites' population flags, one per ADSL subject; a DM subject without one is refused."""
    from evaluation.exceptions import CdiscExportError
    from evaluation.populations import FLAGS, with_later_flags

    pop = populations.drop_duplicates("USUBJID", keep="last").set_index("USUBJID")
    missing = sorted(set(adsl["USUBJID"]) - set(pop.index))
    if missing:
        raise CdiscExportError(f"{len(missing)} DM subject(s) have no population flags (e.g. {missing[0]}); run "
                               "`fedresponse assess STORE` so that STORE/assessment/populations.csv covers every one")
    pop = with_later_flags(pop, "the given population flags")
    rows = pop.loc[adsl["USUBJID"], [*FLAGS, "EXCLREAS"]]
    return rows.fillna("").astype(str).reset_index(drop=True)


def primary_evaluator(rs: pd.DataFrame) -> str:
    """The evaluator whose assessments the analysis uses: ``FINAL`` (adjudicated) if present, else the first id."""
    ids = sorted(rs["RSEVALID"].astype(str).unique())
    return "FINAL" if "FINAL" in ids else ids[0]


def _subject_best(rows: pd.DataFrame, protocol: StudyProtocol) -> dict[str, str]:
    from evaluation.response.bor import IRECIST, RECIST, best_overall_response, confirmed_best_overall_response

    rules = protocol.recist
    out = {}
    for criterion, scheme, prefix in (("RECIST 1.1", RECIST, ""), ("iRECIST", IRECIST, "I")):
        part = rows[rows["RSCAT"] == criterion].sort_values("VISITNUM")
        days, values = part["RSDY"].astype(int).tolist(), part["RSSTRESC"].astype(str).tolist()
        out[f"{prefix}BOR"] = best_overall_response(days, values, scheme, rules.sd_min_days) if days else "NE"
        out[f"{prefix}CBOR"] = confirmed_best_overall_response(days, values, scheme, rules.sd_min_days,
                                                               rules.confirm_min_days) if days else "NE"
    return out


def make_adrs(adsl: pd.DataFrame, rs: pd.DataFrame, protocol: StudyProtocol, evaluator: str) -> pd.DataFrame:
    """ADRS: visit-level OVR/IOVR and subject-level BOR/CBOR/IBOR/ICBOR of ``evaluator``."""
    mine = rs[(rs["RSEVALID"] == evaluator) & (rs["RSTESTCD"] == "OVRLRESP")]
    rows = []
    for _, r in mine.iterrows():
        code = "OVR" if r["RSCAT"] == "RECIST 1.1" else "IOVR"
        rows.append({"USUBJID": r["USUBJID"], "PARAMCD": code, "AVALC": r["RSSTRESC"], "ADY": r["RSDY"],
                     "VISITNUM": r["VISITNUM"], "VISIT": r["VISIT"], "SRCDOM": "RS", "SRCSEQ": r["RSSEQ"]})
    for subject in adsl["USUBJID"]:
        best = _subject_best(mine[mine["USUBJID"] == subject], protocol)
        for code in ("BOR", "CBOR", "IBOR", "ICBOR"):
            rows.append({"USUBJID": subject, "PARAMCD": code, "AVALC": best[code], "ADY": np.nan,
                         "VISITNUM": np.nan, "VISIT": "", "SRCDOM": "RS", "SRCSEQ": np.nan})
    frame = pd.DataFrame(rows)
    frame["PARAM"] = frame["PARAMCD"].map(lambda c: PARAMS[c][0])
    frame["PARCAT1"] = frame["PARAMCD"].map(lambda c: PARAMS[c][1])
    frame["AVAL"] = frame["AVALC"].map(RESPONSE_CODE).astype(np.float64)
    frame = frame.merge(adsl[["STUDYID", "USUBJID", "SITEID", "TRTSDT"]], on="USUBJID", how="left")
    order = ["STUDYID", "USUBJID", "SITEID", "PARAMCD", "PARAM", "PARCAT1", "AVALC", "AVAL", "ADY", "VISITNUM",
             "VISIT", "TRTSDT", "SRCDOM", "SRCSEQ"]
    return frame[order].sort_values(["USUBJID", "PARAMCD", "VISITNUM"], kind="stable").reset_index(drop=True)


def _confirmed_iupd_day(rows: pd.DataFrame) -> float:
    """Study day of the confirmed progression by the one iRECIST dating rule
    (:func:`evaluation.response.irecist.progression_event_day`: the first iUPD of the run the iCPD closed)."""
    from evaluation.response.irecist import progression_event_day

    ordered = rows.sort_values("RSDY")
    day, _ = progression_event_day(ordered["RSDY"].astype(int).tolist(), ordered["RSSTRESC"].astype(str).tolist())
    return float("nan") if day is None else float(day)


def _first_day(frame: pd.DataFrame | None, subject: str, column: str, start: str) -> float:
    """Study day of the earliest ``column`` date of ``subject`` in an optional SDTM events domain."""
    if frame is None or not len(frame):
        return float("nan")
    days = [study_day(str(d), start) for d in frame.loc[frame["USUBJID"] == subject, column] if str(d)]
    return float(min(days)) if days else float("nan")


def _tte_row(subject: str, dm_row: pd.Series, rows: pd.DataFrame, code: str, cuts: tuple[float, float],
             protocol: StudyProtocol) -> dict[str, object]:
    from evaluation.cdisc.pfs import Assessment, derive_pfs

    start = str(dm_row["RFSTDTC"])
    if code == "PFS":
        pd_rows = rows[rows["RSSTRESC"] == "PD"]
        progression_day = float(pd_rows["RSDY"].min()) if len(pd_rows) else float("nan")
        documented = progression_day
    else:
        progression_day = _confirmed_iupd_day(rows)
        unconfirmed = rows[rows["RSSTRESC"].isin(["iUPD", "iCPD"])]
        documented = float(unconfirmed["RSDY"].min()) if len(unconfirmed) else float("nan")
    assessments = [Assessment(float(d), float(v), str(r)) for d, v, r in
                   zip(rows["RSDY"], rows["VISITNUM"], rows["RSSTRESC"], strict=True)]
    outcome = derive_pfs(assessments, progression_day, study_day(str(dm_row["DTHDTC"]), start), cuts[0], cuts[1],
                         protocol, documented)
    trtsdt = sas_date(start)
    if not outcome.day >= 1:  # derive_pfs never dates before day 1; guard the ADTTE contract (AVAL ≥ 1)
        raise ValueError(f"{subject} {code}: AVAL {outcome.day} < 1; the first-dose date or an event date is wrong")
    return {"USUBJID": subject, "PARAMCD": code, "AVAL": outcome.day, "CNSR": float(outcome.cnsr),
            "EVNTDESC": outcome.evntdesc, "CNSDTDSC": outcome.cnsdtdsc, "SRCDOM": outcome.srcdom,
            "SRCVAR": outcome.srcvar, "STARTDT": trtsdt, "ADT": trtsdt + outcome.day - 1}


def make_adtte(dm: pd.DataFrame, rs: pd.DataFrame, evaluator: str, protocol: StudyProtocol,
               cm: pd.DataFrame | None = None, ce: pd.DataFrame | None = None,
               adsl: pd.DataFrame | None = None) -> pd.DataFrame:
    """ADTTE with PFS (RECIST 1.1) and IPFS (iRECIST) per subject, censored by :mod:`evaluation.cdisc.pfs`
    (new anticancer therapy from CM, investigator-recorded progression from CE, missed assessments).

    Only subjects with ``PFSFL = Y`` in ``adsl`` (default: every DM subject) and a first dose get rows."""
    mine = rs[(rs["RSEVALID"] == evaluator)]
    included = set(dm["USUBJID"]) if adsl is None else set(adsl.loc[adsl["PFSFL"] == "Y", "USUBJID"])
    rows = []
    for _, dm_row in dm[dm["USUBJID"].isin(included) & dm["RFSTDTC"].fillna("").astype(str).ne("")].iterrows():
        subject = dm_row["USUBJID"]
        start = str(dm_row["RFSTDTC"])
        cuts = (_first_day(cm, subject, "CMSTDTC", start), _first_day(ce, subject, "CESTDTC", start))
        own = mine[mine["USUBJID"] == subject].sort_values("VISITNUM")
        for criterion, code in (("RECIST 1.1", "PFS"), ("iRECIST", "IPFS")):
            rows.append(_tte_row(subject, dm_row, own[own["RSCAT"] == criterion], code, cuts, protocol))
    frame = pd.DataFrame(rows, columns=["USUBJID", "PARAMCD", "AVAL", "CNSR", "EVNTDESC", "CNSDTDSC", "SRCDOM",
                                        "SRCVAR", "STARTDT", "ADT"])
    frame["PARAM"] = frame["PARAMCD"].map({"PFS": "Progression-Free Survival (days)",
                                           "IPFS": "iRECIST Progression-Free Survival (days)"})
    frame.insert(0, "STUDYID", dm["STUDYID"].iloc[0])
    order = ["STUDYID", "USUBJID", "PARAMCD", "PARAM", "AVAL", "CNSR", "EVNTDESC", "CNSDTDSC", "STARTDT", "ADT",
             "SRCDOM", "SRCVAR"]
    return frame[order]


def make_adam(sdtm: dict[str, pd.DataFrame], protocol: StudyProtocol,
              populations: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """ADSL, ADRS and ADTTE from the SDTM tables (as written or as read back from XPT), with the sites'
    population flags (``populations.csv`` rows of every site) when given."""
    dm, rs = sdtm["dm"], sdtm["rs"]
    evaluator = primary_evaluator(rs)
    adsl = make_adsl(dm, rs, populations)
    adtte = make_adtte(dm, rs, evaluator, protocol, sdtm.get("cm"), sdtm.get("ce"), adsl)
    return {"adsl": adsl, "adrs": make_adrs(adsl, rs, protocol, evaluator), "adtte": adtte}
