"""``metrics.json``: per-site statistics (computed at each site) and pooled statistics (from aggregates only).

Inputs are the site-local ``predictions.csv`` files (``USUBJID, MODE, SCORE, LABEL, PFS_DAYS, PFS_EVENT``,
optionally ``DHI`` and ``SPLIT``), optionally the site's response assessment (``subjects.csv``, ``visits.csv`` of
:mod:`evaluation.response`) and the cut-offs fixed on training data. The site is read from the USUBJID
(``STUDYID-SITEID-NNNN``). Patient rows are only ever read per site; the pooled block is computed from the
sum of the sites' aggregate vectors (:mod:`evaluation.pooled`).

Which patients judge the model (``SPLIT``): a federated site scores *all* its patients with the final
global model and marks each row ``train`` (the patient trained the model) or ``test`` (held out by the
site's seeded 75/25 split). When the column is present, every statistic that uses the score — AUC,
sensitivity/specificity/PPV/NPV/accuracy, Brier and calibration, KM and log-rank by predicted group, the
C-index of the full score, model-vs-reference kappa — is computed on the ``test`` rows only (``n_heldout``
says how many), per site and pooled. Statistics of the reference endpoint that do not use the score (ORR,
PFS overall and by reference response, DHI, reader agreement, CONSORT) keep every analysed patient. Without
the column every row counts as held-out: a centralized run writes out-of-fold scores (each patient scored by
a model that did not train on it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.exceptions import EvaluationInputError, NotEstimableError, PooledStatisticsError
from evaluation.pooled import (
    MODE_POPULATIONS,
    MODES,
    AggregateCodec,
    AggregateLayout,
    PlainCodec,
    SiteInputs,
    Suppression,
    median_block,
    orr_summary,
    pool,
    pooled_metrics,
    site_aggregate,
    suppress_small_cells,
)
from evaluation.pooled_cox import METHOD as COX_POOLED_METHOD
from evaluation.pooled_cox import SiteSurvival, fit_pooled_cox
from evaluation.stats import METHODS as STATS_METHODS
from evaluation.stats import auc_estimate, binary_metrics, brier_score
from evaluation.survival import METHODS as SURVIVAL_METHODS
from evaluation.survival import concordance, cox_hazard_ratio, exact_logrank, kaplan_meier, landmark, risk_table

log = logging.getLogger(__name__)

PREDICTION_COLUMNS: tuple[str, ...] = ("USUBJID", "MODE", "SCORE", "LABEL", "PFS_DAYS", "PFS_EVENT")
SPLIT_VALUES: tuple[str, ...] = ("train", "test")
HELDOUT_BASIS = "held-out patients of each site (seeded 75/25 split; training patients excluded)"
ALL_BASIS = "all analysed patients (no SPLIT column: scores are out-of-fold, as a centralized run writes them)"


@dataclass(frozen=True)
class SiteData:
    """One site's patient-level evaluation inputs (read at the site, never sent)."""

    site: str
    predictions: pd.DataFrame
    subjects: pd.DataFrame | None = None
    visits: pd.DataFrame | None = None
    populations: pd.DataFrame | None = None  # the site's populations.csv (evaluation.populations)


def read_predictions(path: Path) -> pd.DataFrame:
    """Read and validate a ``predictions.csv``; the error names the file, the problem and the fix."""
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise EvaluationInputError(f"cannot read predictions {path}: {exc}") from exc
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise EvaluationInputError(
            f"{path} lacks column(s) {missing}; predictions.csv needs {list(PREDICTION_COLUMNS)} (optional DHI)"
        )
    bad_modes = sorted(set(frame["MODE"]) - set(MODES))
    if bad_modes:
        raise EvaluationInputError(f"{path}: MODE must be one of {list(MODES)}, but held {bad_modes}")
    scores = pd.to_numeric(frame["SCORE"], errors="coerce")
    if scores.isna().any() or (scores < 0).any() or (scores > 1).any():
        row = int(np.flatnonzero(scores.isna() | (scores < 0) | (scores > 1))[0])
        raise EvaluationInputError(
            f"{path} row {row + 2}: SCORE must be a probability in [0, 1], but was {frame['SCORE'].iloc[row]!r}"
        )
    if "SPLIT" in frame.columns:
        _check_split(frame, path)
    frame["SITEID"] = frame["USUBJID"].astype(str).map(site_of)
    return frame


def _check_split(frame: pd.DataFrame, path: Path) -> None:
    """``SPLIT`` holds only ``train``/``test``, one value per subject across its rows."""
    values = frame["SPLIT"].astype(str).str.strip()
    bad = ~values.isin(SPLIT_VALUES)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise EvaluationInputError(
            f"{path} row {row + 2}: SPLIT must be one of {list(SPLIT_VALUES)}, but was {frame['SPLIT'].iloc[row]!r}; "
            "mark each patient 'train' (it trained the model) or 'test' (held out), or drop the column"
        )
    frame["SPLIT"] = values
    mixed = frame.groupby("USUBJID")["SPLIT"].nunique()
    if (mixed > 1).any():
        raise EvaluationInputError(
            f"{path}: subject {mixed[mixed > 1].index[0]!r} is both 'train' and 'test' in SPLIT; a patient is either "
            "held out or not, in every mode"
        )


def site_of(usubjid: str) -> str:
    """SITEID of a ``STUDYID-SITEID-NNNN`` subject id."""
    parts = usubjid.split("-")
    if len(parts) != 3:
        raise EvaluationInputError(f"USUBJID {usubjid!r} is not STUDYID-SITEID-NNNN; check the predictions file")
    return parts[1]


def _wide(pred: pd.DataFrame) -> pd.DataFrame:
    """One row per subject: the score per mode (NaN where the subject has no row in that mode), each mode's own
    task label ``LABEL_<mode>`` (early: response; full: durable benefit; NaN where undefined or no row), the
    reference response ``LABEL`` (= ``LABEL_early``: the early task predicts response as registered), and the
    per-subject columns (PFS, optional DHI and SPLIT) of the subject's first row."""
    wide = pred.pivot_table(index="USUBJID", columns="MODE", values="SCORE", aggfunc="first")
    wide = wide.reindex(columns=list(MODES))
    wide.columns.name = None
    first = pred.drop_duplicates("USUBJID").set_index("USUBJID").loc[wide.index]
    optional = tuple(c for c in ("DHI", "SPLIT") if c in pred.columns)
    for column in ("PFS_DAYS", "PFS_EVENT", *optional):
        wide[column] = first[column]
    labels = pred.pivot_table(index="USUBJID", columns="MODE", values="LABEL", aggfunc="first").reindex(wide.index)
    for mode in MODES:
        wide[f"LABEL_{mode}"] = pd.to_numeric(labels[mode], errors="coerce") if mode in labels.columns else np.nan
    wide["LABEL"] = wide["LABEL_early"]
    return wide


def scored(data: SiteData) -> pd.DataFrame:
    """One row per subject the evaluation uses (:func:`_wide`), with the subject sets as boolean columns:

    - ``EVAL_<mode>``: the mode scores the subject — in the mode's population (:data:`MODE_POPULATIONS`: early
      EARLYFL, full EFFFL), a row in that mode and a finite own label;
    - ``EFFFL``: the reference endpoints (ORR, PFS, DHI, responder HR) count the subject, with ``LABEL``;
    - ``PFSFL``: PFS statistics use the subject (within EFFFL).

    Without the site's populations a mode's population is every subject with a row in it, and the reference
    subjects are those scored in every mode (T0–T2 scanned: the EFFFL of a populations file). A predicted
    subject outside EARLYFL ∪ EFFFL is left out with a warning.

    Raises
    ------
    EvaluationInputError
        A reference subject has no early-mode label (the reference response is read from the early rows).
    """
    wide = _wide(data.predictions)
    if data.populations is None:
        reference = wide[list(MODES)].notna().all(axis=1).to_numpy()
        pfs = reference
        population = {m: wide[m].notna().to_numpy() for m in MODES}
    else:
        from evaluation.populations import members, with_later_flags

        flags = with_later_flags(data.populations, f"site {data.site} populations")
        sets = {flag: members(flags, flag) for flag in ("EARLYFL", "EFFFL", "PFSFL")}
        outside = sorted(set(wide.index) - sets["EARLYFL"] - sets["EFFFL"])
        if outside:
            log.warning("site %s: %d predicted subject(s) are in neither analysis population EARLYFL nor EFFFL "
                        "(e.g. %s); left out", data.site, len(outside), outside[0])
            wide = wide.drop(index=outside)
        reference = wide.index.isin(sets["EFFFL"])
        pfs = reference & wide.index.isin(sets["PFSFL"])
        population = {m: wide.index.isin(sets[MODE_POPULATIONS[m]]) for m in MODES}
    for m in MODES:
        wide[f"EVAL_{m}"] = population[m] & wide[m].notna().to_numpy() & np.isfinite(wide[f"LABEL_{m}"].to_numpy())
    wide["EFFFL"], wide["PFSFL"] = reference, pfs
    unlabelled = wide.index[reference & ~np.isfinite(wide["LABEL"].to_numpy(float))]
    if len(unlabelled):
        raise EvaluationInputError(
            f"site {data.site}: subject {unlabelled[0]!r} (and {len(unlabelled) - 1} more) is analysed but has no "
            "early-mode LABEL; the reference endpoints read the reference response from the early-mode row, so "
            "every analysed subject needs an early-mode row with a 0/1 LABEL")
    return wide


def analysed(data: SiteData) -> pd.DataFrame:
    """The reference subjects of :func:`scored` (``EFFFL`` when the site's populations are known), one row each,
    with ``LABEL`` the reference response (from the early-mode rows) and a boolean ``PFSFL`` column (PFS
    statistics use those rows only). Each mode's own subjects are ``scored(data)[EVAL_<mode>]``: early mode also
    scores the early-mode-only patients of ``EARLYFL`` (T0 + T1, no T2), which are not rows here."""
    frame = scored(data)
    return frame[frame["EFFFL"].to_numpy(bool)].copy()


def heldout_mask(wide: pd.DataFrame) -> np.ndarray:
    """Subjects whose scores may judge the model: ``SPLIT == "test"``, or every subject without the column.

    Returns
    -------
    ndarray of bool, shape (n_subjects,)
    """
    if "SPLIT" not in wide.columns:
        return np.ones(len(wide), dtype=bool)
    return (wide["SPLIT"].astype(str) == "test").to_numpy()


def has_split(data: SiteData) -> bool:
    """Whether the site's predictions mark training and held-out patients (``SPLIT``)."""
    return "SPLIT" in data.predictions.columns


def orr_counts(subjects: pd.DataFrame | None, visits: pd.DataFrame | None, labels: pd.Series,
               enrolled: set[str] | None = None) -> dict[str, int]:
    """Responder counts per ORR definition (RECIST 1.1 / iRECIST, unconfirmed / confirmed) and ``n``.

    The plain keys (:data:`evaluation.pooled.ORR_KEYS`) count the analysed subjects (``labels.index``); the
    ``itt_`` keys (:data:`evaluation.pooled.ORR_ITT_KEYS`) count every enrolled subject (``enrolled``, the
    protocol's ORR denominator; an enrolled subject without a response assessment is a non-responder).
    Without ``enrolled`` the ITT counts equal the analysed ones. Without a response assessment the reference
    label stands in for every definition.
    """
    analysed_ids = set(labels.index.astype(str))
    counts = _responders(subjects, visits, labels, analysed_ids)
    counts["n"] = int(labels.size)
    itt = _responders(subjects, visits, labels, enrolled) if enrolled is not None else dict(counts)
    itt["n"] = len(enrolled) if enrolled is not None else int(labels.size)
    return counts | {f"itt_{k}": v for k, v in itt.items()}


def _responders(subjects: pd.DataFrame | None, visits: pd.DataFrame | None, labels: pd.Series,
                ids: set[str]) -> dict[str, int]:
    if subjects is None:
        k = int(labels[labels.index.isin(ids)].sum())
        return dict.fromkeys(("recist_unconfirmed", "recist_confirmed", "irecist_unconfirmed", "irecist_confirmed"), k)
    from evaluation.protocol import load_protocol
    from evaluation.response.bor import IRECIST, RECIST, confirmed_best_overall_response

    rules = load_protocol().recist
    sub = subjects[subjects["USUBJID"].isin(ids)]
    confirmed_i = 0
    if visits is not None:
        for _, rows in visits[visits["USUBJID"].isin(ids)].groupby("USUBJID"):
            rows = rows[rows["IRECIST_OVR"].fillna("").astype(str) != ""].sort_values("ADY")
            best = confirmed_best_overall_response(rows["ADY"].astype(int).tolist(), rows["IRECIST_OVR"].tolist(),
                                                   IRECIST, rules.sd_min_days, rules.confirm_min_days)
            confirmed_i += best in (IRECIST.cr, IRECIST.pr)
    return {
        "recist_unconfirmed": int(sub["BOR"].isin([RECIST.cr, RECIST.pr]).sum()),
        "recist_confirmed": int(sub["CBOR"].isin([RECIST.cr, RECIST.pr]).sum()),
        "irecist_unconfirmed": int(sub["IBOR"].isin([IRECIST.cr, IRECIST.pr]).sum()),
        "irecist_confirmed": int(confirmed_i),
    }


def _enrolled(data: SiteData) -> set[str] | None:
    if data.populations is None:
        return None
    from evaluation.populations import members

    return members(data.populations, "ITTFL")


def _mode_block(y: np.ndarray, s: np.ndarray, cutoff: float, t: np.ndarray, e: np.ndarray,
                pfs: np.ndarray | None = None) -> dict[str, Any]:
    """Model statistics of one mode; ``pfs`` marks the subjects whose PFS may be used (PFSFL)."""
    pfs = np.ones(y.size, dtype=bool) if pfs is None else pfs
    block: dict[str, Any] = {"cutoff": cutoff, "n": int(y.size), "n_responders": int(y.sum())}
    if y.size == 0:  # a site with no held-out patient: nothing judges the model here
        log.warning("no held-out patient at a site: its model statistics are empty")
        empty = ("auc", "auc_ci", "brier", *(f"{n}{ci}" for n in ("sensitivity", "specificity", "ppv", "npv",
                                                                   "accuracy") for ci in ("", "_ci")))
        reasons = {f"{k}_not_estimable": "no held-out patient at this site" for k in empty if not k.endswith("_ci")}
        return block | dict.fromkeys(empty) | reasons | {"confusion": {"tp": 0, "fp": 0, "tn": 0, "fn": 0}}
    estimate(block, "auc", lambda: auc_estimate(y, s, min_patients_estimate()))
    bm = binary_metrics(y, s, cutoff)
    for name in ("sensitivity", "specificity", "ppv", "npv", "accuracy"):
        prop = getattr(bm, name)
        block[name] = None if np.isnan(prop.estimate) else prop.estimate
        block[f"{name}_ci"] = None if np.isnan(prop.estimate) else [prop.low, prop.high]
        if np.isnan(prop.estimate):
            block[f"{name}_not_estimable"] = f"empty denominator ({name} of 0 subjects)"
    block["confusion"] = {"tp": bm.tp, "fp": bm.fp, "tn": bm.tn, "fn": bm.fn}
    block["brier"] = brier_score(y, s)
    called = (s >= cutoff)[pfs]
    if 0 < called.sum() < called.size:
        chi2, p = exact_logrank(t[pfs], e[pfs], called)
        block.update(logrank_called_chi2=chi2, logrank_called_p=p)
    return block


def site_metrics(data: SiteData, cutoffs: Mapping[str, float]) -> dict[str, Any]:
    """Exact (patient-level) statistics of one site, computed at the site.

    Each mode is judged on its own held-out subjects (:func:`scored` ``EVAL_<mode>`` and :func:`heldout_mask`:
    early on EARLYFL, full on EFFFL) against its own task's label; ``n`` and ``population`` in its block say
    which. ``n_heldout`` counts the held-out subjects scored in any mode; ``c_index_full`` rests on the
    held-out PFS subjects with a full-mode score. The reference endpoints (ORR, PFS, DHI, responder HR) rest on
    all ``n`` analysed (EFFFL) subjects.
    """
    frame = scored(data)
    t, e = frame["PFS_DAYS"].to_numpy(float), frame["PFS_EVENT"].to_numpy(int)
    p = frame["PFSFL"].to_numpy(bool)
    h = heldout_mask(frame)  # the model is judged on held-out patients only; reference endpoints on all
    out: dict[str, Any] = {}
    judged = np.zeros(len(frame), dtype=bool)
    for m in MODES:  # each mode against its own task's label, on its own held-out subjects
        k = h & frame[f"EVAL_{m}"].to_numpy(bool)
        judged |= k
        own = frame[f"LABEL_{m}"].to_numpy(float)[k].astype(int)
        out[m] = _mode_block(own, frame[m].to_numpy(float)[k], float(cutoffs[m]), t[k], e[k], p[k])
        out[m]["population"] = MODE_POPULATIONS[m]
    out["n_heldout"] = int(judged.sum())
    out["model_basis"] = HELDOUT_BASIS if has_split(data) else ALL_BASIS
    hp = h & p & frame["full"].notna().to_numpy()
    if e[hp].sum() and hp.sum() >= min_patients_estimate():
        out["c_index_full"] = concordance(t[hp], e[hp], frame["full"].to_numpy(float)[hp])
    else:
        out["c_index_full"] = None
        out["c_index_full_not_estimable"] = (f"{int(hp.sum())} held-out PFS subject(s) with {int(e[hp].sum())} "
                                             f"event(s); needs >= {min_patients_estimate()} and an event")
    out.update(_reference_endpoints(data, frame[frame["EFFFL"].to_numpy(bool)]))
    return out


def _reference_endpoints(data: SiteData, wide: pd.DataFrame) -> dict[str, Any]:
    """ORR, median PFS, DHI AUC/HR and the responder HR of every analysed subject (no model score used);
    ``wide`` is :func:`analysed`, ``LABEL`` the reference response of the early-mode rows."""
    y = wide["LABEL"].to_numpy(int)
    keep = wide["PFSFL"].to_numpy(bool)  # PFS statistics: the PFS population only
    t, e, yp = wide["PFS_DAYS"].to_numpy(float)[keep], wide["PFS_EVENT"].to_numpy(int)[keep], y[keep]
    out: dict[str, Any] = orr_summary(orr_counts(data.subjects, data.visits, wide["LABEL"], _enrolled(data)))
    out.update(median_block(kaplan_meier(risk_table(t, e))) if t.size else
               {"median_pfs_days": None, "median_pfs_ci": None, "median_pfs_days_not_estimable": "no PFS subject"})
    out["n_pfs"], out["pfs_paramcd"] = int(keep.sum()), PFS_PARAMCD
    out["dhi_auc"] = None
    if "DHI" in wide.columns:
        dhi = wide["DHI"].to_numpy(float)
        estimate(out, "dhi_auc", lambda: auc_estimate(y, dhi, min_patients_estimate()))
        estimate(out, "dhi_hr", lambda: _cox(t, e, dhi[keep] / dhi_hr_unit()))
    estimate(out, "hr_responder", lambda: _cox(t, e, yp))
    out.update(_landmark_endpoints(t, e, response_at_landmark(data, wide)[keep]))
    out["n"] = int(y.size)
    return out


LANDMARK_VISIT = "T1"
#: The PFS every survival statistic uses: predictions' PFS_DAYS/PFS_EVENT are the reference's iRECIST PFS
#: (``IPFS_*``, fl_client.featurize), i.e. ADTTE ``PARAMCD = "IPFS"`` — the same numbers, subject by subject.
PFS_PARAMCD = "IPFS"


def landmark_day() -> float:
    """Study day of the T1 landmark: the end of the protocol's T1 window (every T1 response is known by then)."""
    from evaluation.protocol import load_protocol

    return float(load_protocol().timepoints[LANDMARK_VISIT].window[1])


def response_at_landmark(data: SiteData, wide: pd.DataFrame) -> np.ndarray:
    """Per analysed subject: 1 when the iRECIST response at T1 is iCR/iPR, 0 otherwise, NaN when unknown (no
    assessment, NE). Shape (n,), aligned with ``wide``."""
    out = np.full(len(wide), np.nan)
    if data.visits is None or "VISIT" not in data.visits.columns:
        return out
    column = "IRECIST_OVR" if "IRECIST_OVR" in data.visits.columns else "RECIST_OVR"
    t1 = data.visits[data.visits["VISIT"] == LANDMARK_VISIT].drop_duplicates("USUBJID").set_index("USUBJID")[column]
    calls = t1.reindex(wide.index).fillna("").astype(str)
    known = ~calls.isin(["", "NE"])
    out[known.to_numpy()] = calls[known].isin(["iCR", "iPR", "CR", "PR"]).to_numpy(float)
    return out


def _landmark_endpoints(t: np.ndarray, e: np.ndarray, response: np.ndarray) -> dict[str, Any]:
    """PFS by response at the T1 landmark, from the landmark on (no guarantee-time bias; docs/report.md)."""
    day = landmark_day()
    lt, le, group, kept = landmark(t, e, response, day) if t.size else (t, e, np.zeros(0, bool), np.zeros(0, bool))
    out: dict[str, Any] = {"landmark_day": day, "landmark_n": int(kept.sum())}
    estimate(out, "hr_landmark_t1", lambda: _cox(lt, le, group.astype(float)))
    if 0 < group.sum() < group.size and le.sum():
        out["logrank_landmark_chi2"], out["logrank_landmark_p"] = exact_logrank(lt, le, group)
    return out


def _cox(t: np.ndarray, e: np.ndarray, x: np.ndarray) -> tuple[float, tuple[float, float], float]:
    if t.size < min_patients_estimate():
        raise NotEstimableError(f"{t.size} PFS subject(s), fewer than the protocol's minimum of "
                                f"{min_patients_estimate()}")
    if not e.sum():
        raise NotEstimableError("no PFS event")
    if np.ptp(x) == 0:
        raise NotEstimableError("the covariate does not vary (one group only)")
    return cox_hazard_ratio(t, e, x)


def estimate(block: dict[str, Any], key: str, compute: Any) -> None:
    """Put ``compute()`` — ``(value, (low, high))`` or ``(value, (low, high), p)`` — under ``key``, ``key_ci``
    (and ``key_p``); when it raises :class:`NotEstimableError` the values are null and ``key_not_estimable``
    holds the reason (the one convention of ``metrics.json``, docs/report.md)."""
    try:
        value, ci, *rest = compute()
    except NotEstimableError as exc:
        block.update({key: None, f"{key}_ci": None, f"{key}_not_estimable": str(exc)})
        if key.endswith("hr") or key.startswith("hr"):
            block[f"{key}_p"] = None
        return
    ci = list(ci)
    block.update({key: value, f"{key}_ci": None if any(np.isnan(c) for c in ci) else ci})
    if rest:
        block[f"{key}_p"] = rest[0]


def min_cell_size() -> int:
    """A site contributes to a pooled statistic only with at least this many subjects per cell."""
    from evaluation.protocol import load_protocol

    return load_protocol().statistics.min_cell_size


def min_patients_estimate() -> int:
    """Fewer analysed subjects than this and a site estimate is not estimable (``statistics.min_patients_estimate``)."""
    from evaluation.protocol import load_protocol

    return load_protocol().statistics.min_patients_estimate


def site_inputs(data: SiteData, cutoffs: Mapping[str, float]) -> SiteInputs:
    """The site's inputs to its aggregate vector: every subject of :func:`scored`, each mode's own labels on
    its own subjects (NaN elsewhere), the reference subjects (EFFFL) with the reference response."""
    frame = scored(data)
    reference = frame["EFFFL"].to_numpy(bool)
    analysed_rows = frame[reference]
    return SiteInputs(
        labels=np.where(reference, frame["LABEL"].to_numpy(float), 0).astype(int),  # read where reference only
        pfs_days=frame["PFS_DAYS"].to_numpy(float),
        pfs_event=frame["PFS_EVENT"].to_numpy(int),
        scores={m: frame[m].to_numpy(float) for m in MODES},
        cutoffs=cutoffs,
        orr_counts=orr_counts(data.subjects, data.visits, analysed_rows["LABEL"].astype(int), _enrolled(data)),
        dhi=frame["DHI"].to_numpy(float) if "DHI" in frame.columns else None,
        pfs_included=frame["PFSFL"].to_numpy(bool),
        landmark_response=response_at_landmark(data, frame),
        landmark_day=landmark_day(),
        mode_labels={m: np.where(frame[f"EVAL_{m}"].to_numpy(bool), frame[f"LABEL_{m}"].to_numpy(float), np.nan)
                     for m in MODES},
        reference_included=reference,
    )


def site_evaluation_aggregate(data: SiteData, cutoffs: Mapping[str, float],
                              layout: AggregateLayout | None = None) -> np.ndarray:
    """The site's aggregate vector for ``metrics.json``'s pooled block.

    The per-mode (model) blocks count each mode's own held-out subjects only (:func:`heldout_mask`, ``EVAL_<mode>``
    of :func:`scored`); the reference blocks (KM overall and by reference response, ORR, DHI) every analysed
    (EFFFL) subject. Without ``SPLIT`` this is
    :func:`evaluation.pooled.site_aggregate` of all rows.

    Returns
    -------
    ndarray, shape (layout.size,)
    """
    layout = layout or AggregateLayout()
    every = site_aggregate(site_inputs(data, cutoffs), layout)
    if not has_split(data):
        return every
    held = data.predictions[data.predictions["SPLIT"] == "test"].reset_index(drop=True)
    if held.empty:
        heldout = np.zeros(layout.size)
    else:
        heldout = site_aggregate(site_inputs(SiteData(data.site, held, data.subjects, data.visits, data.populations),
                                             cutoffs), layout)
    start = 0
    for name, n in layout.blocks():
        if name.split(".", 1)[0] in MODES:
            every[start:start + n] = heldout[start:start + n]
        start += n
    return every


def _basis(sites: list[SiteData]) -> str:
    split = [d.site for d in sites if has_split(d)]
    if len(split) == len(sites):
        return HELDOUT_BASIS
    if not split:
        return ALL_BASIS
    rest = [d.site for d in sites if not has_split(d)]
    return f"held-out patients at {', '.join(split)} (SPLIT column); all analysed patients at {', '.join(rest)}"


def compute_metrics(
    sites: list[SiteData],
    cutoffs: Mapping[str, float],
    *,
    codec: AggregateCodec | None = None,
    layout: AggregateLayout | None = None,
    cutoff_source: str = "given",
) -> dict[str, Any]:
    """The whole ``metrics.json`` document: per-site blocks, the pooled block, and the methods used."""
    if not sites:
        raise EvaluationInputError("no site predictions found; each site must provide predictions.csv")
    layout = layout or AggregateLayout()
    codec = codec or PlainCodec()
    per_site = {d.site: site_metrics(d, cutoffs) for d in sites}
    vectors, suppressed = [], []
    for d in sites:  # what leaves each site is checked against the protocol's minimum cell size first
        vector, dropped = suppress_small_cells(site_evaluation_aggregate(d, cutoffs, layout), layout,
                                               min_cell_size(), d.site)
        vectors.append(vector)
        suppressed += dropped
    summed = pool(vectors, codec, layout)
    pooled = pooled_metrics(summed, cutoffs, layout)
    pooled["n_heldout"] = pooled_heldout_n(pooled)
    cox = pooled_dhi_hazard_ratio(sites, codec)
    suppressed += [Suppression(**s) for s in cox.pop("suppressed", [])]
    pooled.update(cox)
    pooled["suppressed"] = [s.as_dict() for s in suppressed]
    pooled["min_cell_size"] = min_cell_size()
    pooled["pfs_paramcd"] = PFS_PARAMCD
    for item in suppressed:
        log.warning("site %s contributes nothing to pooled %s: %s", item.site, item.statistic, item.reason)
    log.info("pooled %d site(s), %d subject(s) with %s", len(sites), pooled["n"], type(codec).__name__)
    return {
        "pooled": pooled,
        "sites": per_site,
        "cutoffs": dict(cutoffs),
        "cutoff_source": cutoff_source,
        "model_basis": _basis(sites),
        "pooling": {"codec": type(codec).__name__, "layout_digest": layout.digest, "score_bins": layout.score_bins,
                    "pfs_grid_days": [layout.pfs_grid_days[0], layout.pfs_grid_days[1] - layout.pfs_grid_days[0],
                                      layout.pfs_grid_days[-1]]},
        "methods": STATS_METHODS | SURVIVAL_METHODS | {"cox_pooled": COX_POOLED_METHOD},
    }


def pooled_heldout_n(pooled: Mapping[str, Any]) -> int:
    """Subjects in the summed model blocks (held-out where SPLIT says): those of the widest mode — early mode's
    EARLYFL contains full mode's EFFFL, so its n is the union; each mode's own n is in its block."""
    return max(int(pooled[m]["n"]) for m in MODES)


def dhi_hr_unit() -> float:
    """The DHI increment hazard ratios are reported per (``configs/study.yaml`` ``heterogeneity.dhi_hr_unit``)."""
    from evaluation.protocol import load_protocol

    return load_protocol().heterogeneity.dhi_hr_unit


def pooled_dhi_hazard_ratio(sites: list[SiteData], codec: AggregateCodec) -> dict[str, Any]:
    """Pooled Cox HR of PFS per ``dhi_hr_unit`` of DHI, site-stratified, from the sites' encrypted score/information
    sums.

    Returns ``dhi_hr``, ``dhi_hr_ci``, ``dhi_hr_p``, ``dhi_hr_method`` and ``dhi_hr_iterations`` (all None
    when a site has no DHI or the model cannot be fitted; the reason in ``dhi_hr_not_estimable``), and
    ``suppressed``: the sites left out for fewer than ``min_cell_size`` subjects or events.
    """
    empty: dict[str, Any] = {"dhi_hr": None, "dhi_hr_ci": None, "dhi_hr_p": None, "dhi_hr_method": COX_POOLED_METHOD,
                             "dhi_hr_iterations": None, "dhi_hr_unit": dhi_hr_unit()}
    strata, suppressed = [], []
    for data in sites:
        wide = analysed(data)
        if "DHI" not in wide.columns:
            log.info("pooled DHI HR skipped: site %s reports no DHI", data.site)
            return empty | {"dhi_hr_not_estimable": f"site {data.site} reports no DHI"}
        keep = np.isfinite(wide["DHI"].to_numpy(float)) & wide["PFSFL"].to_numpy(bool)
        events = int(wide["PFS_EVENT"].to_numpy(int)[keep].sum())
        if min(int(keep.sum()), events) < min_cell_size():
            suppressed.append({"site": data.site, "statistic": "dhi_hr", "reason": f"{int(keep.sum())} subjects, "
                               f"{events} events (< min_cell_size {min_cell_size()})"})
            continue
        strata.append(SiteSurvival.of(wide["PFS_DAYS"].to_numpy(float)[keep], wide["PFS_EVENT"].to_numpy(int)[keep],
                                      wide["DHI"].to_numpy(float)[keep] / dhi_hr_unit()))
    try:
        fit = fit_pooled_cox(strata, codec)
    except PooledStatisticsError as exc:
        log.warning("pooled DHI HR not estimable: %s", exc)
        return empty | {"dhi_hr_not_estimable": str(exc), "suppressed": suppressed}
    return {"dhi_hr": float(fit.hr[0]), "dhi_hr_ci": [float(fit.hr_low[0]), float(fit.hr_high[0])],
            "dhi_hr_p": float(fit.p[0]), "dhi_hr_method": COX_POOLED_METHOD, "dhi_hr_iterations": fit.iterations,
            "dhi_hr_unit": dhi_hr_unit(), "suppressed": suppressed}
