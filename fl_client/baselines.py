"""The fixed and linear baselines every network is compared with, and out-of-fold cut-offs.

- ``logreg_wide``: an L2-penalised logistic regression on *exactly* the fusion model's wide-path inputs —
  the level and slope per 30 days (and, at three scans, the curvature) of the global columns the wide path
  reads (``model.wide_groups``: volume and the readers' SLD), plus the clinical covariates. The penalty is
  chosen by an inner cross-validation on the training fold only (nested CV), so it is the fair linear
  twin of the wide path, trained by a convex solver instead of Adam.
- ``logreg_delta_radiomics``: changes of the image-derived global columns since baseline (T1−T0, and
  T2−T0 at three scans), and ``logreg_delta_radiomics_clinical`` the same plus the clinical covariates;
  same nested penalty choice.
- ``recist_last``: the RECIST 1.1 call at the mode's last scan (T1 early, T2 full): CR/PR ⇒ responder,
  a fixed rule with nothing to fit.

Cut-offs (Youden) come from *out-of-fold* predictions inside the training fold
(:func:`oof_cutoff`), not from the in-sample fit, which is optimistic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from evaluation.stats import youden_cutoff
from fl_client.train import MODE_TIMEPOINTS, PatientRecord
from models.decomposition import divided_differences

log = logging.getLogger(__name__)

LINEAR = ("logreg_wide", "logreg_delta_radiomics", "logreg_delta_radiomics_clinical")
BASELINES = (*LINEAR, "recist_last")
RESPONSE_CALLS = {"CR", "PR"}
#: Inverse L2 strengths searched by the inner cross-validation.
C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def cutoff(labels: list[float] | np.ndarray, scores: np.ndarray) -> float:
    """Youden cut-off, or 0.5 when one class is missing (no Youden point exists)."""
    labels = np.asarray(labels)
    if labels.min() == labels.max():
        return 0.5
    return youden_cutoff(labels, scores)


def inner_folds(labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Stratified inner folds of a training fold, or None when a class has fewer than 2 patients."""
    k = min(k, int(min(labels.sum(), len(labels) - labels.sum())))
    if k < 2:
        return None
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))


def oof_cutoff(
    labels: np.ndarray, fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray], k: int, seed: int,
    in_sample: np.ndarray | None = None,
) -> float:
    """Youden cut-off on out-of-fold predictions inside a training fold.

    ``fit_predict(train_index, test_index)`` fits on the first and scores the second. ``k`` inner folds;
    ``k < 2`` (or too few patients of a class) falls back to ``in_sample`` scores (logged).
    """
    folds = inner_folds(labels, k, seed) if k >= 2 else None
    if folds is None:
        if in_sample is None:
            return 0.5
        if k >= 2:
            log.info("too few patients per class for inner cut-off folds: in-sample cut-off")
        return cutoff(labels, in_sample)
    scores = np.empty(len(labels))
    for train, test in folds:
        scores[test] = fit_predict(train, test)
    return cutoff(labels, scores)


def wide_features(
    records: list[PatientRecord], mode: str, columns: list[int] | None, nodes: bool = False
) -> np.ndarray:
    """The wide path's inputs, (N, S · (G' [+ F]) + C): components of the chosen global columns (and, with
    ``nodes``, of the node features averaged over each scan's valid sub-regions), then clinical.

    Components as :class:`models.fusion.WidePath` forms them (:func:`models.decomposition.divided_differences`
    on the real scan days): level, slope per 30 days and, at three scans, curvature.
    """
    t = MODE_TIMEPOINTS[mode]
    index = slice(None) if columns is None else columns
    values = torch.stack([r.globals_[:t, index] for r in records]).float()
    if nodes:
        pooled = []
        for r in records:  # graphs may differ in size: pool each on its own
            valid = r.graph.node_valid[:t].float().unsqueeze(-1)
            pooled.append((r.graph.x[:t].float() * valid).sum(1) / valid.sum(1).clamp(min=1.0))
        values = torch.cat([values, torch.stack(pooled)], dim=-1)
    days = torch.stack([r.graph.days[:t] for r in records]).float()
    parts = [component.flatten(1) for _, component, _ in divided_differences(values, days)]
    clinical = torch.stack([r.clinical for r in records]).float()
    return torch.cat([*parts, clinical], dim=-1).numpy()


def delta_features(
    records: list[PatientRecord], mode: str, columns: list[int] | None = None, clinical: bool = False
) -> np.ndarray:
    """Delta-radiomics: global features at each later time point minus baseline, (N, (T − 1) · G' [+ C]).

    ``columns`` selects the image-derived columns (G' of them; default all); ``clinical`` appends the
    covariates.
    """
    t = MODE_TIMEPOINTS[mode]
    index = slice(None) if columns is None else columns
    deltas = np.stack([(r.globals_[1:t, index] - r.globals_[:1, index]).flatten().numpy() for r in records])
    if not clinical:
        return deltas
    return np.concatenate([deltas, np.stack([r.clinical.numpy() for r in records])], axis=1)


def penalised_logreg(seed: int, inner: int = 3) -> Pipeline:
    """Standardize, then an L2 logistic regression whose C is chosen by inner CV AUC (nested in the caller's CV)."""
    return make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=list(C_GRID), cv=StratifiedKFold(inner, shuffle=True, random_state=seed), scoring="roc_auc",
        max_iter=5000, l1_ratios=(0.0,), use_legacy_attributes=False))  # pure L2; scikit-learn 1.10 layout


def linear_fold(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int, cutoff_folds: int
) -> tuple[np.ndarray, float]:
    """Test-fold probabilities of the nested-CV penalised logistic regression and its out-of-fold cut-off."""
    if y_train.min() == y_train.max():
        return np.full(len(x_test), float(y_train[0])), 0.5
    def model(y: np.ndarray) -> Pipeline:
        fewest = min(int(y.sum()), int(len(y) - y.sum()))
        if fewest >= 2:
            return penalised_logreg(seed, inner=min(3, fewest))
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))  # too few for inner CV

    fitted = model(y_train).fit(x_train, y_train)

    def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        if y_train[train].min() == y_train[train].max():
            return np.full(len(test), float(y_train[train][0]))
        return model(y_train[train]).fit(x_train[train], y_train[train]).predict_proba(x_train[test])[:, 1]

    cut = oof_cutoff(y_train, fit_predict, cutoff_folds, seed, fitted.predict_proba(x_train)[:, 1])
    return fitted.predict_proba(x_test)[:, 1], cut


def recist_scores(records: list[PatientRecord], mode: str) -> np.ndarray:
    """1 for a CR/PR call at the mode's last scan (T1 early, T2 full), else 0 (missing calls are logged)."""
    calls = [r.recist_t1 if mode == "early" else r.recist_t2 for r in records]
    missing = [r.usubjid for r, c in zip(records, calls, strict=True) if c is None]
    if missing:
        log.warning("%d patient(s) lack a RECIST call at the %s mode's last scan (e.g. %s): scored non-response",
                    len(missing), mode, missing[0])
    return np.array([float(c in RESPONSE_CALLS) for c in calls])


def recist_t1_scores(records: list[PatientRecord]) -> np.ndarray:
    """1 for a CR/PR call at T1, else 0 (:func:`recist_scores` in early mode)."""
    return recist_scores(records, "early")
