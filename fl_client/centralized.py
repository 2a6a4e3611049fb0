"""Centralized (pooled) training: the ceiling the federated model is measured against.

One task per mode (docs/models.md "Tasks"): ``early`` (T0+T1 inputs) predicts the registered response;
``full`` (T0–T2, every patient with a T2 scan) predicts durable clinical benefit at 6 months (early
progressors are negatives), also scored against the 12-month benefit (``auc_dcb12``), with the risk
head's C-index on PFS; the early model's ``pseudo`` head is scored on the T1 pseudoprogression task
(patients with iUPD at T1, label from T2/confirmation; ``pseudo`` block: AUC with DeLong CI and the
sensitivity at 90 % specificity).

For each mode and each held-out scheme (patient-level stratified cross-validation; leave-one-site-out),
every test fold is predicted by models fitted on the other folds only:

- the networks of ``evaluation.kinds`` (default every :data:`models.config.MODEL_KINDS`): ``wide`` (the
  fusion net's linear path alone, the default product model ``model.kind``), ``fusion`` (ST-GCN +
  decomposition Transformer + clinical + wide path), ``stgcn`` and ``transformer`` alone (benchmarks add
  ``deep`` = the fusion without its wide path);
- the baselines of :mod:`fl_client.baselines` (penalised logistic regression on the wide path's inputs,
  delta-radiomics with and without clinical covariates, RECIST at the mode's last scan).

Standardization statistics, penalties and Youden cut-offs come from the training folds; cut-offs from
out-of-fold predictions *inside* the training fold (``evaluation.cutoff_folds`` inner folds; 0: the
in-sample fit). Out-of-fold scores are pooled for the AUC (DeLong 95 % CI,
:func:`evaluation.stats.delong_auc_ci`); sensitivity and specificity count each test patient against
its own fold's training cut-off; the C-index (PFS) uses the pooled out-of-fold risk.

The product model (``model.kind``) is the one whose out-of-fold scores are ``predictions.csv``, whose
cut-offs are ``cutoffs.json``, and whose final fit on everyone is checkpointed and explained.
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
from sklearn.model_selection import StratifiedKFold

from evaluation.stats import delong_auc_ci
from evaluation.survival import concordance
from fl_client.baselines import (
    BASELINES,
    delta_features,
    linear_fold,
    oof_cutoff,
    recist_scores,
    recist_t1_scores,
    wide_features,
)
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

NEURAL = tuple(MODEL_KINDS)  # wide, fusion, stgcn, transformer
__all__ = ["BASELINES", "NEURAL", "PooledCohort", "cross_fit", "delta_features", "evaluate_modes", "recist_t1_scores",
           "run_centralized", "summarize"]
#: Secondary label scored with a mode's model (full mode: durable benefit at 12 months).
SECONDARY_LABEL = {"full": "dcb12"}
#: Specificity at which the pseudoprogression head's sensitivity is reported.
PSEUDO_SPECIFICITY = 0.90


@dataclass
class OutOfFold:
    """Pooled out-of-fold results of one model: scores, risks, labels and each patient's fold cut-off."""

    usubjid: list[str] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    risk: list[float] = field(default_factory=list)
    pseudo: list[float] = field(default_factory=list)
    label: list[float] = field(default_factory=list)
    secondary: list[float] = field(default_factory=list)
    pseudo_label: list[float] = field(default_factory=list)
    cutoff: list[float] = field(default_factory=list)
    pfs_days: list[float] = field(default_factory=list)
    pfs_event: list[bool] = field(default_factory=list)

    def add(self, records: list[PatientRecord], mode: str, score: np.ndarray, risk: np.ndarray | None, cut: float,
            pseudo: np.ndarray | None = None) -> None:
        nan = np.full(len(records), np.nan)
        self.usubjid += [r.usubjid for r in records]
        self.score += score.tolist()
        self.risk += (risk if risk is not None else nan).tolist()
        self.pseudo += (pseudo if pseudo is not None else nan).tolist()
        self.label += [r.responder[mode] for r in records]
        self.secondary += [r.responder.get(SECONDARY_LABEL.get(mode, ""), math.nan) for r in records]
        self.pseudo_label += [r.pseudo for r in records]
        self.cutoff += [cut] * len(records)
        self.pfs_days += [r.pfs_days for r in records]
        self.pfs_event += [r.pfs_event for r in records]


def node_padding(records: list[PatientRecord], settings: ModelSettings) -> int:
    """Pad graphs to the largest one of the cohort (at most ``model.v_max``; padding costs compute)."""
    return min(settings.model.v_max, max(int(r.graph.x.shape[1]) for r in records))


def in_task(record: PatientRecord, mode: str) -> bool:
    """Whether the record has the mode's scans (full: a T2 scan) and a defined label."""
    return record.n_scans >= MODE_TIMEPOINTS[mode] and math.isfinite(record.responder[mode])


def records_for(records: list[PatientRecord], mode: str) -> list[PatientRecord]:
    """The records of the mode's task: its scans present and its label defined (full mode: benefit unknown,
    i.e. censored before the landmark, or no T2 scan, is left out)."""
    kept = [r for r in records if in_task(r, mode)]
    if len(kept) < len(records):
        log.info("%s mode: %d of %d patients lack the mode's scans or a defined label and are left out", mode,
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


@dataclass(frozen=True)
class FoldContext:
    """What every fit of one fold shares: mode, input sizes, presets, device, seed and graph padding."""

    mode: str
    dims: InputDims
    settings: ModelSettings
    device: torch.device
    seed: int
    v_pad: int


def _fit_predict(kind: str, train: list[PatientRecord], test: list[PatientRecord], ctx: FoldContext,
                 seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Fit ``kind`` on ``train``; head outputs on ``train`` (in-sample) and on ``test``."""
    scaler = Standardizer.fit(train, ctx.mode)
    train_ds = to_dataset(train, ctx.mode, ctx.v_pad, scaler)
    torch.manual_seed(seed)  # parameter initialisation (entry-point style seeding, per fit)
    model = build_model(kind, MODE_TIMEPOINTS[ctx.mode], ctx.dims, ctx.settings.model)
    trained, _ = fit(model, train_ds, ctx.settings.train, ctx.device, torch.Generator().manual_seed(seed))
    return (predict(trained, train_ds, ctx.device),
            predict(trained, to_dataset(test, ctx.mode, ctx.v_pad, scaler), ctx.device))


def _neural_fold(
    kind: str, train: list[PatientRecord], test: list[PatientRecord], ctx: FoldContext, seed: int,
) -> tuple[dict[str, np.ndarray], float]:
    """Test-fold head outputs of ``kind`` fitted on ``train`` and its cut-off from inner out-of-fold scores."""
    in_sample, out = _fit_predict(kind, train, test, ctx, seed)
    labels = np.array([r.responder[ctx.mode] for r in train])

    def inner(fit_idx: np.ndarray, score_idx: np.ndarray) -> np.ndarray:
        return _fit_predict(kind, [train[i] for i in fit_idx], [train[i] for i in score_idx], ctx, seed + 7919)[1][
            "response"]

    cut = oof_cutoff(labels, inner, ctx.settings.evaluation.cutoff_folds, seed, in_sample["response"])
    return out, cut


def _linear_inputs(records: list[PatientRecord], ctx: FoldContext, delta_columns: list[int] | None,
                   ) -> dict[str, np.ndarray]:
    wide = ctx.dims.columns_of(ctx.settings.model.wide_groups)
    return {
        "logreg_wide": wide_features(records, ctx.mode, wide, ctx.settings.model.wide_nodes),
        "logreg_delta_radiomics": delta_features(records, ctx.mode, delta_columns),
        "logreg_delta_radiomics_clinical": delta_features(records, ctx.mode, delta_columns, clinical=True),
    }


def _baseline_folds(
    results: dict[str, OutOfFold], train: list[PatientRecord], test: list[PatientRecord], ctx: FoldContext,
    delta_columns: list[int] | None, seed: int,
) -> None:
    y_train = np.array([r.responder[ctx.mode] for r in train])
    x_train, x_test = _linear_inputs(train, ctx, delta_columns), _linear_inputs(test, ctx, delta_columns)
    for name, features in x_train.items():
        score, cut = linear_fold(features, y_train, x_test[name], seed, ctx.settings.evaluation.cutoff_folds)
        results[name].add(test, ctx.mode, score, None, cut)
    results["recist_last"].add(test, ctx.mode, recist_scores(test, ctx.mode), None, 1.0)


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
    columns of the delta-radiomics baselines, default all)."""
    ctx = FoldContext(mode, dims, settings, device, seed, node_padding(records, settings))
    kinds = tuple(dict.fromkeys(kinds))  # a kind named twice is fitted once
    results = {name: OutOfFold() for name in (*kinds, *BASELINES)}
    for index, (train_idx, test_idx) in enumerate(folds):
        train, test = [records[i] for i in train_idx], [records[i] for i in test_idx]
        for kind in kinds:
            out, cut = _neural_fold(kind, train, test, ctx, seed + index)
            results[kind].add(test, mode, out["response"], out["risk"], cut, out["pseudo"])
        _baseline_folds(results, train, test, ctx, delta_columns, seed + index)
        log.info("%s mode, fold %d/%d done (%d train, %d test)", mode, index + 1, len(folds), len(train), len(test))
    return results


def _auc(y: np.ndarray, s: np.ndarray) -> dict[str, Any]:
    if 0 < y.sum() < y.size:
        auc, (low, high) = delong_auc_ci(y, s)
        return {"auc": auc, "auc_ci": [low, high]}
    return {"auc": None, "auc_ci": None}


def sensitivity_at_specificity(y: np.ndarray, s: np.ndarray, specificity: float = PSEUDO_SPECIFICITY) -> float | None:
    """Sensitivity at the lowest threshold whose specificity is ≥ ``specificity`` (None without both classes)."""
    negatives, positives = s[y == 0], s[y == 1]
    if not len(negatives) or not len(positives):
        return None
    for threshold in np.unique(s):  # ascending: the first admissible threshold is the most sensitive
        if np.mean(negatives < threshold) >= specificity:
            return float(np.mean(positives >= threshold))
    return 0.0


def pseudo_summary(oof: OutOfFold) -> dict[str, Any]:
    """The pseudo head on the T1 pseudoprogression task: AUC (DeLong CI), sensitivity at 90 % specificity, n."""
    label, score = np.asarray(oof.pseudo_label, dtype=float), np.asarray(oof.pseudo, dtype=float)
    keep = np.isfinite(label) & np.isfinite(score)
    y, s = label[keep].astype(int), score[keep]
    return {"n": int(y.size), "pseudoprogressions": int(y.sum()), **_auc(y, s),
            "sensitivity_at_90_specificity": sensitivity_at_specificity(y, s)}


def summarize(oof: OutOfFold) -> dict[str, Any]:
    """AUC with DeLong 95 % CI, sensitivity/specificity at the training-fold cut-offs, C-index, n; the AUC
    against the secondary label (``auc_dcb12``) and the pseudo head's block where they apply."""
    y = np.asarray(oof.label, dtype=int)
    s = np.asarray(oof.score, dtype=float)
    cut = np.asarray(oof.cutoff, dtype=float)
    out: dict[str, Any] = {"n": int(y.size), "responders": int(y.sum()), **_auc(y, s)}
    called = s >= cut
    tp, fn = int(np.sum(called & (y == 1))), int(np.sum(~called & (y == 1)))
    tn, fp = int(np.sum(~called & (y == 0))), int(np.sum(called & (y == 0)))
    out.update(sensitivity=tp / max(tp + fn, 1), specificity=tn / max(tn + fp, 1), tp=tp, fp=fp, tn=tn, fn=fn)
    risk = np.asarray(oof.risk, dtype=float)
    if np.isfinite(risk).all() and any(oof.pfs_event):
        out["c_index"] = concordance(oof.pfs_days, np.asarray(oof.pfs_event, dtype=int), -risk)
    secondary = np.asarray(oof.secondary, dtype=float)
    if np.isfinite(secondary).any():
        keep = np.isfinite(secondary)
        out["auc_dcb12"] = _auc(secondary[keep].astype(int), s[keep])["auc"]
    return out


def _site_predictions(
    oof: dict[str, dict[str, OutOfFold]], records: list[PatientRecord], extra: dict[str, dict[str, float]], kind: str,
) -> dict[str, list[dict[str, Any]]]:
    """The product model's (``kind``) rows per site in the ``predictions.csv`` layout of :mod:`evaluation.metrics`.

    SCORE is the out-of-fold probability, or — for a patient with the mode's scans but without a label
    (benefit unknown) — the final model's (it never trained on that patient). LABEL is the row's *own*
    task's label (early: response; full: durable benefit at 6 months; empty when undefined); a patient
    without a T2 scan has no full-mode row.
    """
    by_id = {r.usubjid: r for r in records}
    rows: dict[str, list[dict[str, Any]]] = {}
    for mode, results in oof.items():
        scores = dict(zip(results[kind].usubjid, results[kind].score, strict=True)) | extra.get(mode, {})
        for usubjid, score in scores.items():
            r = by_id[usubjid]
            label = r.responder[mode]
            rows.setdefault(r.site, []).append({
                "USUBJID": usubjid, "MODE": mode, "SCORE": round(float(score), 6),
                "LABEL": int(label) if math.isfinite(label) else None,
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
    kinds: tuple[str, ...] | None = None,
    delta_columns: list[int] | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, OutOfFold]]]:
    """Metrics per scheme, mode and model, and the patient-CV out-of-fold results (for predictions.csv).

    Each mode uses the records of its task (:func:`records_for`); the leakage guard runs first. ``kinds``
    are the networks fitted per fold (default ``settings.evaluation.kinds``; benchmarks may add the
    diagnostic ``deep`` half of the fusion model, :data:`models.config.DIAGNOSTIC_KINDS`); ``delta_columns``
    as in :func:`cross_fit`. Early mode's networks also get a ``pseudo`` block (the T1 pseudoprogression
    task); ``cutoff`` is the median training-fold cut-off of the product model ``settings.model.kind``.
    """
    kinds = tuple(dict.fromkeys(settings.evaluation.kinds if kinds is None else kinds))
    product = settings.model.kind
    metrics: dict[str, Any] = {}
    cv_results: dict[str, dict[str, OutOfFold]] = {}
    n_sites = len({r.site for r in records})
    for mode in modes:
        labelled = records_for(records, mode)
        assert_no_label_leakage(labelled, mode)
        folds = list(patient_folds(labelled, mode, settings.evaluation.cv_folds, seed))
        cv_results[mode] = cross_fit(labelled, mode, folds, dims, settings, device, seed, kinds, delta_columns)
        metrics[mode] = {name: summarize(oof) for name, oof in cv_results[mode].items()}
        if mode == "early":
            for kind in kinds:
                metrics[mode][kind]["pseudo"] = pseudo_summary(cv_results[mode][kind])
        if product in cv_results[mode]:
            metrics[mode]["cutoff"] = float(np.median(cv_results[mode][product].cutoff))
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
    """The product model (``model.kind``) trained on every labelled patient: checkpoint ``<kind>_<mode>.pt``
    (with its resolved config), per-site attributions, and the scores of the patients without a label in this
    mode (USUBJID → probability)."""
    kind = settings.model.kind
    records = records_for(cohort.records, mode)
    scaler = Standardizer.fit(records, mode)
    v_pad = node_padding(cohort.records, settings)
    dataset = to_dataset(records, mode, v_pad, scaler)
    torch.manual_seed(seed)
    model = build_model(kind, MODE_TIMEPOINTS[mode], cohort.dims, settings.model)
    trained, losses = fit(model, dataset, settings.train, device, torch.Generator().manual_seed(seed))
    (out / "checkpoints").mkdir(exist_ok=True)
    torch.save({"state_dict": trained.state_dict(), "kind": kind, "mode": mode,
                "config": settings.model_dump(mode="json"), "dims": asdict(cohort.dims), "v_pad": v_pad,
                "scaler": asdict(scaler), "losses": losses},
               out / "checkpoints" / f"{kind}_{mode}.pt")
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
    unlabelled = [r for r in cohort.records
                  if r.n_scans >= MODE_TIMEPOINTS[mode] and not math.isfinite(r.responder[mode])]
    if not unlabelled:
        return {}
    scores = predict(trained, to_dataset(unlabelled, mode, v_pad, scaler), device)["response"]
    return {r.usubjid: float(p) for r, p in zip(unlabelled, scores, strict=True)}


def run_centralized(
    cohort: PooledCohort, out: Path, settings: ModelSettings, device: torch.device, seed: int,
    oracle_auc: float | None = None,
) -> dict[str, Any]:
    """Evaluate every model and baseline, train the final product models (``model.kind``) and write the run
    directory.

    Written (atomically: a temporary sibling folder renamed to ``out`` at the end): ``metrics.json`` (its
    ``model`` names the product kind), ``cutoffs.json``, ``config.json``, ``checkpoints/<kind>_<mode>.pt``
    and, per site, ``sites/<SITE>/predictions.csv`` (the product model, patient-CV out-of-fold, each row
    with its task's label) and attributions.
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
        for site, rows in _site_predictions(cv_results, cohort.records, extra, settings.model.kind).items():
            _write_csv(tmp / "sites" / site / "predictions.csv", rows)
        metrics.update(
            model=settings.model.kind, oracle_auc=oracle_auc,
            evaluation="patient-level stratified CV (leave_one_site_out: by site)",
            n_patients=len(cohort.records), sites=sorted({r.site for r in cohort.records}),
            device=str(device), seconds=round(time.perf_counter() - start, 1),
        )
        cutoffs = {mode: metrics[mode]["cutoff"] for mode in cv_results}
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
