"""Builds small lesion-measurement tables for the response-assessment worked cases."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from evaluation.protocol import load_protocol
from evaluation.response import Assessment, assess

PROTOCOL = load_protocol()

# lesion id → (category, organ, node)
LESIONS: dict[str, tuple[str, str, str]] = {
    "T1": ("TARGET", "LUNG", "N"),
    "T2": ("TARGET", "LIVER", "N"),
    "N1": ("TARGET", "LYMPH NODE", "Y"),
    "N2": ("TARGET", "LYMPH NODE", "Y"),
    "NT1": ("NONTARGET", "BONE", "N"),
    "NT2": ("NONTARGET", "PLEURA", "N"),
    "X1": ("NEW", "LIVER", "N"),
    "X2": ("NEW", "ADRENAL", "N"),
    "X3": ("NEW", "BONE", "N"),
}

Visit = tuple[str, int, Mapping[str, float | str]]


def table(visits: Sequence[Visit], subject: str = "FEDRESP-S01-0001", reader: str | None = None) -> pd.DataFrame:
    """Rows from ``[(VISIT, ADY, {lesion: diameter mm or STATUS}), ...]``; a lesion left out is not read."""
    rows = []
    for visit, ady, lesions in visits:
        for lesion, value in lesions.items():
            category, organ, node = LESIONS[lesion]
            numeric = not isinstance(value, str)
            rows.append({
                "USUBJID": subject, "VISIT": visit, "ADY": ady, "LESIONID": lesion, "ORGAN": organ,
                "CATEGORY": category, "NODE": node, "DIAM_MM": float(value) if numeric else None,
                "STATUS": "" if numeric else value, **({"READER": reader} if reader else {}),
            })
    return pd.DataFrame(rows)


def run(visits: Sequence[Visit], **kwargs: bool) -> Assessment:
    return assess(table(visits), PROTOCOL, **kwargs)


def column(visits: Sequence[Visit], name: str, **kwargs: bool) -> list[object]:
    """One visits.csv column over the follow-up visits (baseline row dropped)."""
    return run(visits, **kwargs).visits[name].tolist()[1:]


def subject(visits: Sequence[Visit], **kwargs: bool) -> dict[str, object]:
    row = run(visits, **kwargs).subjects.iloc[0].to_dict()
    return {k: (None if pd.isna(v) else v) for k, v in row.items()}
