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
from evaluation.response.irecist import RESETTING

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


def confirmed_iupd_day(days: list[int], responses: list[str], window_high: int) -> tuple[int | None, int | None]:
    """Replay the iRECIST sequence: the day of the iUPD that was confirmed, and of an iUPD still open at the end."""
    pending: int | None = None
    for ady, response in zip(days, responses, strict=True):
        if response == "iUPD" and (pending is None or ady - pending > window_high):
            pending = ady
        elif response in RESETTING:
            pending = None
        elif response == "iCPD":
            return pending, None
    return None, pending


def _responder(days: list[int], responses: list[str], cibor: str) -> tuple[str, str]:
    if cibor in {"iCR", "iPR"}:
        return "Y", "Y"
    if responses and responses[-1] in {"iCR", "iPR"}:
        return "Y", "UNCONFIRMABLE"  # seen at the last assessment: no scan exists that could confirm it
    return "N", ""


def _pfs(
    adequate: list[int], progression: int | None, label: str, death: float, new_therapy: float, max_gap: int
) -> tuple[int, int, str]:
    """(days, event, source) per DOMAIN §6 from the adequate assessment days and the progression day."""
    candidates = [(progression, label)] if progression is not None else []
    if not np.isnan(death):
        candidates.append((int(death), "DEATH"))
    event_day, source = min(candidates) if candidates else (None, "")
    horizon = event_day if event_day is not None else max(adequate, default=1)
    if not np.isnan(new_therapy) and new_therapy <= horizon:
        before = [d for d in adequate if d < new_therapy]
        return (max(before) if before else 1), 0, "CENSORED_NEW_THERAPY"
    if event_day is None:
        if not adequate:
            return 1, 0, "CENSORED_NO_ASSESSMENT"
        return max(adequate), 0, "CENSORED_LAST_ASSESSMENT"
    last = max((d for d in adequate if d < event_day), default=1)
    if event_day - last > max_gap:
        return last, 0, "CENSORED_MISSED_VISITS"
    return event_day, 1, source


def _event_day(events: pd.DataFrame, subject: str, column: str) -> float:
    """The event's study day, or ``nan``; a day before the first dose is a CRF error (the data validation
    plan queries it) and is left out of PFS with a warning rather than producing a negative survival time."""
    if subject not in events.index or pd.isna(events.at[subject, column]):
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
    high = protocol.irecist.confirm_window_days[1]
    max_gap = 2 * protocol.follow_up.interval_days + protocol.follow_up.window_days
    known = events.set_index("USUBJID") if events is not None else pd.DataFrame(columns=list(EVENT_COLUMNS[1:]))
    pseudo = assessment.subjects.set_index("USUBJID")["PSEUDOPROG"]
    rows = []
    for subject, visits in assessment.visits.groupby("USUBJID", sort=True):
        follow = visits[visits["IRECIST_OVR"] != ""].sort_values("ADY")
        days, responses = follow["ADY"].astype(int).tolist(), follow["IRECIST_OVR"].astype(str).tolist()
        cibor = confirmed_best_overall_response(days, responses, IRECIST, rules.sd_min_days, rules.confirm_min_days,
                                                nontarget_only=bool((follow["TRGRESP"] == "NA").all()))
        responder, confirmed = _responder(days, responses, cibor)
        progression, open_iupd = confirmed_iupd_day(days, responses, high)
        death, therapy = (_event_day(known, str(subject), c) for c in ("DEATH_ADY", "NEWTHER_ADY"))
        recist = visits[visits["RECIST_OVR"] != ""].sort_values("ADY")
        r_days = recist["ADY"].astype(int).tolist()
        r_resp = recist["RECIST_OVR"].astype(str).tolist()
        first_pd = next((d for d, r in zip(r_days, r_resp, strict=True) if r == "PD"), None)
        pfs = _pfs([d for d, r in zip(r_days, r_resp, strict=True) if r != "NE"], first_pd, "PD", death, therapy,
                   max_gap)
        ipfs = _pfs([d for d, r in zip(days, responses, strict=True) if r != "NE"], progression, "ICPD", death,
                    therapy, max_gap)
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
