"""What each model task could reach on a synthetic cohort: the generator's oracle and the features' upper bound.

- **Oracle**: the generator's per-subject Bayes score of the task from the latents fixed at the mode's
  scans (:func:`synth.outcomes.task_oracles`: ``ORACLE_EARLY_P``, ``ORACLE_DCB6_P``, ``ORACLE_DCB12_P``,
  ``ORACLE_PSEUDO_SCORE``), scored here against the *pipeline's* labels on exactly the evaluated patients.
- **Feature bound**: the same task fitted on *noise-free* measurements — the true target-lesion SLD at each
  of the mode's scans (log, change from baseline), a new-lesion flag per scan and the clinical covariates —
  by the nested-CV penalised logistic regression of :mod:`fl_client.baselines`, on the same folds as the
  models. A model of the images can beat it (the images carry more than the SLD), but a gap to it is the
  part of the oracle gap that reader noise and the SLD's summary do not explain.

Cohorts written before the per-task oracles existed (``truth/subjects.csv`` without ``ORACLE_DCB6_P``) are
re-planned from ``cohort.json`` (preset, seed, sites; no pixels) and checked subject by subject against
``truth/subjects.csv``; the oracles are then computed from the re-planned latents.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fl_client.baselines import linear_fold
from fl_client.train import MODE_TIMEPOINTS, PatientRecord

#: task → (mode whose model scores it, label key of PatientRecord.responder or "pseudo", oracle column)
TASKS: dict[str, tuple[str, str, str]] = {
    "early": ("early", "early", "ORACLE_EARLY_P"),
    "full": ("full", "full", "ORACLE_DCB6_P"),
    "dcb12": ("full", "dcb12", "ORACLE_DCB12_P"),
    "pseudo": ("early", "pseudo", "ORACLE_PSEUDO_SCORE"),
}


def truth_dir(cohort: Path) -> Path | None:
    """``COHORT/truth`` or, for a layout with the generator's output under ``cohort/``, ``COHORT/cohort/truth``."""
    for candidate in (cohort / "truth", cohort / "cohort" / "truth"):
        if (candidate / "subjects.csv").exists():
            return candidate
    return None


def replan(truth: Path) -> dict[str, object]:
    """USUBJID → the generator's re-planned patient, verified against ``truth/subjects.csv``."""
    from synth.cohort import plan_cohort
    from synth.presets import get_preset

    meta = json.loads((truth.parent / "cohort.json").read_text())
    subjects = pd.read_csv(truth / "subjects.csv").set_index("USUBJID")
    counts = subjects.groupby("SITEID").size()
    per_site = int(counts.iloc[0]) if counts.nunique() == 1 else None
    plan = plan_cohort(len(meta["sites"]), per_site, int(meta["seed"]), get_preset(meta["preset"]), list(meta["sites"]))
    patients = {p.usubjid: p for ps in plan.values() for p in ps}
    same = [u for u, p in patients.items() if u in subjects.index and int(subjects.loc[u, "PFS_DAYS"]) == p.pfs_days
            and int(subjects.loc[u, "RESPONDER"]) == int(p.responder)]
    if len(same) != len(subjects):
        raise SystemExit(f"re-planning {truth.parent} reproduced {len(same)} of {len(subjects)} subjects; the "
                         "generator changed since the cohort was written: regenerate it for per-task oracles")
    return patients  # type: ignore[return-value]


def oracle_table(truth: Path) -> tuple[pd.DataFrame, dict[str, object]]:
    """Per-subject oracle scores of every task (index USUBJID), and the re-planned patients."""
    from synth.outcomes import pseudo_oracle, task_oracles

    subjects = pd.read_csv(truth / "subjects.csv").set_index("USUBJID")
    patients = replan(truth)
    if "ORACLE_DCB6_P" not in subjects.columns:
        rows = {u: task_oracles(p) for u, p in patients.items()}  # type: ignore[arg-type]
        subjects = subjects.drop(columns=["ORACLE_EARLY_P"]).join(pd.DataFrame.from_dict(rows, orient="index"))
    # the pipeline's T1 iUPD set differs from the truth's progression at T1: score every subject
    subjects["ORACLE_PSEUDO_SCORE"] = [pseudo_oracle(patients[u]) for u in subjects.index]  # type: ignore[arg-type]
    return subjects, patients


def noise_free_features(patient: object, record: PatientRecord, mode: str) -> np.ndarray:
    """True target SLD (log, change from baseline) and new-lesion flag at each scan of ``mode``, then clinical."""
    t = MODE_TIMEPOINTS[mode]
    targets = [les for les in patient.lesions if les.category == "TARGET"]  # type: ignore[attr-defined]
    sld = [sum(les.sizes[i] for les in targets) for i in range(t)]
    new = [float(any(les.first_visit == i for les in patient.lesions)) for i in range(1, t)]  # type: ignore[attr-defined]
    change = [s / max(sld[0], 1e-6) - 1.0 for s in sld[1:]]
    return np.array([*(math.log1p(s) for s in sld), *change, *new, *record.clinical.tolist()])


@dataclass(frozen=True)
class TaskReference:
    """Oracle and feature-bound AUCs of one task on the evaluated patients (pipeline labels)."""

    task: str
    n: int
    positives: int
    oracle_auc: float | None
    bound_auc: float | None


def _label(record: PatientRecord, key: str) -> float:
    return record.pseudo if key == "pseudo" else record.responder.get(key, math.nan)


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if 0 < y.sum() < y.size else None


def task_reference(
    task: str, records: list[PatientRecord], oracles: pd.DataFrame, patients: dict[str, object], k: int, seed: int,
) -> TaskReference:
    """Oracle AUC and feature-bound AUC of ``task`` on the records that have its scans and label.

    The bound is out-of-fold over the models' own split (:func:`fl_client.centralized.patient_folds` with
    ``k`` and ``seed`` on the same patients, so early and full mode use exactly the models' folds), or
    leave-one-out for the small pseudoprogression task.
    """
    from fl_client.centralized import patient_folds

    mode, key, column = TASKS[task]
    kept = [r for r in records if r.n_scans >= MODE_TIMEPOINTS[mode] and math.isfinite(_label(r, key))]
    y = np.array([_label(r, key) for r in kept], dtype=int)
    if not kept or not 0 < y.sum() < y.size:
        return TaskReference(task, int(y.size), int(y.sum()), None, None)
    oracle = _auc(y, oracles.loc[[r.usubjid for r in kept], column].to_numpy(float))
    x = np.stack([noise_free_features(patients[r.usubjid], r, mode) for r in kept])
    if key == "pseudo":
        folds = [([j for j in range(len(kept)) if j != i], [i]) for i in range(len(kept))]
    else:
        folds = list(patient_folds(kept, key, k, seed))
    score = np.full(len(kept), np.nan)
    for train, test in folds:
        score[test] = linear_fold(x[train], y[train], x[test], seed, 0)[0]
    return TaskReference(task, int(y.size), int(y.sum()), oracle, _auc(y, score))
