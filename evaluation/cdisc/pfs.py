"""PFS event and censoring rules of ADTTE (one subject, one progression criterion).

The conventions follow the FDA guidance *Clinical Trial Endpoints for the Approval of Cancer Drugs and
Biologics* (2018, Appendix 3, table A: only well-documented radiological progression counts; deaths after two
or more missed visits are censored at the last visit; new anticancer therapy and undocumented progression
censor at the last adequate assessment) and the EMA *Appendix 1 to the guideline on the evaluation of
anticancer medicinal products* (PFS/DFS, 2012). Days are CDISC study days (day 1 = first dose, no day 0).

Order of the rules (first that applies wins):

1. A **cut** ends the usable follow-up before any event: the start of a new anticancer therapy (CM) or an
   investigator-recorded (clinical) progression (CE) that precedes any radiological documentation of
   progression (RECIST: the PD; iRECIST: the first iUPD, confirmed or not). A cut strictly
   before the first event (or with no event at all) censors at the last adequate assessment on or before the
   cut day (an assessment on the day new therapy starts is taken before it). The earliest cut wins; on the
   same day, new therapy is reported.
2. The first **event** — radiological progression of the criterion (RS) or death (DM) — counts, unless it
   comes after two or more missed scheduled assessments: then the subject is censored at the last adequate
   assessment before the event.
3. Otherwise the subject is censored at the last adequate (non-NE) assessment, or at day 1 when there is none.

Two missed assessments: with the last adequate assessment at visit ``v`` on day ``L``, the second scheduled
assessment after it is visit ``v + 2``; it is missed when the event day exceeds
``L + nominal(v+2) − nominal(v) + tol(v+1) + tol(v+2)``, i.e. the latest day on which that assessment could
still have been made with each of the two visits at the late end of its window (``configs/study.yaml``:
T-visit windows, then follow-up every ``interval_days`` ± ``window_days``). Without any adequate
post-baseline assessment ``L`` is the nominal T0 day and the censoring day is day 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from evaluation.protocol import StudyProtocol

EVENT = 0
#: CNSR code → (EVNTDESC, CNSDTDSC) of every outcome; 0 = event, positive = censored (ADaM BDS-TTE).
CENSORING: dict[int, tuple[str, str]] = {
    1: ("NO PROGRESSION OR DEATH", "LAST ADEQUATE ASSESSMENT"),
    2: ("NO ADEQUATE POST-BASELINE ASSESSMENT", "FIRST DOSE"),
    3: ("NEW ANTICANCER THERAPY", "LAST ADEQUATE ASSESSMENT BEFORE NEW THERAPY"),
    4: ("PD OR DEATH AFTER 2+ MISSED ASSESSMENTS", "LAST ADEQUATE ASSESSMENT BEFORE THE GAP"),
    5: ("CLINICAL PROGRESSION WITHOUT RADIOLOGICAL PD", "LAST ADEQUATE ASSESSMENT BEFORE CLIN PD"),
}
EVENTS = {"PROGRESSION": "DISEASE PROGRESSION", "DEATH": "DEATH"}


@dataclass(frozen=True)
class Assessment:
    """One post-baseline overall response of the analysis evaluator (RS ``OVRLRESP``)."""

    day: float  # RSDY
    visitnum: float  # VISITNUM (protocol visits, then FUn = last protocol VISITNUM + n)
    response: str  # RSSTRESC; "NE" is not an adequate assessment


@dataclass(frozen=True)
class TteOutcome:
    """The ADTTE values of one subject and parameter."""

    day: float  # AVAL, study day of the event or censoring date
    cnsr: int  # 0 event, else a key of CENSORING
    evntdesc: str
    cnsdtdsc: str  # empty for events
    srcdom: str  # RS, DM, CM, CE or ADSL
    srcvar: str


def nominal_day(visitnum: float, protocol: StudyProtocol) -> tuple[float, float]:
    """Scheduled study day of a visit number and how late it may be done (days after target)."""
    by_number = {tp.visitnum: tp for tp in protocol.timepoints.values()}
    if visitnum in by_number:
        tp = by_number[int(visitnum)]
        return float(tp.target_day), float(tp.window[1] - tp.target_day)
    last = max(by_number)
    n = visitnum - last
    base = by_number[last].target_day
    return float(base + n * protocol.follow_up.interval_days), float(protocol.follow_up.window_days)


def latest_day_of_second_next(visitnum: float, day: float, protocol: StudyProtocol) -> float:
    """Last study day on which the second scheduled assessment after ``(visitnum, day)`` was still on time."""
    here, _ = nominal_day(visitnum, protocol)
    _, tol_next = nominal_day(visitnum + 1, protocol)
    second, tol_second = nominal_day(visitnum + 2, protocol)
    return day + (second - here) + tol_next + tol_second


def _last_adequate(assessments: list[Assessment], on_or_before: float, strict: bool = False) -> Assessment | None:
    ok = [a for a in assessments if a.response != "NE" and (a.day < on_or_before if strict else a.day <= on_or_before)]
    return max(ok, key=lambda a: a.day) if ok else None


def _censor_at(last: Assessment | None, cnsr: int) -> TteOutcome:
    evntdesc, cnsdtdsc = CENSORING[cnsr]
    if last is None:
        no_assessment, first_dose = CENSORING[2]
        return TteOutcome(1.0, 2 if cnsr == 1 else cnsr, evntdesc if cnsr != 1 else no_assessment,
                          first_dose, "ADSL", "TRTSDT")
    return TteOutcome(last.day, cnsr, evntdesc, cnsdtdsc, "RS", "RSDY")


def _day(value: float | None) -> float:
    """A study day, or infinity for "never" (None or NaN)."""
    return math.inf if value is None or math.isnan(value) else float(value)


def derive_pfs(assessments: list[Assessment], progression_day: float | None, death_day: float | None,
               new_therapy_day: float | None, clinical_pd_day: float | None,
               protocol: StudyProtocol, documented_day: float | None = None) -> TteOutcome:
    """Event or censoring of one subject by the rules of this module.

    Parameters
    ----------
    assessments : list of Assessment
        The analysis evaluator's post-baseline responses for the criterion (any order).
    progression_day : float or None
        Study day of radiological progression by the criterion (RECIST PD; iRECIST: the confirmed iUPD);
        None/NaN when there is none. The same for ``death_day`` (DM DTHDTC), ``new_therapy_day`` (CM
        CMSTDTC of a new anticancer therapy) and ``clinical_pd_day`` (CE: investigator-recorded progression).
    protocol : StudyProtocol
        Schedule and windows for the missed-assessment rule.
    documented_day : float or None
        First radiological documentation of progression, against which a clinical progression is judged
        (iRECIST: the first iUPD, even if never confirmed); default ``progression_day``.

    Returns
    -------
    TteOutcome
        ``day`` in study days, ``cnsr`` 0 (event) or a :data:`CENSORING` code.
    """
    progression, death, therapy, clinical = (_day(v) for v in (progression_day, death_day, new_therapy_day,
                                                               clinical_pd_day))
    documented = min(progression, _day(documented_day))
    events = [(d, name, dom) for d, name, dom in ((progression, "PROGRESSION", "RS"), (death, "DEATH", "DM"))
              if d < math.inf]
    event = min(events, key=lambda e: (e[0], e[1] != "PROGRESSION")) if events else None
    # a clinical progression matters only when it precedes any radiological documentation of progression
    cuts = [(d, code) for d, code in ((therapy, 3), (clinical if clinical < documented else math.inf, 5))
            if d < math.inf]
    if cuts:
        cut_day, code = min(cuts)
        if event is None or cut_day < event[0]:
            return _censor_at(_last_adequate(assessments, cut_day), code)
    if event is None:
        return _censor_at(_last_adequate(assessments, math.inf), 1)
    day, name, dom = event
    before = _last_adequate(assessments, day, strict=True)
    anchor_visit, anchor_day = ((before.visitnum, before.day) if before is not None else
                                (float(protocol.timepoints[protocol.visits[0]].visitnum),
                                 nominal_day(protocol.timepoints[protocol.visits[0]].visitnum, protocol)[0]))
    if day > latest_day_of_second_next(anchor_visit, anchor_day, protocol):
        return _censor_at(before, 4)
    return TteOutcome(float(day), EVENT, EVENTS[name], "", dom, "RSDY" if dom == "RS" else "DTHDTC")
