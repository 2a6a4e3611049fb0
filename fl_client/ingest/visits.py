"""Study days and protocol visits: which of T0/T1/T2 a CT study is.

ADY follows CDISC: day 1 is the first dose, the day before is day −1, there is no day 0. A study is
labelled with the protocol visit whose inclusive window (``configs/study.yaml``) contains its ADY;
a study outside every window is unscheduled (``UNS1``, ``UNS2``, … per subject in date order).
"""

from __future__ import annotations

from datetime import date, timedelta

from evaluation.protocol import StudyProtocol


def study_day(day: date, first_dose: date) -> int:
    """CDISC study day of ``day`` relative to ``first_dose`` (day 1 = first dose, no day 0)."""
    delta = (day - first_dose).days
    return delta + 1 if delta >= 0 else delta


def ady_date(ady: int, first_dose: date) -> date:
    """Calendar date of study day ``ady`` (the inverse of :func:`study_day`)."""
    return first_dose + timedelta(days=ady - 1 if ady > 0 else ady)


def parse_da(value: str) -> date | None:
    """A DICOM DA (``YYYYMMDD``) or ISO date (``YYYY-MM-DD``) as a date; None when empty or invalid."""
    text = str(value or "").strip().replace("-", "")
    if len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def protocol_visit(ady: int, protocol: StudyProtocol) -> str | None:
    """The protocol visit whose window holds ``ady`` (None when none does)."""
    for name in protocol.visits:
        low, high = protocol.timepoints[name].window
        if low <= ady <= high:
            return name
    return None


def label_studies(studies: list[tuple[str, date | None]], first_dose: date | None,
                  protocol: StudyProtocol) -> dict[str, tuple[str, int | None, str]]:
    """Label one subject's studies.

    Parameters
    ----------
    studies : list of (study key, study date or None)
    first_dose : date or None
        From the CRF (``FIRST_DOSE_DATE``); without it no study can be placed in a window.

    Returns
    -------
    dict
        study key → (VISIT, ADY or None, reason when unscheduled else ''). When two studies fall in one
        window the earlier keeps the visit and the later is unscheduled (both are kept).
    """
    out: dict[str, tuple[str, int | None, str]] = {}
    taken: set[str] = set()
    unscheduled = 0
    for key, when in sorted(studies, key=lambda s: (s[1] or date.max, s[0])):
        ady = study_day(when, first_dose) if when and first_dose else None
        visit = protocol_visit(ady, protocol) if ady is not None else None
        if visit is not None and visit not in taken:
            taken.add(visit)
            out[key] = (visit, ady, "")
            continue
        unscheduled += 1
        if when is None:
            reason = "study has no StudyDate"
        elif first_dose is None:
            reason = "no FIRST_DOSE_DATE in the CRF for this subject"
        elif visit is not None:
            reason = f"second study in the {visit} window (ADY {ady})"
        else:
            reason = f"ADY {ady} lies outside every protocol window"
        out[key] = (f"UNS{unscheduled}", ady, reason)
    return out
