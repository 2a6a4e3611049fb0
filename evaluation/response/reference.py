"""Dynamic-iRECIST reference labels: what every model of the study is judged against.

One row per subject (``reference.csv``; definition in ``docs/dynamic-irecist.md``):

- ``RESPONDER`` — ``Y`` when the confirmed iRECIST best overall response is iCR/iPR, or when an iCR/iPR
  was seen at the subject's last assessment so that no confirmation scan exists ("confirmed where the
  schedule allows"); ``RESP_CONFIRMED`` says which (``Y`` / ``UNCONFIRMABLE`` / empty).
- ``PSEUDOPROG`` — an iUPD later followed by iSD/iPR/iCR (Seymour 2017).
- ``PFS_DAYS``, ``PFS_EVENT``, ``PFS_SOURCE`` — progression-free survival by RECIST 1.1 from the first
  dose (study days, day 1 = first dose): event at the first PD (``PD``) or death (``DEATH``); censored at
  the last adequate assessment when there is no event, before new anticancer therapy, or before ≥ 2
  missed visits (DOMAIN §6). ``IPFS_*`` — the same by iRECIST: the event is the day of the iUPD that was
  later confirmed (``ICPD``).
- ``IUPD_OPEN``, ``IUPD_OPEN_ADY``, ``P_PSEUDO`` — the slot for models: a subject whose last iRECIST
  state is an unconfirmed iUPD gets ``IUPD_OPEN = Y``; a model's probability that this iUPD is
  pseudo- rather than true progression goes into ``P_PSEUDO`` (:func:`attach_pseudoprogression_probability`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd

from evaluation.protocol import StudyProtocol
from evaluation.response.bor import IRECIST, confirmed_best_overall_response
from evaluation.response.engine import Assessment
from evaluation.response.irecist import progression_event_day

log = logging.getLogger(__name__)

REFERENCE_COLUMNS: tuple[str, ...] = (
    "USUBJID", "CIBOR", "RESPONDER", "RESP_CONFIRMED", "PSEUDOPROG", "PFS_DAYS", "PFS_EVENT", "PFS_SOURCE",
    "IPFS_DAYS", "IPFS_EVENT", "IPFS_SOURCE", "IUPD_OPEN", "IUPD_OPEN_ADY", "P_PSEUDO",
)
EVENT_COLUMNS: tuple[str, ...] = ("USUBJID", "DEATH_ADY", "NEWTHER_ADY")


def study_day(date: pd.Series, first_dose: pd.Series) -> pd.Series:
    """CDISC study day of ``date`` relative to ``first_dose`` (day 1 = first dose, no day 0)."""
    delta = (pd.to_datetime(date, errors="coerce") - pd.to_datetime(first_dose, errors="coerce")).dt.days
    return delta.where(delta < 0, delta + 1).astype("Int64")


def events_from_crf(crf: pd.DataFrame) -> pd.DataFrame:
    """``USUBJID, DEATH_ADY, NEWTHER_ADY`` (+ ``INV_PD_ADY``, the investigator's progression day, when the CRF
    has ``PD_DATE``) from a CRF extract (``FIRST_DOSE_DATE, DEATH_DATE, NEW_THERAPY_DATE``)."""
    missing = [c for c in ("USUBJID", "FIRST_DOSE_DATE", "DEATH_DATE", "NEW_THERAPY_DATE") if c not in crf.columns]
    if missing:
        raise ValueError(f"the CRF lacks {missing}, needed for PFS death and new-therapy censoring")
    events = pd.DataFrame({
        "USUBJID": crf["USUBJID"].astype(str),
        "DEATH_ADY": study_day(crf["DEATH_DATE"], crf["FIRST_DOSE_DATE"]),
        "NEWTHER_ADY": study_day(crf["NEW_THERAPY_DATE"], crf["FIRST_DOSE_DATE"]),
    })
    if "PD_DATE" in crf.columns:
        events["INV_PD_ADY"] = study_day(crf["PD_DATE"], crf["FIRST_DOSE_DATE"])
    return events


def irc_vs_investigator(subjects: pd.DataFrame, events: pd.DataFrame) -> dict[str, float]:
    """Independent review (IRC) versus the site investigator on progression (DOMAIN §2: direction and size).

    Compares the final assessment's first RECIST PD day (``PD_ADY``) with the investigator's (``INV_PD_ADY``,
    from the CRF ``PD_DATE``). Returns counts of agreement on progression status and, where both saw
    progression, the IRC − investigator difference in days (median, share earlier/later/same day).
    """
    if "INV_PD_ADY" not in events.columns:
        return {}
    both = subjects[["USUBJID", "PD_ADY"]].merge(events[["USUBJID", "INV_PD_ADY"]], on="USUBJID")
    irc, inv = both["PD_ADY"].notna(), both["INV_PD_ADY"].notna()
    diff = (both.loc[irc & inv, "PD_ADY"].astype(float) - both.loc[irc & inv, "INV_PD_ADY"].astype(float))
    return {
        "n_subjects": float(len(both)),
        "progression_status_agreement": float((irc == inv).mean()) if len(both) else float("nan"),
        "irc_only": float((irc & ~inv).sum()), "investigator_only": float((~irc & inv).sum()),
        "both": float(len(diff)),
        "median_day_difference": float(diff.median()) if len(diff) else float("nan"),
        "irc_earlier": float((diff < 0).sum()), "irc_later": float((diff > 0).sum()),
        "same_day": float((diff == 0).sum()),
    }


def _responder(days: list[int], responses: list[str], cibor: str) -> tuple[str, str]:
    if cibor in {"iCR", "iPR"}:
        return "Y", "Y"
    if responses and responses[-1] in {"iCR", "iPR"}:
        return "Y", "UNCONFIRMABLE"  # seen at the last assessment: no scan exists that could confirm it
    return "N", ""


def _visitnum(visit: str, ady: int, protocol: StudyProtocol) -> float:
    """VISITNUM as SDTM numbers it (protocol visits, then ``FUn``); an unscheduled visit takes the number of the
    latest scheduled visit whose target day it follows (for the missed-assessment rule only)."""
    from evaluation.cdisc.sdtm import visitnum
    from evaluation.exceptions import CdiscExportError

    try:
        return visitnum(visit, protocol)
    except CdiscExportError:
        before = [tp.visitnum for tp in protocol.timepoints.values() if tp.target_day <= ady]
        return float(max(before, default=0))


def _pfs(follow: pd.DataFrame, column: str, progression: int | None, documented: int | None, death: float,
         new_therapy: float, clinical: float, protocol: StudyProtocol) -> tuple[int, int, str]:
    """(days, event, source) of one criterion through the ADTTE rules (:func:`evaluation.cdisc.pfs.derive_pfs`):
    the reference labels and ADTTE derive PFS with one code."""
    from evaluation.cdisc.pfs import CENSORING, Assessment, derive_pfs

    assessments = [Assessment(float(d), _visitnum(str(v), int(d), protocol), str(r)) for d, v, r in
                   zip(follow["ADY"], follow["VISIT"], follow[column], strict=True)]
    outcome = derive_pfs(assessments, progression, death, new_therapy, clinical, protocol, documented)
    if outcome.cnsr == 0:
        return int(outcome.day), 1, ("DEATH" if outcome.srcdom == "DM" else "PD" if column == "RECIST_OVR" else "ICPD")
    source = {1: "CENSORED_LAST_ASSESSMENT", 2: "CENSORED_NO_ASSESSMENT", 3: "CENSORED_NEW_THERAPY",
              4: "CENSORED_MISSED_VISITS", 5: "CENSORED_CLINICAL_PD"}
    assert set(source) == set(CENSORING), "a censoring code of evaluation.cdisc.pfs has no PFS_SOURCE name"
    return int(outcome.day), 0, source[outcome.cnsr]


def _event_day(events: pd.DataFrame, subject: str, column: str) -> float:
    """The event's study day, or ``nan``; a day before the first dose is a CRF error (the data validation
    plan queries it) and is left out of PFS with a warning rather than producing a negative survival time."""
    if column not in events.columns or subject not in events.index or pd.isna(events.at[subject, column]):
        return float("nan")
    day = float(events.at[subject, column])
    if day < 1:
        log.warning("%s: %s = %d lies before the first dose; ignored for PFS (query the CRF)", subject, column, day)
        return float("nan")
    return day


def reference_labels(
    assessment: Assessment, protocol: StudyProtocol, events: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Dynamic-iRECIST reference labels per subject (columns :data:`REFERENCE_COLUMNS`).

    Parameters
    ----------
    assessment : Assessment
        The final (adjudicated) assessment.
    protocol : StudyProtocol
        Confirmation days, SD duration, iRECIST window and the follow-up interval (missed visits).
    events : DataFrame, optional
        ``USUBJID, DEATH_ADY, NEWTHER_ADY`` (see :func:`events_from_crf`); without it PFS uses imaging only.
    """
    rules = protocol.recist
    known = events.set_index("USUBJID") if events is not None else pd.DataFrame(columns=list(EVENT_COLUMNS[1:]))
    pseudo = assessment.subjects.set_index("USUBJID")["PSEUDOPROG"]
    rows = []
    for subject, visits in assessment.visits.groupby("USUBJID", sort=True):
        follow = visits[visits["IRECIST_OVR"] != ""].sort_values("ADY")
        days, responses = follow["ADY"].astype(int).tolist(), follow["IRECIST_OVR"].astype(str).tolist()
        cibor = confirmed_best_overall_response(days, responses, IRECIST, rules.sd_min_days, rules.confirm_min_days,
                                                nontarget_only=bool((follow["TRGRESP"] == "NA").all()))
        responder, confirmed = _responder(days, responses, cibor)
        progression, open_iupd = progression_event_day(days, responses)
        death, therapy, clinical = (_event_day(known, str(subject), c) for c in ("DEATH_ADY", "NEWTHER_ADY",
                                                                                 "INV_PD_ADY"))
        recist = visits[visits["RECIST_OVR"] != ""].sort_values("ADY")
        first_pd = next((int(d) for d, r in zip(recist["ADY"], recist["RECIST_OVR"], strict=True) if r == "PD"), None)
        pfs = _pfs(recist, "RECIST_OVR", first_pd, first_pd, death, therapy, clinical, protocol)
        first_iupd = next((d for d, r in zip(days, responses, strict=True) if r in ("iUPD", "iCPD")), None)
        ipfs = _pfs(follow, "IRECIST_OVR", progression, first_iupd, death, therapy, clinical, protocol)
        rows.append({
            "USUBJID": subject, "CIBOR": cibor, "RESPONDER": responder, "RESP_CONFIRMED": confirmed,
            "PSEUDOPROG": pseudo.get(subject, "N"), "PFS_DAYS": pfs[0], "PFS_EVENT": pfs[1], "PFS_SOURCE": pfs[2],
            "IPFS_DAYS": ipfs[0], "IPFS_EVENT": ipfs[1], "IPFS_SOURCE": ipfs[2],
            "IUPD_OPEN": "Y" if open_iupd is not None else "N", "IUPD_OPEN_ADY": open_iupd, "P_PSEUDO": np.nan,
        })
    frame = pd.DataFrame(rows, columns=list(REFERENCE_COLUMNS))
    frame["IUPD_OPEN_ADY"] = pd.array(frame["IUPD_OPEN_ADY"].tolist(), dtype="Int64")
    frame["P_PSEUDO"] = frame["P_PSEUDO"].astype(float)
    return frame


def attach_pseudoprogression_probability(reference: pd.DataFrame, probabilities: Mapping[str, float]) -> pd.DataFrame:
    """Fill ``P_PSEUDO`` for subjects with an open (unconfirmed) iUPD from a model's probabilities.

    Raises
    ------
    ValueError
        A probability outside [0, 1], or given for a subject without an open iUPD (the slot exists only there).
    """
    out = reference.copy()
    open_ids = set(out.loc[out["IUPD_OPEN"] == "Y", "USUBJID"])
    problems = [f"{s}: {p!r} is not a probability" for s, p in probabilities.items() if not 0.0 <= float(p) <= 1.0]
    problems += [f"{s}: has no open iUPD" for s in probabilities if s not in open_ids]
    if problems:
        raise ValueError("cannot attach pseudoprogression probabilities:\n  " + "\n  ".join(problems))
    mask = out["USUBJID"].isin(set(probabilities))
    out.loc[mask, "P_PSEUDO"] = out.loc[mask, "USUBJID"].map(probabilities).astype(float)
    return out
