"""Centralized (pooled) training: the ceiling the federated model is measured against.

For each mode (``early``: T0+T1 inputs; ``full``: T0–T2) and each held-out scheme (patient-level
stratified cross-validation; leave-one-site-out), every test fold is predicted by models fitted on
the other folds only:

- ``fusion`` (ST-GCN + decomposition Transformer + clinical), ``stgcn`` and ``transformer`` alone;
- ``logreg_delta_radiomics``: scikit-learn logistic regression on the changes of the global features
  since baseline (T1−T0, and T2−T0 in full mode);
- ``recist_t1``: the RECIST 1.1 call at T1 (CR/PR ⇒ responder), a fixed rule with nothing to fit.

Standardization statistics and Youden cut-offs come from the training folds; the test fold only
supplies patients to score. Out-of-fold scores are pooled for the AUC (DeLong 95 % CI,
:func:`evaluation.stats.delong_auc_ci`); sensitivity and specificity count each test patient against
its own fold's training cut-off; the C-index (PFS) uses the pooled out-of-fold risk.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from evaluation.stats import delong_auc_ci, youden_cutoff
from evaluation.survival import concordance
from fl_client.featurize import MEASUREMENT_GROUPS
from fl_client.interpret import Attributions, attribution_rows, integrated_gradients, plot_node_maps
from fl_client.train import (
    MODE_TIMEPOINTS,
    PatientRecord,
    Standardizer,
    assert_no_label_leakage,
    fit,
    predict,
    to_dataset,
)
from models.config import MODEL_KINDS, InputDims, ModelSettings, build_model
from models.exceptions import ModelInputError

log = logging.getLogger(__name__)

NEURAL = tuple(MODEL_KINDS)  # fusion, stgcn, transformer
BASELINES = ("logreg_delta_radiomics", "recist_t1")
RESPONSE_CALLS = {"CR", "PR"}


@dataclass
class OutOfFold:
    """Pooled out-of-fold results of one model: scores, risks, labels and each patient's fold cut-off."""

    usubjid: list[str] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    risk: list[float] = field(default_factory=list)
    label: list[float] = field(default_factory=list)
    cutoff: list[float] = field(default_factory=list)
    pfs_days: list[float] = field(default_factory=list)
    pfs_event: list[bool] = field(default_factory=list)

    def add(self, records: list[PatientRecord], mode: str, score: np.ndarray, risk: np.ndarray | None, cut: float):
        self.usubjid += [r.usubjid for r in records]
        self.score += score.tolist()
        self.risk += (risk if risk is not None else np.full(len(records), np.nan)).tolist()
        self.label += [r.responder[mode] for r in records]
        self.cutoff += [cut] * len(records)
        self.pfs_days += [r.pfs_days for r in records]
        self.pfs_event += [r.pfs_event for r in records]


def node_padding(records: list[PatientRecord], settings: ModelSettings) -> int:
    """Pad graphs to the largest one of the cohort (at most ``model.v_max``; padding costs compute)."""
    return min(settings.model.v_max, max(int(r.graph.x.shape[1]) for r in records))


def records_for(records: list[PatientRecord], mode: str) -> list[PatientRecord]:
    """The records with a defined label in ``mode`` (full mode leaves out benefit decided by T2 or unknown)."""
    kept = [r for r in records if math.isfinite(r.responder[mode])]
    if len(kept) < len(records):
        log.info("%s mode: %d of %d patients have no defined label and are left out", mode,
                 len(records) - len(kept), len(records))
    return kept


def patient_folds(records: list[PatientRecord], mode: str, k: int, seed: int) -> Iterator[tuple[list[int], list[int]]]:
    """Stratified k-fold split by patient (labels of ``mode``)."""
    labels = np.array([r.responder[mode] for r in records])
    k = min(k, int(min(labels.sum(), len(labels) - labels.sum())))
    if k < 2:
        raise ModelInputError(f"cross-validation needs ≥ 2 responders and non-responders, but saw {labels.sum():g}")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for train, test in splitter.split(np.zeros(len(labels)), labels):
        yield train.tolist(), test.tolist()


def site_folds(records: list[PatientRecord]) -> Iterator[tuple[list[int], list[int]]]:
    """Leave-one-site-out split."""
    sites = sorted({r.site for r in records})
    for site in sites:
        yield [i for i, r in enumerate(records) if r.site != site], [i for i, r in enumerate(records) if r.site == site]


def delta_features(records: list[PatientRecord], mode: str, columns: list[int] | None = None) -> np.ndarray:
    """Delta-radiomics: global features at each later time point minus baseline, (N, (T − 1) · G').

    ``columns`` selects the image-derived columns (G' of them; default all): the baseline is *delta-
    radiomics*, so the readers' measurement group is left out (:attr:`PooledCohort.radiomics_columns`).
    """
    t = MODE_TIMEPOINTS[mode]
    index = slice(None) if columns is None else columns
    return np.stack([(r.globals_[1:t, index] - r.globals_[:1, index]).flatten().numpy() for r in records])


def _cutoff(labels: list[float] | np.ndarray, scores: np.ndarray) -> float:
    labels = np.asarray(labels)
    if labels.min() == labels.max():
        return 0.5  # one class in the training fold: no Youden point exists
    return youden_cutoff(labels, scores)


def _neural_fold(
    kind: str, train: list[PatientRecord], test: list[PatientRecord], mode: str, dims: InputDims,
    settings: ModelSettings, device: torch.device, seed: int,
) -> tuple[np.ndarray, np.ndarray, float]:
    scaler = Standardizer.fit(train, mode)
    v_pad = node_padding(train + test, settings)
    train_ds = to_dataset(train, mode, v_pad, scaler)
    torch.manual_seed(seed)  # parameter initialisation (entry-point style seeding, per fit)
    model = build_model(kind, MODE_TIMEPOINTS[mode], dims, settings.model)
    trained, _ = fit(model, train_ds, settings.train, device, torch.Generator().manual_seed(seed))
    cut = _cutoff([r.responder[mode] for r in train], predict(trained, train_ds, device)["response"])
    out = predict(trained, to_dataset(test, mode, v_pad, scaler), device)
    return out["response"], out["risk"], cut


def _logreg_fold(
    train: list[PatientRecord], test: list[PatientRecord], mode: str, columns: list[int] | None
) -> tuple[np.ndarray, float]:
    x_train, y_train = delta_features(train, mode, columns), np.array([r.responder[mode] for r in train])
    if y_train.min() == y_train.max():
        return np.full(len(test), float(y_train[0])), 0.5
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    model.fit(x_train, y_train)
    cut = _cutoff(y_train, model.predict_proba(x_train)[:, 1])
    return model.predict_proba(delta_features(test, mode, columns))[:, 1], cut


def recist_t1_scores(records: list[PatientRecord]) -> np.ndarray:
    """1 for a CR/PR call at T1, else 0 (missing calls count as non-response and are logged)."""
    missing = [r.usubjid for r in records if r.recist_t1 is None]
    if missing:
        log.warning("%d patient(s) lack a RECIST call at T1 (e.g. %s): scored non-response", len(missing), missing[0])
    return np.array([float(r.recist_t1 in RESPONSE_CALLS) for r in records])


def cross_fit(
    records: list[PatientRecord],
    mode: str,
    folds: list[tuple[list[int], list[int]]],
    dims: InputDims,
    settings: ModelSettings,
    device: torch.device,
    seed: int,
    kinds: tuple[str, ...] = NEURAL,
    delta_columns: list[int] | None = None,
) -> dict[str, OutOfFold]:
    """Out-of-fold predictions of every model and baseline over ``folds`` (``delta_columns``: the global
    columns of the delta-radiomics baseline, default all)."""
    results = {name: OutOfFold() for name in (*kinds, *BASELINES)}
    for index, (train_idx, test_idx) in enumerate(folds):
        train, test = [records[i] for i in train_idx], [records[i] for i in test_idx]
        for kind in kinds:
            score, risk, cut = _neural_fold(kind, train, test, mode, dims, settings, device, seed + index)
            results[kind].add(test, mode, score, risk, cut)
        score, cut = _logreg_fold(train, test, mode, delta_columns)
        results["logreg_delta_radiomics"].add(test, mode, score, None, cut)
        results["recist_t1"].add(test, mode, recist_t1_scores(test), None, 1.0)
        log.info("%s mode, fold %d/%d done (%d train, %d test)", mode, index + 1, len(folds), len(train), len(test))
    return results


def summarize(oof: OutOfFold) -> dict[str, Any]:
    """AUC with DeLong 95 % CI, sensitivity/specificity at the training-fold cut-offs, C-index, n."""
    y = np.asarray(oof.label, dtype=int)
    s = np.asarray(oof.score, dtype=float)
    cut = np.asarray(oof.cutoff, dtype=float)
    out: dict[str, Any] = {"n": int(y.size), "responders": int(y.sum())}
    if 0 < y.sum() < y.size:
        auc, (low, high) = delong_auc_ci(y, s)
        out.update(auc=auc, auc_ci=[low, high])
    else:
        out.update(auc=None, auc_ci=None)
    called = s >= cut
    tp, fn = int(np.sum(called & (y == 1))), int(np.sum(~called & (y == 1)))
    tn, fp = int(np.sum(~called & (y == 0))), int(np.sum(called & (y == 0)))
    out.update(sensitivity=tp / max(tp + fn, 1), specificity=tn / max(tn + fp, 1), tp=tp, fp=fp, tn=tn, fn=fn)
    risk = np.asarray(oof.risk, dtype=float)
    if np.isfinite(risk).all() and any(oof.pfs_event):
        out["c_index"] = concordance(oof.pfs_days, np.asarray(oof.pfs_event, dtype=int), -risk)
    return out


def _site_predictions(
    oof: dict[str, dict[str, OutOfFold]], records: list[PatientRecord], extra: dict[str, dict[str, float]]
) -> dict[str, list[dict[str, Any]]]:
    """Fusion rows per site in the ``predictions.csv`` layout of :mod:`evaluation.metrics`.

    SCORE is the out-of-fold probability, or — for a patient left out of a mode for want of a label —
    the final model's (it never trained on that patient). LABEL is the primary (early) responder label
    for both modes, as the evaluation stage expects one label per subject.
    """
    by_id = {r.usubjid: r for r in records}
    rows: dict[str, list[dict[str, Any]]] = {}
    for mode, results in oof.items():
        scores = dict(zip(results["fusion"].usubjid, results["fusion"].score, strict=True)) | extra.get(mode, {})
        for usubjid, score in scores.items():
            r = by_id[usubjid]
            rows.setdefault(r.site, []).append({
                "USUBJID": usubjid, "MODE": mode, "SCORE": round(float(score), 6), "LABEL": int(r.responder["early"]),
                "PFS_DAYS": r.pfs_days, "PFS_EVENT": int(r.pfs_event),
            })
    return rows


def evaluate_modes(
    records: list[PatientRecord],
    dims: InputDims,
    settings: ModelSettings,
    device: torch.device,
    seed: int,
    modes: tuple[str, ...] = ("early", "full"),
    kinds: tuple[str, ...] = NEURAL,
    delta_columns: list[int] | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, OutOfFold]]]:
    """Metrics per scheme, mode and model, and the patient-CV out-of-fold results (for predictions.csv).

    Each mode uses the records with a defined label in that mode; the leakage guard runs first. ``kinds``
    are the networks fitted per fold (default :data:`NEURAL`; benchmarks add the diagnostic ``wide`` and
    ``deep`` halves of the fusion model, :data:`models.config.DIAGNOSTIC_KINDS`); ``delta_columns`` as in
    :func:`cross_fit`.
    """
    metrics: dict[str, Any] = {}
    cv_results: dict[str, dict[str, OutOfFold]] = {}
    n_sites = len({r.site for r in records})
    for mode in modes:
        labelled = records_for(records, mode)
        assert_no_label_leakage(labelled, mode)
        folds = list(patient_folds(labelled, mode, settings.evaluation.cv_folds, seed))
        cv_results[mode] = cross_fit(labelled, mode, folds, dims, settings, device, seed, kinds, delta_columns)
        metrics[mode] = {name: summarize(oof) for name, oof in cv_results[mode].items()}
        if "fusion" in cv_results[mode]:
            metrics[mode]["cutoff_fusion"] = float(np.median(cv_results[mode]["fusion"].cutoff))
        if settings.evaluation.leave_one_site_out and n_sites >= 2:
            loso = cross_fit(labelled, mode, list(site_folds(labelled)), dims, settings, device, seed, kinds,
                             delta_columns)
            metrics.setdefault("leave_one_site_out", {})[mode] = {name: summarize(o) for name, o in loso.items()}
    return metrics, cv_results


@dataclass(frozen=True)
class PooledCohort:
    """The pooled centralized data set: every site's records and the column names they share."""

    records: list[PatientRecord]
    global_names: list[str]
    global_groups: list[str]
    clinical_names: list[str]

    @property
    def radiomics_columns(self) -> list[int]:
        """Global columns derived from the images (every group but the readers' measurements)."""
        return [i for i, group in enumerate(self.global_groups) if group not in MEASUREMENT_GROUPS]

    @property
    def dims(self) -> InputDims:
        return InputDims.from_group_names(int(self.records[0].graph.x.shape[-1]), self.global_groups,
                                          len(self.clinical_names))


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def _final_model(
    cohort: PooledCohort, mode: str, settings: ModelSettings, device: torch.device, seed: int, out: Path
) -> dict[str, float]:
    """Fusion trained on every labelled patient: checkpoint (with its resolved config), per-site
    attributions, and the scores of the patients without a label in this mode (USUBJID → probability)."""
    records = records_for(cohort.records, mode)
    scaler = Standardizer.fit(records, mode)
    v_pad = node_padding(cohort.records, settings)
    dataset = to_dataset(records, mode, v_pad, scaler)
    torch.manual_seed(seed)
    model = build_model("fusion", MODE_TIMEPOINTS[mode], cohort.dims, settings.model)
    trained, losses = fit(model, dataset, settings.train, device, torch.Generator().manual_seed(seed))
    (out / "checkpoints").mkdir(exist_ok=True)
    torch.save({"state_dict": trained.state_dict(), "mode": mode, "config": settings.model_dump(mode="json"),
                "dims": asdict(cohort.dims), "v_pad": v_pad, "scaler": asdict(scaler), "losses": losses},
               out / "checkpoints" / f"fusion_{mode}.pt")
    attributions = integrated_gradients(trained, dataset, device)
    valid = dataset.tensors[2].numpy() > 0
    for site in sorted({r.site for r in records}):
        index = [i for i, r in enumerate(records) if r.site == site]
        ids = [records[i].usubjid for i in index]
        part = Attributions(attributions.nodes[index], attributions.globals_[index], attributions.clinical[index],
                            attributions.delta[index])
        rows = attribution_rows(part, ids, mode, cohort.global_names, cohort.clinical_names, valid[index])
        site_dir = out / "sites" / site
        _write_csv(site_dir / f"attributions_{mode}.csv", rows)
        np.savez_compressed(site_dir / f"attributions_{mode}.npz", nodes=part.nodes, usubjid=np.array(ids))
        plot_node_maps(part, ids, site_dir / f"attributions_{mode}.png")
    unlabelled = [r for r in cohort.records if not math.isfinite(r.responder[mode])]
    if not unlabelled:
        return {}
    scores = predict(trained, to_dataset(unlabelled, mode, v_pad, scaler), device)["response"]
    return {r.usubjid: float(p) for r, p in zip(unlabelled, scores, strict=True)}


def run_centralized(
    cohort: PooledCohort, out: Path, settings: ModelSettings, device: torch.device, seed: int,
    oracle_auc: float | None = None,
) -> dict[str, Any]:
    """Evaluate every model and baseline, train the final fusion models and write the run directory.

    Written (atomically: a temporary sibling folder renamed to ``out`` at the end): ``metrics.json``,
    ``cutoffs.json``, ``config.json``, ``checkpoints/fusion_<mode>.pt`` and, per site,
    ``sites/<SITE>/predictions.csv`` (fusion, patient-CV out-of-fold) and attributions.
    """
    if out.exists():
        raise FileExistsError(f"run directory {out} already exists; choose a new --out or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        start = time.perf_counter()
        metrics, cv_results = evaluate_modes(cohort.records, cohort.dims, settings, device, seed,
                                             delta_columns=cohort.radiomics_columns)
        extra = {mode: _final_model(cohort, mode, settings, device, seed, tmp) for mode in cv_results}
        for site, rows in _site_predictions(cv_results, cohort.records, extra).items():
            _write_csv(tmp / "sites" / site / "predictions.csv", rows)
        metrics.update(
            oracle_auc=oracle_auc, evaluation="patient-level stratified CV (leave_one_site_out: by site)",
            n_patients=len(cohort.records), sites=sorted({r.site for r in cohort.records}),
            device=str(device), seconds=round(time.perf_counter() - start, 1),
        )
        cutoffs = {mode: metrics[mode]["cutoff_fusion"] for mode in cv_results}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        (tmp / "cutoffs.json").write_text(json.dumps(cutoffs, indent=2), encoding="utf-8")
        (tmp / "config.json").write_text(json.dumps({"seed": seed, **settings.model_dump(mode="json")}, indent=2),
                                         encoding="utf-8")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("centralized run written to %s in %.0f s", out, metrics["seconds"])
    return metrics
