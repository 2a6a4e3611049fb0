"""Double reading as an independent review committee works it: two blinded readers, an adjudicator.

Each reader's measurements give an independent assessment (:func:`assess_readers`). Subjects whose
readers disagree on best overall response (RECIST BOR or iRECIST iBOR) or on a progression date
(``PD_ADY``, ``ICPD_ADY``) go to an adjudicator, who *chooses one reader's assessment* and says why
(:func:`adjudicate`); nothing is averaged. Concordant subjects take the first reader's assessment
(readers sorted by id). Agreement statistics (:func:`reader_agreement`) follow DOMAIN §2: inter-reader
ICC(2,1) of SLD, Cohen's kappa of visit responses, the adjudication rate and, when a reader read twice,
intra-reader agreement.

Reader ids: ``READER`` names the reader; a repeated read by the same reader carries a session suffix,
``R1#2`` (second session of R1). Sessionless ids are the primary reads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from evaluation.agreement import bland_altman, cohen_kappa, icc_a1
from evaluation.exceptions import AdjudicationDecisionError, AdjudicationPendingError, MeasurementTableError
from evaluation.protocol import StudyProtocol
from evaluation.response.engine import Assessment, assess

log = logging.getLogger(__name__)

DISCORDANCE_FIELDS: tuple[str, ...] = ("BOR", "IBOR", "PD_ADY", "ICPD_ADY")
DECISION_COLUMNS: tuple[str, ...] = ("USUBJID", "CHOSEN_READER", "ADJUDICATOR", "REASON")
RECORD_COLUMNS: tuple[str, ...] = ("USUBJID", "STATUS", "DISCORDANT_ON", "CHOSEN_READER", "ADJUDICATOR", "REASON")
SESSION_MARK = "#"


def icc_required() -> float:
    """The protocol's reader-agreement bar (``configs/study.yaml`` ``agreement.icc_min``; DOMAIN §1)."""
    from evaluation.protocol import load_protocol

    return load_protocol().agreement.icc_min


def primary_reader(reader: str) -> str:
    """The reader id without its session suffix (``"R1#2"`` → ``"R1"``)."""
    return reader.split(SESSION_MARK, 1)[0]


def assess_readers(
    measurements: pd.DataFrame, protocol: StudyProtocol, *, allow_nontarget_only: bool = False
) -> dict[str, Assessment]:
    """Assess every reader (and reading session) of a table independently.

    Returns
    -------
    dict[str, Assessment]
        Keyed by the ``READER`` value, sorted.
    """
    if "READER" not in measurements.columns:
        raise MeasurementTableError("double reading needs a READER column; the table has none")
    readers = measurements["READER"].fillna("").astype(str).str.strip()
    if (readers == "").any():
        raise MeasurementTableError("READER is empty", measurements[readers == ""].to_dict("records"))
    return {
        reader: assess(rows.drop(columns="READER"), protocol, allow_nontarget_only=allow_nontarget_only)
        for reader, rows in measurements.assign(READER=readers).groupby("READER", sort=True)
    }


def primary_pair(assessments: Mapping[str, Assessment]) -> tuple[str, ...]:
    """The sessionless readers (one for a single read, two for a double read)."""
    primary = tuple(sorted(r for r in assessments if SESSION_MARK not in r))
    if not 1 <= len(primary) <= 2:
        raise MeasurementTableError(
            f"expected one or two primary readers, but found {list(primary)}; re-reads carry a session suffix "
            f"such as 'R1{SESSION_MARK}2'"
        )
    return primary


def _same(a: object, b: object) -> bool:
    return (pd.isna(a) and pd.isna(b)) or (not pd.isna(a) and not pd.isna(b) and a == b)  # type: ignore[call-overload]


def discordance(first: Assessment, second: Assessment) -> pd.DataFrame:
    """Subjects whose two assessments differ in any of :data:`DISCORDANCE_FIELDS`.

    Returns
    -------
    DataFrame
        ``USUBJID, DISCORDANT_ON`` (comma-separated field names) for every subject of either reader;
        a subject read by only one reader is discordant on ``MISSING_READ``.
    """
    a = first.subjects.set_index("USUBJID")
    b = second.subjects.set_index("USUBJID")
    rows = []
    for subject in sorted(set(a.index) | set(b.index)):
        if subject not in a.index or subject not in b.index:
            rows.append({"USUBJID": subject, "DISCORDANT_ON": "MISSING_READ"})
            continue
        fields = [f for f in DISCORDANCE_FIELDS if not _same(a.at[subject, f], b.at[subject, f])]
        rows.append({"USUBJID": subject, "DISCORDANT_ON": ",".join(fields)})
    return pd.DataFrame(rows, columns=["USUBJID", "DISCORDANT_ON"])


@dataclass(frozen=True)
class Adjudicated:
    """The committee's final assessment and the record of how each subject got there.

    Attributes
    ----------
    final : Assessment
        One assessment per subject, each taken whole from one reader.
    record : DataFrame
        :data:`RECORD_COLUMNS`; ``STATUS`` is ``SINGLE_READ``, ``CONCORDANT``, ``ADJUDICATED`` or
        ``PENDING`` (discordant, no decision yet; provisional only).
    """

    final: Assessment
    record: pd.DataFrame

    @property
    def pending(self) -> list[str]:
        return self.record.loc[self.record["STATUS"] == "PENDING", "USUBJID"].tolist()


def _check_decisions(decisions: pd.DataFrame, discordant: set[str], readers: tuple[str, ...]) -> pd.DataFrame:
    missing = [c for c in DECISION_COLUMNS if c not in decisions.columns]
    if missing:
        raise AdjudicationDecisionError(
            f"the decisions table lacks {missing}; expected columns {list(DECISION_COLUMNS)}"
        )
    table = decisions[list(DECISION_COLUMNS)].fillna("").astype(str).apply(lambda c: c.str.strip())
    problems = []
    for row in table.to_dict("records"):
        if row["USUBJID"] not in discordant:
            problems.append(f"{row['USUBJID']}: not a discordant subject (nothing to adjudicate)")
        if row["CHOSEN_READER"] not in readers:
            problems.append(f"{row['USUBJID']}: CHOSEN_READER {row['CHOSEN_READER']!r} is not one of {list(readers)}")
        if not row["ADJUDICATOR"] or not row["REASON"]:
            problems.append(f"{row['USUBJID']}: every decision needs an ADJUDICATOR and a REASON")
        if row["ADJUDICATOR"] in readers:
            problems.append(f"{row['USUBJID']}: the adjudicator {row['ADJUDICATOR']!r} is one of the readers")
    duplicated = table.loc[table["USUBJID"].duplicated(), "USUBJID"].tolist()
    problems += [f"{s}: more than one decision" for s in duplicated]
    if problems:
        raise AdjudicationDecisionError("invalid adjudication decision(s):\n  " + "\n  ".join(problems))
    return table.set_index("USUBJID")


def adjudicate(
    assessments: Mapping[str, Assessment], decisions: pd.DataFrame | None = None, *, provisional: bool = False
) -> Adjudicated:
    """Combine the primary readers' assessments into the committee's final assessment.

    Parameters
    ----------
    assessments : mapping
        From :func:`assess_readers` (re-read sessions are ignored here).
    decisions : DataFrame, optional
        Adjudicator decisions, :data:`DECISION_COLUMNS`, one row per discordant subject.
    provisional : bool
        Keep going when decisions are missing: such subjects take the first reader's assessment and are
        recorded as ``PENDING`` (they must not be locked).

    Raises
    ------
    AdjudicationPendingError
        Discordant subjects without a decision (unless ``provisional``).
    AdjudicationDecisionError
        A decision names an unknown subject or reader, lacks adjudicator or reason, or is duplicated.
    """
    readers = primary_pair(assessments)
    first = assessments[readers[0]]
    if len(readers) == 1:
        record = pd.DataFrame({"USUBJID": first.subjects["USUBJID"], "STATUS": "SINGLE_READ", "DISCORDANT_ON": "",
                               "CHOSEN_READER": readers[0], "ADJUDICATOR": "", "REASON": ""})
        return Adjudicated(first, record[list(RECORD_COLUMNS)])
    table = discordance(first, assessments[readers[1]])
    discordant = set(table.loc[table["DISCORDANT_ON"] != "", "USUBJID"])
    chosen = _check_decisions(decisions if decisions is not None else pd.DataFrame(columns=list(DECISION_COLUMNS)),
                              discordant, readers)
    waiting = sorted(discordant - set(chosen.index))
    if waiting and not provisional:
        raise AdjudicationPendingError(waiting)
    rows = []
    for subject, fields in zip(table["USUBJID"], table["DISCORDANT_ON"], strict=True):
        if not fields:
            rows.append((subject, "CONCORDANT", "", readers[0], "", ""))
        elif subject in chosen.index:
            d = chosen.loc[subject]
            rows.append((subject, "ADJUDICATED", fields, d["CHOSEN_READER"], d["ADJUDICATOR"], d["REASON"]))
        else:
            rows.append((subject, "PENDING", fields, readers[0], "", ""))
    record = pd.DataFrame(rows, columns=list(RECORD_COLUMNS))
    return Adjudicated(_combine(assessments, record), record)


def _combine(assessments: Mapping[str, Assessment], record: pd.DataFrame) -> Assessment:
    visits, subjects = [], []
    for reader, group in record.groupby("CHOSEN_READER"):
        source = assessments[str(reader)]
        ids = set(group["USUBJID"])
        visits.append(source.visits[source.visits["USUBJID"].isin(ids)])
        subjects.append(source.subjects[source.subjects["USUBJID"].isin(ids)])
    final_visits = pd.concat(visits).sort_values(["USUBJID", "ADY"], kind="stable").reset_index(drop=True)
    final_subjects = pd.concat(subjects).sort_values("USUBJID", kind="stable").reset_index(drop=True)
    return Assessment(final_visits, final_subjects)


def pair_agreement(first: Assessment, second: Assessment) -> dict[str, object]:
    """Agreement of two reads: ICC(2,1) and Bland–Altman of SLD per subject-visit (mm), Cohen's kappa of
    RECIST time-point responses per follow-up visit and of BOR per subject."""
    keys = ["USUBJID", "VISIT"]
    visits = first.visits.merge(second.visits, on=keys, suffixes=("_A", "_B"))
    sld = visits.dropna(subset=["SLD_MM_A", "SLD_MM_B"])
    out: dict[str, object] = {"n_subject_visits": len(sld)}
    if len(sld) >= 2:
        icc = icc_a1(sld[["SLD_MM_A", "SLD_MM_B"]].to_numpy())
        ba = bland_altman(sld["SLD_MM_A"].to_numpy(), sld["SLD_MM_B"].to_numpy())
        bar = icc_required()
        out |= {"sld_icc": icc.icc, "sld_icc_ci": [icc.ci_low, icc.ci_high],
                "sld_icc_meets_requirement": bool(icc.ci_low >= bar) if np.isfinite(icc.ci_low) else False,
                "sld_icc_point_meets_requirement": bool(icc.icc >= bar),
                "sld_bias_mm": ba.bias, "sld_loa_mm": [ba.loa_low, ba.loa_high]}
    follow = visits[(visits["RECIST_OVR_A"] != "") & (visits["RECIST_OVR_B"] != "")]
    if len(follow):
        kappa = cohen_kappa(follow["RECIST_OVR_A"].tolist(), follow["RECIST_OVR_B"].tolist())
        out |= {"n_visits": len(follow), "visit_kappa": kappa.kappa, "visit_kappa_ci": [kappa.ci_low, kappa.ci_high],
                "visit_agreement": kappa.observed}
    subjects = first.subjects.merge(second.subjects, on="USUBJID", suffixes=("_A", "_B"))
    if len(subjects):
        bor = cohen_kappa(subjects["BOR_A"].tolist(), subjects["BOR_B"].tolist())
        out |= {"n_subjects": len(subjects), "bor_kappa": bor.kappa, "bor_agreement": bor.observed}
    return out


def reader_agreement(assessments: Mapping[str, Assessment], adjudicated: Adjudicated) -> dict[str, object]:
    """Inter-reader, intra-reader and adjudication statistics of a double read (JSON-serialisable).

    ``adjudication_rate`` is the share of subjects that needed (or still need) an adjudicator;
    ``adjudicator_agreement`` counts, per reader, how often the adjudicator chose that reader.
    """
    readers = primary_pair(assessments)
    report: dict[str, object] = {"readers": list(readers), "icc_required": icc_required()}
    if len(readers) == 2:
        report["inter_reader"] = pair_agreement(assessments[readers[0]], assessments[readers[1]])
    record = adjudicated.record
    needed = record["STATUS"].isin({"ADJUDICATED", "PENDING"})
    report["adjudication_rate"] = float(needed.mean()) if len(record) else float("nan")
    report["adjudicated"] = int((record["STATUS"] == "ADJUDICATED").sum())
    report["pending"] = int((record["STATUS"] == "PENDING").sum())
    chosen = record.loc[record["STATUS"] == "ADJUDICATED", "CHOSEN_READER"].value_counts()
    report["adjudicator_agreement"] = {r: int(chosen.get(r, 0)) for r in readers}
    report["intra_reader"] = {
        session: pair_agreement(assessments[primary_reader(session)], assessments[session])
        for session in sorted(assessments)
        if SESSION_MARK in session and primary_reader(session) in assessments
    }
    return report
