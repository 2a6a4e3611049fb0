"""Pooled (federated) evaluation from site-level aggregates only — no patient row leaves a site.

Each site turns its patient-level predictions into a fixed-layout vector of counts and sums
(:func:`site_aggregate`):

- per mode (``early``/``full``), on that mode's own subjects and against its own task's label
  (:data:`MODE_POPULATIONS`; ``SiteInputs.mode_labels``): histograms of the score over ``score_bins`` equal bins
  of [0, 1], one per label class (ROC/AUC and the DeLong variance of the binned data), the confusion table at the
  cut-off fixed on training data, the Brier sum, calibration counts/sums over 10 bins, and the KM by predicted
  group;
- numbers at risk and PFS events on a fixed day grid, overall, per predicted group and per reference
  response (Kaplan–Meier, median PFS, log-rank);
- ORR counts (analysed, responders by RECIST 1.1 / iRECIST, confirmed / unconfirmed), for the analysed
  (EFFFL) and the enrolled (ITTFL, the protocol's denominator) subjects.

The reference blocks (KM overall and by reference response, ORR, landmark, DHI) count the reference subjects
(``SiteInputs.reference_included``, EFFFL) with the reference response label ``SiteInputs.labels``; survival
blocks count the PFS population (``SiteInputs.pfs_included``, PFSFL) only.

The vectors are combined through an :class:`AggregateCodec` seam — ``encrypt`` at the site, ``add`` at the
server (no secret key), ``decrypt`` back at a site key holder. :class:`CkksCodec` plugs in
:mod:`privacy.ckks`; :class:`PlainCodec` is the identity, for tests and for a single-site run only.
Everything pooled is then computed by :func:`pooled_metrics` from the summed vector.

Binning error (tested): the AUC of the binned scores differs from the exact pooled AUC by at most half
the fraction of (responder, non-responder) pairs that share a bin (:func:`auc_binning_bound`); with a
1-day PFS grid and whole-day times the pooled Kaplan–Meier curve and log-rank test are exact.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from evaluation.exceptions import PooledStatisticsError
from evaluation.stats import binary_metrics_from_counts, normal_ci, proportion_ci
from evaluation.survival import RiskTable, kaplan_meier, landmark, logrank, median_or_reason

MODES: tuple[str, ...] = ("early", "full")
ORR_KEYS: tuple[str, ...] = ("n", "recist_unconfirmed", "recist_confirmed", "irecist_unconfirmed", "irecist_confirmed")
#: The same counts over every enrolled subject (ITTFL): the protocol's ORR denominator.
ORR_ITT_KEYS: tuple[str, ...] = tuple(f"itt_{k}" for k in ORR_KEYS)
ORR_DENOMINATOR = "all enrolled (ITTFL; protocol: ORR = (CR + PR) / all enrolled)"
ORR_ANALYSED = "analysed (EFFFL: the efficacy population)"
CALIBRATION_BINS = 10
#: The population each mode is scored on (evaluation.populations): early mode predicts response from T0 + T1, so
#: every EARLYFL patient (no T2 scan required) with an early label; full mode every EFFFL patient (T0–T2) with a
#: finite durable-benefit label.
MODE_POPULATIONS: dict[str, str] = {"early": "EARLYFL", "full": "EFFFL"}
#: Meaning of the blocks, part of :attr:`AggregateLayout.digest` (aggregates of two versions are never summed).
#: 1: every mode counted on the reference subjects against the reference (early) label; 2: each mode counted on
#: its own subjects (:data:`MODE_POPULATIONS`) against its own task's label.
LAYOUT_VERSION = 2


@dataclass(frozen=True)
class AggregateLayout:
    """The agreed shape of a site aggregate: score bins, PFS day grid, and the order of the blocks.

    Attributes
    ----------
    score_bins : int
        Equal-width bins of [0, 1] for the score histograms.
    pfs_grid_days : tuple of float
        Left edges of the PFS cells, days, starting at 0.
    dhi_range, dhi_bins : tuple of float, int
        Range agreed before the run and bin count of the DHI histograms (values outside are clipped into the
        end bins, which the binning bound counts as ties).
    """

    score_bins: int = 200
    pfs_grid_days: tuple[float, ...] = field(default_factory=lambda: tuple(float(d) for d in range(0, 763, 7)))
    # The DHI is a weighted mean of z-scores (docs/dhi.md §4): about -2..3, complete responses up to ~8.
    dhi_range: tuple[float, float] = (-5.0, 10.0)
    dhi_bins: int = 300
    version: int = LAYOUT_VERSION

    def blocks(self) -> list[tuple[str, int]]:
        """``(name, length)`` of every block in vector order."""
        k, b = len(self.pfs_grid_days), self.score_bins
        out: list[tuple[str, int]] = []
        for mode in MODES:
            out += [(f"{mode}.hist_pos", b), (f"{mode}.hist_neg", b), (f"{mode}.confusion", 4)]
            out += [(f"{mode}.brier", 2), (f"{mode}.calibration", 3 * CALIBRATION_BINS)]
            out += [(f"{mode}.km_called_pos", 2 * k), (f"{mode}.km_called_neg", 2 * k)]
        out += [("km_all", 2 * k), ("km_ref_pos", 2 * k), ("km_ref_neg", 2 * k), ("orr", len(ORR_KEYS))]
        out += [("orr_itt", len(ORR_ITT_KEYS)), ("km_landmark_pos", 2 * k), ("km_landmark_neg", 2 * k)]
        out += [("dhi.hist_pos", self.dhi_bins), ("dhi.hist_neg", self.dhi_bins)]
        return out

    @property
    def size(self) -> int:
        return sum(n for _, n in self.blocks())

    @property
    def digest(self) -> str:
        """Hash of the layout; aggregates with different digests cannot be summed."""
        text = json.dumps({"version": self.version, "bins": self.score_bins, "grid": self.pfs_grid_days,
                           "dhi": [*self.dhi_range, self.dhi_bins], "blocks": self.blocks()})
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def unpack(self, vector: NDArray[np.float64]) -> dict[str, NDArray[np.float64]]:
        if vector.shape != (self.size,):
            raise PooledStatisticsError(f"aggregate has {vector.shape} values, the layout expects ({self.size},)")
        out, start = {}, 0
        for name, n in self.blocks():
            out[name] = vector[start : start + n]
            start += n
        return out


@dataclass(frozen=True)
class SiteInputs:
    """One site's patient-level inputs (they stay at the site).

    The ``n`` subjects are every subject the site scores in some mode or counts in the reference endpoints; each
    statistic picks its own subjects by mask.

    Attributes
    ----------
    labels, pfs_days, pfs_event : ndarray, shape (n,)
        Reference response (0/1: the early task's label, response as registered), PFS in days, PFS event (0/1),
        per subject. ``labels`` is read only where ``reference_included``.
    scores : dict mode -> ndarray, shape (n,)
        Predicted probability per subject and mode (read only where the mode scores the subject).
    cutoffs : dict mode -> float
        Cut-offs fixed on training data.
    orr_counts : dict, optional
        ``ORR_KEYS`` (and ``ORR_ITT_KEYS``) -> count; default uses the reference label for all four responder
        counts, and the analysed counts for the ITT ones.
    dhi : ndarray, shape (n,), optional
        Dynamic Heterogeneity Index per subject (per 100 days).
    pfs_included : ndarray of bool, shape (n,), optional
        Subjects in the PFS population (PFSFL, a subset of the reference subjects); default the reference
        subjects. Survival blocks count only these.
    landmark_response : ndarray, shape (n,), optional
        Response at the T1 landmark (1/0, NaN unknown) for the landmark blocks; ``landmark_day`` its study day.
    mode_labels : dict mode -> ndarray of float, shape (n,), optional
        Each mode's own task label (0/1; NaN where the mode does not score the subject: outside its population
        :data:`MODE_POPULATIONS`, or its label undefined). Default: ``labels`` for every mode, every subject.
    reference_included : ndarray of bool, shape (n,), optional
        Subjects of the reference endpoints (EFFFL): KM overall and by reference response, ORR default counts,
        landmark KM, DHI. Default all.
    """

    labels: NDArray[np.int_]
    pfs_days: NDArray[np.float64]
    pfs_event: NDArray[np.int_]
    scores: Mapping[str, NDArray[np.float64]]
    cutoffs: Mapping[str, float]
    orr_counts: Mapping[str, int] | None = None
    dhi: NDArray[np.float64] | None = None
    pfs_included: NDArray[np.bool_] | None = None
    landmark_response: NDArray[np.float64] | None = None
    landmark_day: float = 0.0
    mode_labels: Mapping[str, NDArray[np.float64]] | None = None
    reference_included: NDArray[np.bool_] | None = None

    def reference_mask(self) -> NDArray[np.bool_]:
        """Boolean mask of the reference subjects (EFFFL), shape (n,)."""
        n = np.asarray(self.labels).size
        return np.ones(n, dtype=bool) if self.reference_included is None else \
            np.asarray(self.reference_included, dtype=bool)

    def pfs_mask(self) -> NDArray[np.bool_]:
        """Boolean mask of the PFS population (within the reference subjects), shape (n,)."""
        reference = self.reference_mask()
        return reference if self.pfs_included is None else np.asarray(self.pfs_included, dtype=bool) & reference

    def mode_label(self, mode: str) -> NDArray[np.float64]:
        """The mode's own task label per subject (float 0/1, NaN where the mode does not score it), shape (n,)."""
        if self.mode_labels is None:
            return np.where(self.reference_mask(), np.asarray(self.labels, dtype=np.float64), np.nan)
        return np.asarray(self.mode_labels[mode], dtype=np.float64)

    def mode_mask(self, mode: str) -> NDArray[np.bool_]:
        """Subjects the mode is scored on (its population, a defined label), shape (n,)."""
        return np.isfinite(self.mode_label(mode))


def _risk_counts(days: NDArray[np.float64], event: NDArray[np.int_], grid: NDArray[np.float64]) -> NDArray[np.float64]:
    at_risk = (days[None, :] >= grid[:, None]).sum(axis=1)
    cell = np.clip(np.searchsorted(grid, days, side="right") - 1, 0, grid.size - 1)
    events = np.bincount(cell[event == 1], minlength=grid.size)
    return np.r_[at_risk, events].astype(np.float64)


def _histogram(values: NDArray[np.float64], bins: int) -> NDArray[np.float64]:
    idx = np.clip((np.clip(values, 0.0, 1.0) * bins).astype(int), 0, bins - 1)
    return np.bincount(idx, minlength=bins).astype(np.float64)


def _mode_blocks(inputs: SiteInputs, mode: str, layout: AggregateLayout) -> list[NDArray[np.float64]]:
    """The mode's blocks, counted on its own subjects (:meth:`SiteInputs.mode_mask`) against its own label."""
    label, scores = inputs.mode_label(mode), np.asarray(inputs.scores[mode], dtype=np.float64)
    if scores.shape != label.shape:
        raise PooledStatisticsError(f"{mode} scores must be one per subject ({label.size}), but had {scores.shape}")
    own = np.isfinite(label)
    y, s = label[own].astype(np.int64), scores[own]
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise PooledStatisticsError(f"{mode} labels must be 0/1 (NaN: not scored), but held {np.unique(y)[:5]}")
    if np.any((s < 0) | (s > 1)) or not np.all(np.isfinite(s)):
        raise PooledStatisticsError(f"{mode} scores must be probabilities in [0, 1] for every subject the mode "
                                    f"scores ({y.size})")
    cut = float(inputs.cutoffs[mode])
    called = s >= cut
    confusion = [np.sum(called & (y == 1)), np.sum(called & (y == 0)), np.sum(~called & (y == 0)),
                 np.sum(~called & (y == 1))]
    cal_idx = np.clip((s * CALIBRATION_BINS).astype(int), 0, CALIBRATION_BINS - 1)
    calibration = np.r_[
        np.bincount(cal_idx, minlength=CALIBRATION_BINS),
        np.bincount(cal_idx, weights=y, minlength=CALIBRATION_BINS),
        np.bincount(cal_idx, weights=s, minlength=CALIBRATION_BINS),
    ]
    grid = np.asarray(layout.pfs_grid_days)
    keep = inputs.pfs_mask()[own]
    t, e, called = inputs.pfs_days[own][keep], inputs.pfs_event[own][keep], called[keep]
    return [
        _histogram(s[y == 1], layout.score_bins),
        _histogram(s[y == 0], layout.score_bins),
        np.asarray(confusion, dtype=np.float64),
        np.asarray([np.sum((s - y) ** 2), y.size], dtype=np.float64),
        calibration.astype(np.float64),
        _risk_counts(t[called], e[called], grid),
        _risk_counts(t[~called], e[~called], grid),
    ]


def site_aggregate(inputs: SiteInputs, layout: AggregateLayout | None = None) -> NDArray[np.float64]:
    """A site's aggregate vector (counts and sums only), shape ``(layout.size,)``.

    Each mode's blocks count the subjects that mode scores, against its own label; the reference blocks the
    reference subjects against the reference label (:class:`SiteInputs`).
    """
    layout = layout or AggregateLayout()
    reference = inputs.reference_mask()
    y_all = np.asarray(inputs.labels)
    if y_all.ndim != 1 or reference.shape != y_all.shape:
        raise PooledStatisticsError(f"labels must be a 1-D array with one reference flag each; got {y_all.shape} "
                                    f"labels, {reference.shape} flags")
    y = y_all[reference]
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise PooledStatisticsError(f"labels must be 0/1 for every reference subject, but held {np.unique(y)[:5]}")
    y = y.astype(np.int64)
    if inputs.pfs_days.size and inputs.pfs_days.min() < layout.pfs_grid_days[0]:
        raise PooledStatisticsError(f"PFS time {inputs.pfs_days.min()} lies before the grid start; times are >= 0")
    parts: list[NDArray[np.float64]] = []
    for mode in MODES:
        parts += _mode_blocks(inputs, mode, layout)
    grid = np.asarray(layout.pfs_grid_days)
    keep = inputs.pfs_mask()
    t, e, yp = inputs.pfs_days[keep], inputs.pfs_event[keep], y_all[keep].astype(np.int64)
    parts.append(_risk_counts(t, e, grid))
    for cls in (1, 0):
        parts.append(_risk_counts(t[yp == cls], e[yp == cls], grid))
    orr = dict(inputs.orr_counts or {key: int(y.sum()) for key in ORR_KEYS[1:]} | {"n": int(y.size)})
    for key in ORR_KEYS:
        orr.setdefault(f"itt_{key}", orr[key])  # enrolment unknown: the analysed subjects stand in
    parts.append(np.asarray([orr[key] for key in ORR_KEYS], dtype=np.float64))
    parts.append(np.asarray([orr[key] for key in ORR_ITT_KEYS], dtype=np.float64))
    parts += _landmark_blocks(inputs, keep, grid)
    parts += _dhi_blocks(inputs, reference, y, layout)
    vector = np.concatenate(parts)
    assert vector.size == layout.size, "block lengths drifted from AggregateLayout.blocks()"
    return vector


def _landmark_blocks(inputs: SiteInputs, keep: NDArray[np.bool_],
                     grid: NDArray[np.float64]) -> list[NDArray[np.float64]]:
    """Risk tables from the T1 landmark on, by response at T1 (:func:`evaluation.survival.landmark`)."""
    if inputs.landmark_response is None:
        return [np.zeros(2 * grid.size), np.zeros(2 * grid.size)]
    t, e, group, _ = landmark(inputs.pfs_days[keep], inputs.pfs_event[keep],
                              np.asarray(inputs.landmark_response, dtype=np.float64)[keep], inputs.landmark_day)
    return [_risk_counts(t[group], e[group], grid), _risk_counts(t[~group], e[~group], grid)]


def _dhi_blocks(inputs: SiteInputs, reference: NDArray[np.bool_], y: NDArray[np.int_],
                layout: AggregateLayout) -> list[NDArray[np.float64]]:
    """DHI histograms of the reference subjects (``y`` their reference labels) by reference response."""
    if inputs.dhi is None:
        return [np.zeros(layout.dhi_bins), np.zeros(layout.dhi_bins)]
    dhi = np.asarray(inputs.dhi, dtype=np.float64)
    if dhi.shape != reference.shape or not np.all(np.isfinite(dhi[reference])):
        raise PooledStatisticsError(f"DHI must be finite, one per subject ({reference.size}); got shape {dhi.shape}")
    dhi = dhi[reference]
    low, high = layout.dhi_range
    scaled = (dhi - low) / (high - low)
    return [_histogram(scaled[y == 1], layout.dhi_bins), _histogram(scaled[y == 0], layout.dhi_bins)]


@dataclass(frozen=True)
class Suppression:
    """A statistic a site contributes nothing to, because one of its cells is below the protocol's minimum."""

    site: str
    statistic: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"site": self.site, "statistic": self.statistic, "reason": self.reason}


def suppress_small_cells(vector: NDArray[np.float64], layout: AggregateLayout, min_cell: int,
                         site: str) -> tuple[NDArray[np.float64], list[Suppression]]:
    """Zero every statistic of a site aggregate whose defining cells hold fewer than ``min_cell`` subjects.

    Checked before the vector leaves the site (``configs/study.yaml`` ``statistics.min_cell_size``): per mode,
    responders and non-responders (the whole mode: ROC, confusion, Brier, calibration, KM by call); the
    overall KM (subjects at risk at day 0); the KM by reference response and the T1-landmark KM (each group);
    each ORR block (its denominator); the DHI histograms (each class). A suppressed statistic is all zeros, so
    the pooled value is that of the other sites, and the returned list says which and why.

    Returns
    -------
    vector : ndarray, shape (layout.size,)
        A copy with the suppressed blocks zeroed.
    suppressed : list of Suppression
    """
    out = np.asarray(vector, dtype=np.float64).copy()
    blocks = layout.unpack(out)  # views into ``out``
    checks: list[tuple[str, list[str], dict[str, float]]] = [
        (mode, [name for name, _ in layout.blocks() if name.startswith(f"{mode}.")],
         {"responders": blocks[f"{mode}.hist_pos"].sum(), "non-responders": blocks[f"{mode}.hist_neg"].sum()})
        for mode in MODES]
    checks += [
        ("km_all", ["km_all"], {"subjects": blocks["km_all"][0]}),
        ("km_reference", ["km_ref_pos", "km_ref_neg"],
         {"responders": blocks["km_ref_pos"][0], "non-responders": blocks["km_ref_neg"][0]}),
        ("orr", ["orr"], {"analysed": blocks["orr"][0]}),
        ("orr_itt", ["orr_itt"], {"enrolled": blocks["orr_itt"][0]}),
        ("dhi", ["dhi.hist_pos", "dhi.hist_neg"],
         {"responders": blocks["dhi.hist_pos"].sum(), "non-responders": blocks["dhi.hist_neg"].sum()}),
        ("km_landmark", ["km_landmark_pos", "km_landmark_neg"],
         {"responders at T1": blocks["km_landmark_pos"][0], "non-responders at T1": blocks["km_landmark_neg"][0]}),
    ]
    suppressed = []
    for statistic, names, cells in checks:
        if not any(blocks[n].any() for n in names):
            continue  # nothing reported (e.g. no DHI): nothing to suppress
        small = {cell: round(float(count)) for cell, count in cells.items() if count < min_cell}
        if small:
            for name in names:
                blocks[name][:] = 0.0
            text = ", ".join(f"{count} {cell}" for cell, count in small.items())
            suppressed.append(Suppression(site, statistic, f"{text} (< min_cell_size {min_cell})"))
    return out, suppressed


class AggregateCodec(Protocol):
    """The encryption seam: sites ``encrypt``, the server ``add`` s, a key holder ``decrypt`` s."""

    def encrypt(self, vector: NDArray[np.float64]) -> Any: ...

    def add(self, a: Any, b: Any) -> Any: ...

    def decrypt(self, blob: Any, length: int) -> NDArray[np.float64]: ...


class PlainCodec:
    """No encryption (identity). For tests and single-site runs only: the server would see site counts."""

    def encrypt(self, vector: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(vector, dtype=np.float64).copy()

    def add(self, a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(a) + np.asarray(b)

    def decrypt(self, blob: NDArray[np.float64], length: int) -> NDArray[np.float64]:
        return np.asarray(blob, dtype=np.float64)[:length]


class CkksCodec:
    """CKKS through :mod:`privacy.ckks`: sites hold ``site_ctx`` (secret key), the server only ``public_ctx``.

    Decrypted sums of counts are rounded back to integers except the blocks that carry real-valued sums
    (Brier and calibration sums); CKKS noise at scale 2^40 is ~1e-7, far below 0.5.
    """

    def __init__(self, site_ctx: Any, public_ctx: Any, params: Any) -> None:
        self.site_ctx, self.public_ctx, self.params = site_ctx, public_ctx, params

    def encrypt(self, vector: NDArray[np.float64]) -> list[bytes]:
        from privacy.ckks import encrypt_vector

        return encrypt_vector(self.site_ctx, np.asarray(vector, dtype=np.float64), self.params)

    def add(self, a: Sequence[bytes], b: Sequence[bytes]) -> list[bytes]:
        from privacy.ckks import load_ciphertext

        if len(a) != len(b):
            raise PooledStatisticsError(f"ciphertext lists differ in length ({len(a)} vs {len(b)}); layouts differ")
        out = []
        for x, y in zip(a, b, strict=True):
            out.append((load_ciphertext(self.public_ctx, x) + load_ciphertext(self.public_ctx, y)).serialize())
        return out

    def decrypt(self, blob: Sequence[bytes], length: int) -> NDArray[np.float64]:
        from privacy.ckks import decrypt_vector

        return decrypt_vector(self.site_ctx, blob, length)


def pool(vectors: Sequence[NDArray[np.float64]], codec: AggregateCodec, layout: AggregateLayout) -> NDArray[np.float64]:
    """Encrypt each site's vector, sum the ciphertexts as the server would, and decrypt the sum once.

    Returns
    -------
    ndarray, shape (layout.size,)
        The summed aggregate; integer blocks rounded (real-valued sums kept).
    """
    return _round_counts(sum_encrypted(vectors, codec, layout.size), layout)


def sum_encrypted(vectors: Sequence[NDArray[np.float64]], codec: AggregateCodec, length: int) -> NDArray[np.float64]:
    """Each site encrypts its vector, the server adds the ciphertexts, a key holder decrypts the sum only.

    Returns
    -------
    ndarray, shape (length,)
        The sum of ``vectors`` (with CKKS noise, ~1e-7 absolute, under :class:`CkksCodec`).
    """
    if not vectors:
        raise PooledStatisticsError("no site aggregates to pool; at least one site must report")
    blobs = [codec.encrypt(v) for v in vectors]
    total = blobs[0]
    for blob in blobs[1:]:
        total = codec.add(total, blob)
    return codec.decrypt(total, length)


def _round_counts(vector: NDArray[np.float64], layout: AggregateLayout) -> NDArray[np.float64]:
    """Round every decrypted count to an integer: all blocks but the real-valued sums — the Brier sum of squares
    and the calibration score sums (the calibration block's subject and responder counts are counts; left
    unrounded, CKKS noise on an empty bin gave observed rates like −18.98 and 4.91)."""
    out, start = vector.copy(), 0
    for name, n in layout.blocks():
        if name.endswith(".brier"):
            out[start + 1] = np.round(out[start + 1])  # (sum of squared errors, n)
        elif name.endswith(".calibration"):
            counts = 2 * CALIBRATION_BINS  # (count, responders) per bin; then the score sums
            out[start : start + counts] = np.round(out[start : start + counts])
        else:
            out[start : start + n] = np.round(out[start : start + n])
        start += n
    return out


def binned_auc(hist_pos: NDArray[np.float64], hist_neg: NDArray[np.float64]) -> tuple[float, float]:
    """AUC and DeLong variance of binned scores (scores sharing a bin count as ties).

    Returns
    -------
    auc, variance : float
    """
    m, n = float(hist_pos.sum()), float(hist_neg.sum())
    if m == 0 or n == 0:
        return float("nan"), float("nan")
    neg_below = np.cumsum(hist_neg) - hist_neg
    pos_above = hist_pos.sum() - np.cumsum(hist_pos)
    v10 = (neg_below + 0.5 * hist_neg) / n  # per positive in bin b
    v01 = (pos_above + 0.5 * hist_pos) / m  # per negative in bin b
    auc = float(np.sum(hist_pos * v10) / m)
    var10 = float(np.sum(hist_pos * (v10 - auc) ** 2) / (m - 1)) if m > 1 else 0.0
    var01 = float(np.sum(hist_neg * (v01 - auc) ** 2) / (n - 1)) if n > 1 else 0.0
    return auc, var10 / m + var01 / n


def auc_binning_bound(hist_pos: NDArray[np.float64], hist_neg: NDArray[np.float64]) -> float:
    """Largest possible |binned AUC − exact AUC|: half the fraction of cross-class pairs sharing a bin."""
    pairs = float(hist_pos.sum() * hist_neg.sum())
    return float(0.5 * np.sum(hist_pos * hist_neg) / pairs) if pairs else float("nan")  # one class: no AUC


def risk_table_from_block(block: NDArray[np.float64], layout: AggregateLayout) -> RiskTable:
    """Decode a ``2 * k`` (at risk, events) block into a :class:`~evaluation.survival.RiskTable`."""
    k = len(layout.pfs_grid_days)
    return RiskTable(np.asarray(layout.pfs_grid_days, dtype=np.float64), block[:k].astype(np.int64),
                     block[k:].astype(np.int64))


def _mode_metrics(blocks: Mapping[str, NDArray[np.float64]], mode: str, cutoff: float,
                  layout: AggregateLayout) -> dict[str, Any]:
    auc, var = binned_auc(blocks[f"{mode}.hist_pos"], blocks[f"{mode}.hist_neg"])
    classes = (int(blocks[f"{mode}.hist_pos"].sum()), int(blocks[f"{mode}.hist_neg"].sum()))
    tp, fp, tn, fn = (int(v) for v in blocks[f"{mode}.confusion"])
    bm = binary_metrics_from_counts(tp, fp, tn, fn, cutoff)
    sse, n = blocks[f"{mode}.brier"]
    cal = blocks[f"{mode}.calibration"].reshape(3, CALIBRATION_BINS)
    keep = cal[0] > 0
    pos = risk_table_from_block(blocks[f"{mode}.km_called_pos"], layout)
    neg = risk_table_from_block(blocks[f"{mode}.km_called_neg"], layout)
    chi2, p = logrank(pos, neg) if pos.at_risk[0] and neg.at_risk[0] else (float("nan"), float("nan"))
    estimable = min(classes) >= 2
    return {
        "auc": auc if estimable else None,
        "auc_ci": list(normal_ci(auc, var)) if estimable else None,
        **({} if estimable else {"auc_not_estimable": f"DeLong variance needs at least 2 subjects in each class, "
                                                      f"but had {classes[0]} responder(s) and {classes[1]} "
                                                      "non-responder(s)"}),
        "auc_binning_bound": auc_binning_bound(blocks[f"{mode}.hist_pos"], blocks[f"{mode}.hist_neg"]),
        "cutoff": cutoff,
        "n": int(np.rint(n)),  # the brier block is not rounded after decryption (CKKS noise ~1e-7)
        "population": MODE_POPULATIONS[mode],  # the mode's own subjects (n), judged against its own task's label
        "sensitivity": bm.sensitivity.estimate,
        "sensitivity_ci": [bm.sensitivity.low, bm.sensitivity.high],
        "specificity": bm.specificity.estimate,
        "specificity_ci": [bm.specificity.low, bm.specificity.high],
        "ppv": bm.ppv.estimate,
        "npv": bm.npv.estimate,
        "accuracy": bm.accuracy.estimate,
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        "brier": float(sse / n) if n else float("nan"),
        "calibration": {"observed": (cal[1][keep] / cal[0][keep]).tolist(),
                        "predicted": (cal[2][keep] / cal[0][keep]).tolist(), "count": cal[0][keep].tolist()},
        "logrank_called_chi2": chi2,
        "logrank_called_p": p,
        "roc": binned_roc(blocks[f"{mode}.hist_pos"], blocks[f"{mode}.hist_neg"]),
        "km_called": {"responder": _km_json(pos), "non-responder": _km_json(neg)},
    }


def binned_roc(hist_pos: NDArray[np.float64], hist_neg: NDArray[np.float64]) -> dict[str, list[float]]:
    """ROC vertices at the bin edges (threshold sweeping from the top bin down), from (0, 0) to (1, 1)."""
    m, n = max(hist_pos.sum(), 1.0), max(hist_neg.sum(), 1.0)
    tpr = np.r_[0.0, np.cumsum(hist_pos[::-1]) / m]
    fpr = np.r_[0.0, np.cumsum(hist_neg[::-1]) / n]
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}


def _km_json(table: RiskTable) -> dict[str, list[float]]:
    if table.at_risk[0] == 0:
        return {"times": [], "survival": [], "low": [], "high": [], "at_risk": []}
    km = kaplan_meier(table)
    return {"times": km.times.tolist(), "survival": km.survival.tolist(), "low": km.low.tolist(),
            "high": km.high.tolist(), "at_risk": table.at_risk.tolist()}


def pooled_metrics(summed: NDArray[np.float64], cutoffs: Mapping[str, float],
                   layout: AggregateLayout | None = None) -> dict[str, Any]:
    """Pooled statistics from a summed aggregate vector (the server-side view after decryption).

    Returns
    -------
    dict
        Per mode the accuracy block (``n`` and ``population``: that mode's own subjects); plus ``orr``,
        ``orr_ci`` (RECIST 1.1 confirmed, Clopper–Pearson), ``orr_all`` for every ORR definition,
        ``median_pfs_days``, ``median_pfs_ci`` (Brookmeyer–Crowley on the binned grid),
        ``km`` (times, survival, at risk) and ``n`` (the analysed subjects of the reference endpoints).
    """
    layout = layout or AggregateLayout()
    blocks = layout.unpack(np.asarray(summed, dtype=np.float64))
    out: dict[str, Any] = {mode: _mode_metrics(blocks, mode, float(cutoffs[mode]), layout) for mode in MODES}
    orr = dict(zip(ORR_KEYS, (int(v) for v in blocks["orr"]), strict=True))
    orr |= dict(zip(ORR_ITT_KEYS, (int(v) for v in blocks["orr_itt"]), strict=True))
    out.update(orr_summary(orr))
    km = kaplan_meier(risk_table_from_block(blocks["km_all"], layout))
    out.update(median_block(km))
    out["n_pfs"] = int(blocks["km_all"][0])  # PFS-population subjects at risk at day 0 (sites that passed)
    out["km"] = _km_json(km.table)
    ref_pos = risk_table_from_block(blocks["km_ref_pos"], layout)
    ref_neg = risk_table_from_block(blocks["km_ref_neg"], layout)
    out["km_reference"] = {"responder": _km_json(ref_pos), "non-responder": _km_json(ref_neg)}
    chi2, p = logrank(ref_pos, ref_neg) if ref_pos.at_risk[0] and ref_neg.at_risk[0] else (float("nan"),) * 2
    out["logrank_reference_chi2"], out["logrank_reference_p"] = chi2, p
    out.update(_landmark_metrics(blocks, layout))
    out["n"] = orr["n"]
    dhi_pos, dhi_neg = blocks["dhi.hist_pos"], blocks["dhi.hist_neg"]
    dhi_auc, dhi_var = binned_auc(dhi_pos, dhi_neg)
    has_dhi = bool(np.isfinite(dhi_auc))
    out["dhi_auc"] = dhi_auc if has_dhi else None
    out["dhi_auc_ci"] = list(normal_ci(dhi_auc, dhi_var)) if has_dhi else None
    out["dhi_auc_binning_bound"] = auc_binning_bound(dhi_pos, dhi_neg) if has_dhi else None
    return out


def _landmark_metrics(blocks: Mapping[str, NDArray[np.float64]], layout: AggregateLayout) -> dict[str, Any]:
    """KM and log-rank by response at the T1 landmark, from the landmark on (no guarantee-time bias)."""
    pos = risk_table_from_block(blocks["km_landmark_pos"], layout)
    neg = risk_table_from_block(blocks["km_landmark_neg"], layout)
    out: dict[str, Any] = {"landmark_n": int(pos.at_risk[0] + neg.at_risk[0]),
                           "km_landmark": {"responder": _km_json(pos), "non-responder": _km_json(neg)}}
    if pos.at_risk[0] and neg.at_risk[0] and (pos.events.sum() + neg.events.sum()):
        out["logrank_landmark_chi2"], out["logrank_landmark_p"] = logrank(pos, neg)
    else:
        events = int(pos.events.sum() + neg.events.sum())
        out |= {"logrank_landmark_chi2": None, "logrank_landmark_p": None,
                "logrank_landmark_not_estimable": f"responders at risk {int(pos.at_risk[0])}, non-responders "
                                                  f"{int(neg.at_risk[0])}, events {events}"}
    return out


def median_block(km: Any) -> dict[str, Any]:
    """``median_pfs_days``, ``median_pfs_ci`` (Brookmeyer–Crowley; a limit not reached is ``inf``) and, when the
    median is not reached, ``median_pfs_days: None`` with ``median_pfs_days_not_estimable`` (site and pooled)."""
    median, ci, reason = median_or_reason(km)
    return {"median_pfs_days": median, "median_pfs_ci": list(ci)} | (
        {"median_pfs_days_not_estimable": reason} if reason else {})


def orr_summary(counts: Mapping[str, int]) -> dict[str, Any]:
    """The ORR entries of ``metrics.json`` (site and pooled blocks alike) from ``ORR_KEYS`` + ``ORR_ITT_KEYS`` counts.

    ``orr``/``orr_ci``/``orr_n``: RECIST 1.1 confirmed ORR over all enrolled (the protocol's denominator,
    ``orr_denominator`` says so), Clopper–Pearson 95 % CI; ``orr_analysed``/``orr_analysed_ci``/``orr_analysed_n``
    the same over the analysed (efficacy) population, shown beside it; ``orr_all`` (enrolled) and
    ``orr_all_analysed`` every definition as ``{"k", "n", "estimate", "ci"}``.
    """
    def props(prefix: str) -> dict[str, Any]:
        return {key: proportion_ci(int(counts[f"{prefix}{key}"]), int(counts[f"{prefix}n"]), method="clopper-pearson")
                for key in ORR_KEYS[1:]}

    itt, analysed = props("itt_"), props("")
    return {
        "orr": itt["recist_confirmed"].estimate, "orr_ci": [itt["recist_confirmed"].low, itt["recist_confirmed"].high],
        "orr_n": int(counts["itt_n"]), "orr_denominator": ORR_DENOMINATOR,
        "orr_analysed": analysed["recist_confirmed"].estimate,
        "orr_analysed_ci": [analysed["recist_confirmed"].low, analysed["recist_confirmed"].high],
        "orr_analysed_n": int(counts["n"]), "orr_analysed_basis": ORR_ANALYSED,
        "orr_all": {k: {"k": p.k, "n": p.n, "estimate": p.estimate, "ci": [p.low, p.high]} for k, p in itt.items()},
        "orr_all_analysed": {k: {"k": p.k, "n": p.n, "estimate": p.estimate, "ci": [p.low, p.high]}
                             for k, p in analysed.items()},
    }


def score_histograms(labels: NDArray[np.int_], scores: NDArray[np.float64],
                     bins: int = AggregateLayout.score_bins) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A site's score histograms ``(responders, non-responders)`` over ``bins`` equal bins of [0, 1].

    The site-level counts a site reports instead of patient rows (the ``<mode>.hist_pos/neg`` blocks of
    :func:`site_aggregate`); sum them over sites and pass the sums to :func:`binned_auc` / :func:`binned_youden`.
    """
    y, s = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or not set(np.unique(y).tolist()) <= {0, 1}:
        raise PooledStatisticsError(f"need one 0/1 label per score; got labels {y.shape}, scores {s.shape}")
    return _histogram(s[y == 1], bins), _histogram(s[y == 0], bins)


def binned_youden(hist_pos: NDArray[np.float64], hist_neg: NDArray[np.float64]) -> float:
    """Youden cut-off (max sensitivity + specificity − 1) at a bin's lower edge, from pooled histograms.

    A subject is called positive when ``score >= cutoff``; ties in J go to the highest edge (most specific),
    as :func:`evaluation.stats.youden_cutoff` does on patient rows. Error: at most one bin width.
    """
    if hist_pos.sum() == 0 or hist_neg.sum() == 0:
        raise PooledStatisticsError("a Youden cut-off needs responders and non-responders in the pooled histograms")
    roc = binned_roc(hist_pos, hist_neg)
    j = np.asarray(roc["tpr"][1:]) - np.asarray(roc["fpr"][1:])  # k-th vertex: the top k bins called positive
    k = int(np.argmax(j)) + 1
    return float((hist_pos.size - k) / hist_pos.size)
