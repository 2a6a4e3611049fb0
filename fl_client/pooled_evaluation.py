"""A site's part in the encrypted pooled evaluation of the final federated model (plain functions).

After the last round every site scores its own patients with the final global model and keeps the rows
(``site_dir/predictions.csv``, the :mod:`evaluation.metrics` layout, ``SPLIT`` marking training and held-out
patients so that ``fedresponse evaluate`` judges the model on the held-out ones). What leaves the site are two
encrypted site-level vectors, each through the one packing code of :mod:`privacy.update` /
:mod:`privacy.ckks` and wrapped as a :class:`privacy.update.ModelUpdate` (so the server validates and
adds it exactly like a model update):

1. ``score`` phase — :func:`training_histograms`: per mode, the score histograms of the site's
   *training* patients, responders and non-responders apart (:data:`training_histogram_layout`);
2. ``pool`` phase — the server returns ``Enc(Σ histograms)``; the site decrypts it, fixes the Youden
   cut-off per mode on the pooled training histograms (:func:`cutoffs_from_histograms`, the same at
   every site) and sends :func:`held_out_aggregate`: the :func:`evaluation.pooled.site_aggregate` vector of
   its *held-out test* patients at those cut-offs.

The server sums the second vectors too; only a key holder decrypts that sum into
:func:`evaluation.pooled.pooled_metrics` (``fedresponse.federation.pooled_summary``).

Each mode's rows carry that mode's own task label (``LABEL``: early the response, full the durable benefit, empty
where undefined; a patient without a T2 scan has no full-mode row), and both vectors count each mode on its own
labelled patients against that label (:func:`evaluation.metrics.scored`), so a cut-off is fixed against the label
it is judged by.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from evaluation.pooled import (
    MODES,
    AggregateLayout,
    binned_youden,
    score_histograms,
    site_aggregate,
    suppress_small_cells,
)
from privacy.audit import AuditLog
from privacy.ckks import CkksParameters, ParameterLayout
from privacy.exceptions import ContextMismatchError
from privacy.update import GlobalModel, ModelUpdate, UpdateMeta, decode_vector, encode_vector

if TYPE_CHECKING:
    from torch import nn

    from fl_client.federated import ClientSettings, SiteKeys, SiteTask

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.csv"
#: the protocol's cut-off (``cutoff-source: protocol``, the default): a responder is called at a predicted response
#: probability of at least one half, the Bayes decision of the responder head; it uses no patient data, so nothing
#: about the training patients is released to fix it (docs/federation.md "What leaves a site")
PROTOCOL_CUTOFF = 0.5


def protocol_cutoffs() -> dict[str, float]:
    """:data:`PROTOCOL_CUTOFF` for every mode."""
    return {mode: PROTOCOL_CUTOFF for mode in MODES}


def training_histogram_layout(bins: int = AggregateLayout.score_bins) -> ParameterLayout:
    """Layout of the training-histogram vector: ``<mode>.hist_pos`` / ``<mode>.hist_neg``, ``bins`` each."""
    return ParameterLayout.from_arrays({f"{mode}.hist_{cls}": np.zeros(bins) for mode in MODES
                                        for cls in ("pos", "neg")})


def read_site_predictions(site_dir: Path) -> pd.DataFrame:
    """The site's own ``predictions.csv`` (written in the score phase; never sent)."""
    from evaluation.metrics import read_predictions

    path = site_dir / PREDICTIONS
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the site must score its patients (evaluate phase "
                                "'score') before it can take part in pooling.")
    return read_predictions(path)


def _rows(predictions: pd.DataFrame, ids: list[str], what: str) -> pd.DataFrame:
    rows = predictions[predictions["USUBJID"].isin(ids)]
    if rows.empty:
        raise ValueError(f"none of the site's {len(ids)} {what} patients is in its predictions.csv; "
                         "was the file written by another run?")
    return rows


def training_histograms(predictions: pd.DataFrame, train_ids: list[str],
                        layout: ParameterLayout | None = None) -> np.ndarray:
    """Score histograms of the training patients per mode, flat in :func:`training_histogram_layout` order: each
    mode's rows with a defined own label (``LABEL`` of that mode's rows), responders and non-responders apart.

    Returns
    -------
    ndarray, shape (layout.size,)
        Counts per score bin (equal bins of [0, 1]).
    """
    layout = layout or training_histogram_layout()
    bins = layout.entries[0][1][0]
    rows = _rows(predictions, train_ids, "training")
    arrays: dict[str, np.ndarray] = {}
    min_cell = _min_cell_size()
    for mode in MODES:
        part = rows[rows["MODE"] == mode]
        part = part[pd.to_numeric(part["LABEL"], errors="coerce").notna()]  # own label undefined: not counted
        pos, neg = score_histograms(part["LABEL"].to_numpy(int), part["SCORE"].to_numpy(float), bins)
        if min(pos.sum(), neg.sum()) < min_cell:  # small cells leave nothing: the cut-off rests on the other sites
            log.warning("training histograms of mode %s not sent: %d responders, %d non-responders (< min_cell_size "
                        "%d)", mode, pos.sum(), neg.sum(), min_cell)
            pos, neg = np.zeros_like(pos), np.zeros_like(neg)
        arrays |= {f"{mode}.hist_pos": pos, f"{mode}.hist_neg": neg}
    return layout.flatten(arrays)


def _min_cell_size() -> int:
    from evaluation.protocol import load_protocol

    return load_protocol().statistics.min_cell_size


def cutoffs_from_histograms(summed: np.ndarray, layout: ParameterLayout | None = None) -> dict[str, float]:
    """Youden cut-off per mode on the pooled training histograms (counts rounded: CKKS noise is ~1e-7)."""
    layout = layout or training_histogram_layout()
    arrays = layout.unflatten(np.round(np.asarray(summed, dtype=np.float64)))
    return {mode: binned_youden(arrays[f"{mode}.hist_pos"], arrays[f"{mode}.hist_neg"]) for mode in MODES}


def held_out_aggregate(site: str, predictions: pd.DataFrame, test_ids: list[str], cutoffs: dict[str, float],
                   layout: AggregateLayout | None = None) -> np.ndarray:
    """The :func:`evaluation.pooled.site_aggregate` vector of the held-out test patients at ``cutoffs``, with every
    statistic whose cells hold fewer than ``statistics.min_cell_size`` subjects zeroed
    (:func:`evaluation.pooled.suppress_small_cells`, logged)."""
    from evaluation.metrics import SiteData, site_inputs

    rows = _rows(predictions, test_ids, "test").reset_index(drop=True)
    if "SPLIT" in rows.columns and (rows["SPLIT"] != "test").any():
        # only when the site has no held-out patient (the task then evaluates on its training patients)
        log.warning("site %s: %d of the pooled 'test' subjects are marked SPLIT=train in predictions.csv; the pooled "
                    "held-out aggregate includes training patients", site, rows.loc[rows["SPLIT"] != "test",
                                                                                     "USUBJID"].nunique())
    layout = layout or AggregateLayout()
    vector, suppressed = suppress_small_cells(site_aggregate(site_inputs(SiteData(site, rows), cutoffs), layout),
                                              layout, _min_cell_size(), site)
    n_held_out = rows["USUBJID"].nunique()
    for item in suppressed:  # a zeroed statistic: the pooled value rests on the other sites
        log.warning("site %s contributes nothing to the pooled held-out %s: %s (counted on its %d held-out "
                    "patient(s))", site, item.statistic, item.reason, n_held_out)
    return vector


def encode_aggregate(vector: np.ndarray, *, site: str, round_: int, layout_digest: str, num_patients: int,
                     settings: ClientSettings, keys: SiteKeys | None) -> ModelUpdate:
    """Encrypt (CKKS modes) a site-level vector as an update record the server validates and adds.

    ``num_examples`` carries the number of patients the vector summarises (not a weight: the server
    adds aggregates unweighted, they are counts already).
    """
    params = keys.params if keys is not None else CkksParameters()
    chunks = encode_vector(np.asarray(vector, dtype=np.float64), settings.encoding,
                           keys.context if keys is not None else None, params)
    meta = UpdateMeta(site=site, round=round_, num_examples=num_patients, layout_digest=layout_digest,
                      length=int(np.asarray(vector).size), key_id=keys.info.key_id if keys else "none",
                      encoding=settings.encoding)
    return ModelUpdate(meta, chunks)


def decode_sum(summed: GlobalModel, keys: SiteKeys | None, layout_digest: str, length: int) -> np.ndarray:
    """Decrypt (or decode) the server's sum of site vectors after checking it is the expected one."""
    if summed.layout_digest != layout_digest or summed.length != length:
        raise ContextMismatchError(f"the pooled vector has layout {summed.layout_digest[:12]}… ({summed.length} "
                                   f"values), this site expects {layout_digest[:12]}… ({length}); all sites must "
                                   "run the same fedresponse version.")
    if keys is not None and summed.key_id != keys.info.key_id:
        raise ContextMismatchError(f"the pooled vector was made under key {summed.key_id[:12]}…, this site holds "
                                   f"{keys.info.key_id[:12]}…; install the current KEYDIR/site/ from the PI.")
    return decode_vector(summed.chunks, summed.encoding, keys.context if keys is not None else None, length)


def audit_aggregate_sent(site_dir: Path, update: ModelUpdate, phase: str, extra: dict[str, Any] | None = None) -> None:
    """Append what left the site (bytes, SHA-256, phase) to the site's federation audit log."""
    details = {"phase": phase, "round": update.meta.round, "bytes_sent": update.nbytes,
               "sha256_sent": hashlib.sha256(b"".join(update.chunks)).hexdigest(),
               "num_patients": update.meta.num_examples, "encoding": update.meta.encoding, **(extra or {})}
    AuditLog(site_dir / "federation_audit.jsonl").append(
        "fl.evaluation.aggregate_sent", who=f"site:{update.meta.site}", details=details,
        why="pooled evaluation of the final model (site-level counts, encrypted; patient rows stay at the site)")


def score_phase(task: SiteTask, model: nn.Module, round_: int, settings: ClientSettings, keys: SiteKeys | None,
                site_dir: Path) -> tuple[dict[str, float], ModelUpdate | None]:
    """Phase ``score``: evaluate the final model at the site, then encrypt the training histograms.

    Returns the site-level scalars for ``RUN/site_metrics.json`` (numbers only, lists dropped) and the
    encrypted histogram vector (``None`` when the task has no train/test split to pool).
    """
    raw = task.evaluate_fn(model, task.data, site_dir) if task.evaluate_fn is not None else {}
    metrics = {k: float(v) for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if task.split is None or settings.cutoff_source == "protocol":  # protocol cut-offs: no histogram leaves
        return metrics, None
    train_ids, _ = task.split
    layout = training_histogram_layout()
    vector = training_histograms(read_site_predictions(site_dir), list(train_ids), layout)
    update = encode_aggregate(vector, site=task.data.site, round_=round_, layout_digest=layout.digest,
                              num_patients=len(train_ids), settings=settings, keys=keys)
    audit_aggregate_sent(site_dir, update, "score")
    return metrics, update


def pool_phase(task: SiteTask, summed: GlobalModel | None, round_: int, settings: ClientSettings,
               keys: SiteKeys | None, site_dir: Path) -> tuple[dict[str, float], ModelUpdate]:
    """Phase ``pool``: the cut-offs (protocol, or from the pooled training histograms), then the test aggregate."""
    if task.split is None:
        raise ValueError(f"site {task.data.site}: the task has no train/test split, it cannot pool its evaluation.")
    if summed is None:
        if settings.cutoff_source != "protocol":
            raise ValueError(f"site {task.data.site}: cutoff-source {settings.cutoff_source!r} needs the pooled "
                             "training histograms, the server sent none; run every site with the same config.")
        cutoffs = protocol_cutoffs()
    else:
        layout = training_histogram_layout()
        cutoffs = cutoffs_from_histograms(decode_sum(summed, keys, layout.digest, layout.size), layout)
    _, test_ids = task.split
    aggregate_layout = AggregateLayout()
    vector = held_out_aggregate(task.data.site, read_site_predictions(site_dir), list(test_ids), cutoffs,
                                aggregate_layout)
    update = encode_aggregate(vector, site=task.data.site, round_=round_, layout_digest=aggregate_layout.digest,
                              num_patients=len(test_ids), settings=settings, keys=keys)
    audit_aggregate_sent(site_dir, update, "pool", {"cutoffs": cutoffs})
    return cutoffs, update
