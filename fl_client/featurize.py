"""A site's model inputs (``model_inputs.pt``) from its sub-region graphs, CRF and reference labels.

Plain functions over tables and graphs; the entry point (``fedresponse train``) reads the store and
calls :func:`site_inputs`. Everything stays at the site.

The sub-region graph holds the tumour's shells *and* the peritumoral rings (default 24 + 24 nodes; the
rings hold 7.5–13.5× the tumour's volume). Tumour columns are computed over the shell nodes only and the
peritumoral columns over the ring nodes only (:func:`tumour_node_count`), so a "tumour" mean is not ~88 %
lung and the peritumoral inflammation of pseudoprogression reaches every model, not only the ST-GCN.

Per time point, the global trajectory ``(T, G)`` has these feature groups (node columns looked up by name
in :data:`radiomics.node_features.NODE_FEATURES`):

- ``volume``: log tumour volume (mL) and its log ratio to T0;
- ``intensity``: volume-weighted means over the *tumour* sub-regions of their first-order statistics
  (mean, median, p10, p90, IQR, robust MAD, skewness, kurtosis, entropy, uniformity);
- ``texture``: volume-weighted means over the tumour sub-regions of their GLCM features (joint entropy,
  contrast, normalised inverse difference; IBSI 3-D merged, :data:`radiomics.node_features.TEXTURE_TAGS`);
- ``heterogeneity``: dispersion between the tumour sub-regions (standard deviation over valid tumour nodes
  of the mean, p90 and entropy) and the fraction of tumour sub-regions that are empty;
- ``shape``: where the tumour volume sits among its sub-regions, from the T0 node centroids (``pos``)
  weighted by each tumour node's volume at that time point — distance of the volume-weighted centroid from
  the T0 tumour centroid (mm), radius of gyration (mm) and anisotropy ``1 − λ_min/λ_max`` of the weighted
  centroid covariance. A coarse, graph-only shape descriptor: no image is re-read;
- ``peritumoral``: volume-weighted means over the *ring* sub-regions (mean, p10, p90, IQR, entropy, GLCM
  joint entropy and contrast) — the lung around the tumour (0 when the graph has no rings);
- ``peritumoral_change``: the ring mean HU minus its T0 value (0 at T0), known at the scan itself: the
  inflammation that marks pseudoprogression raises it at T1;
- ``dhi``: the Dynamic Heterogeneity Index of the interval ending at that time point (0 at T0) when a
  DHI table is given (``radiomics dhi``), else left out;
- ``recist`` (:func:`measurement_trajectory`, not radiomics): the readers' reference measurements of
  *all* target lesions at that visit (``assessment/visits.csv``) — log(1 + SLD in mm), SLD change from
  baseline as a fraction, and a new-lesion flag. The images cover one lesion; the label (SLD at T2,
  no new lesion) is about all of them, and these are known at the visit itself, so they are inputs
  of the mode that contains the visit and nothing later.

Labels (one task per mode, docs/models.md "Tasks"), from the dynamic-iRECIST reference
(``assessment/reference.csv``, ``visits.csv``):

- ``early`` (T0 + T1; a T2 scan is *not* required): ``RESPONDER == "Y"``, decided at the subject's last
  assessment (its best overall response uses every assessment), which lies after T1;
- ``full`` (T0–T2, every patient with a T2 scan): durable clinical benefit at ``durable_day`` (6 months)
  — no iRECIST PFS event before it; an early progressor (event by T2) is a negative, not dropped. Decided
  at the landmark; NaN when censored before it without an event, or without a T2 scan. ``dcb12``: the
  same at 365 days (scored with the full-mode model);
- PFS: iRECIST PFS (``IPFS_DAYS``, ``IPFS_EVENT``);
- pseudoprogression (the T1 task): among patients whose T1 call is ``iUPD``, 1 when that iUPD was not
  confirmed and resolved (``PSEUDOPROG == "Y"`` or T2 ``iSD/iPR/iCR``), 0 when confirmed (T2 ``iCPD`` or
  ``IPFS_SOURCE == "ICPD"``); NaN for everyone else. ``recist_t1``/``recist_t2``: the RECIST 1.1 overall
  responses at T1 and T2 (baselines).
"""

from __future__ import annotations

import functools
import logging
import math
from typing import cast

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Data

from fl_client.train import PatientRecord, SiteInputs
from models.exceptions import ModelInputError
from radiomics.node_features import N_FIRST_ORDER, NODE_FEATURES
from radiomics.subregions import SubregionSpec

log = logging.getLogger(__name__)

CLINICAL_NAMES: tuple[str, ...] = (
    "age_decades", "male", "smoking_former", "smoking_current", "ecog", "stage_iv", "squamous",
    "egfr_positive", "alk_positive", "pdl1_tps_fraction", "line_2plus",
)
_COLUMN = {name: index for index, name in enumerate(NODE_FEATURES)}
_FIRST_ORDER = NODE_FEATURES[_COLUMN["stat_mean"] : _COLUMN["stat_mean"] + N_FIRST_ORDER]  # ten IBSI statistics
_STAT_NAMES = ("mean", "median", "p10", "p90", "iqr", "rmad", "skew", "kurt", "entropy", "uniformity")
_TEXTURE = ("cm_joint_entr", "cm_contrast", "cm_inv_diff_norm")
_DISPERSION = {"mean": _COLUMN["stat_mean"], "p90": _COLUMN["stat_p90"], "entropy": _COLUMN["ih_entropy"]}
_SHAPE_NAMES = ("shape_centroid_shift_mm", "shape_gyration_radius_mm", "shape_anisotropy")
_RING = ("stat_mean", "stat_p10", "stat_p90", "stat_iqr", "ih_entropy", "cm_joint_entr", "cm_contrast")
_RING_NAMES = ("ring_mean", "ring_p10", "ring_p90", "ring_iqr", "ring_entropy", "ring_cm_joint_entr",
               "ring_cm_contrast")


def clinical_vector(row: pd.Series) -> torch.Tensor:
    """Encode one CRF row as :data:`CLINICAL_NAMES` (missing or unknown values → 0, the reference level)."""
    def text(name: str) -> str:
        value = row.get(name)
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).upper()

    def number(name: str, default: float = 0.0) -> float:
        value = pd.to_numeric(pd.Series([row.get(name)]), errors="coerce").iloc[0]
        return default if pd.isna(value) else float(value)

    values = [
        number("AGE", 65.0) / 10.0, float(text("SEX") == "M"), float(text("SMOKING") == "FORMER"),
        float(text("SMOKING") == "CURRENT"), number("ECOG"), float(text("STAGE").startswith("IV")),
        float(text("HISTOLOGY") == "SQUAMOUS"), float(text("EGFR") == "POSITIVE"), float(text("ALK") == "POSITIVE"),
        number("PDL1_TPS") / 100.0, float(number("LINE", 1.0) >= 2),
    ]
    return torch.tensor(values, dtype=torch.float32)


MEASUREMENT_NAMES = ("log_sld_mm", "sld_change_base", "new_lesion")
#: Groups that are not image features (left out of the delta-radiomics baseline).
MEASUREMENT_GROUPS = ("recist",)
_VISITS = ("T0", "T1", "T2")


def measurement_trajectory(visits: pd.DataFrame) -> torch.Tensor:
    """The (3, 3) ``recist`` group of one subject from its rows of ``assessment/visits.csv``.

    Columns :data:`MEASUREMENT_NAMES` at T0, T1, T2: ``log(1 + SLD_MM)``, ``PCHG_BASE / 100`` (0 at T0)
    and ``NEWLES == "Y"``. A visit whose SLD was not evaluable carries the previous visit's values
    forward (0 change at T0); the response call itself is never an input.
    """
    rows = visits.set_index("VISIT")
    out = torch.zeros(len(_VISITS), len(MEASUREMENT_NAMES))
    for t, visit in enumerate(_VISITS):
        row = rows.loc[visit] if visit in rows.index else None
        sld = pd.to_numeric(pd.Series([None if row is None else row.get("SLD_MM")]), errors="coerce").iloc[0]
        change = pd.to_numeric(pd.Series([None if row is None else row.get("PCHG_BASE")]), errors="coerce").iloc[0]
        if t and (pd.isna(sld) or pd.isna(change)):
            out[t, :2] = out[t - 1, :2]
        else:
            out[t, 0] = math.log1p(float(sld)) if pd.notna(sld) else 0.0
            out[t, 1] = float(change) / 100.0 if t and pd.notna(change) else 0.0
        out[t, 2] = float(row is not None and str(row.get("NEWLES", "")) == "Y")
    return out


def global_names(with_dhi: bool, with_measurements: bool = True) -> tuple[list[str], list[str]]:
    """Names and groups of the global trajectory columns: those of :func:`global_trajectory`, then (as
    :func:`site_inputs` writes them) those of :func:`measurement_trajectory`."""
    names = ["log_volume_ml", "log_volume_ratio_t0"] + [f"tumour_{s}" for s in _STAT_NAMES]
    names += [f"tumour_{t}" for t in _TEXTURE]
    names += [f"subregion_sd_{s}" for s in _DISPERSION] + ["empty_subregion_fraction", *_SHAPE_NAMES]
    groups = ["volume"] * 2 + ["intensity"] * len(_STAT_NAMES) + ["texture"] * len(_TEXTURE)
    groups += ["heterogeneity"] * (len(_DISPERSION) + 1) + ["shape"] * len(_SHAPE_NAMES)
    names += [*_RING_NAMES, "ring_mean_change_t0"]
    groups += ["peritumoral"] * len(_RING_NAMES) + ["peritumoral_change"]
    if with_dhi:
        names, groups = [*names, "dhi"], [*groups, "dhi"]
    if with_measurements:
        names, groups = [*names, *MEASUREMENT_NAMES], [*groups, *MEASUREMENT_GROUPS * len(MEASUREMENT_NAMES)]
    return names, groups


def shape_descriptors(pos: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Coarse shape of the volume distribution over the sub-regions, per time point.

    Parameters
    ----------
    pos : Tensor, shape (V, 3)
        Node centroids at T0, mm from the T0 tumour centroid.
    weights : Tensor, shape (T, V)
        Non-negative node weights summing to 1 per time point (all zero when the tumour vanished).

    Returns
    -------
    Tensor, shape (T, 3)
        Distance of the weighted centroid from the origin (mm), radius of gyration about the weighted
        centroid (mm), and anisotropy ``1 − λ_min / λ_max`` of the weighted covariance (0 for an isotropic
        or empty distribution).
    """
    pos = pos.float()
    centre = weights @ pos  # (T, 3)
    offset = pos.unsqueeze(0) - centre.unsqueeze(1)  # (T, V, 3)
    cov = torch.einsum("tv,tvi,tvj->tij", weights, offset, offset)
    gyration = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1).clamp(min=0).sqrt()
    eig = torch.linalg.eigvalsh(cov).clamp(min=0)  # ascending
    ratio = eig[:, 0] / eig[:, -1].clamp(min=1e-9)
    anisotropy = torch.where(eig[:, -1] > 1e-9, 1.0 - ratio, torch.zeros_like(ratio))
    return torch.stack([torch.linalg.vector_norm(centre, dim=-1), gyration, anisotropy], dim=-1)


def tumour_node_count(n_nodes: int, spec: SubregionSpec | None = None) -> int:
    """How many leading nodes of a graph are tumour shells (the rest are peritumoral rings).

    :mod:`radiomics.subregions` orders nodes zone-major (shells core → rim, then rings), ``n_sectors`` per
    zone. With ``spec`` None the default layout is assumed when the node count matches it (48 = 3 shells ×
    8 + 3 rings × 8); any other count without a spec is read as tumour only (no ring columns, logged once).
    """
    if spec is None:
        default = SubregionSpec()
        if n_nodes == default.n_nodes:
            return default.n_shells * default.n_sectors
        _warn_no_rings(n_nodes)
        return n_nodes
    if spec.n_nodes != n_nodes:
        raise ModelInputError(f"the graph has {n_nodes} nodes but its SubregionSpec lays out {spec.n_nodes}; pass the "
                              "spec the graphs were built with")
    return spec.n_shells * spec.n_sectors


@functools.lru_cache(maxsize=8)
def _warn_no_rings(n_nodes: int) -> None:
    log.warning("graphs with %d nodes do not match the default sub-region layout: every node is read as tumour "
                "(peritumoral columns 0); pass the SubregionSpec to site_inputs", n_nodes)


def _weights(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Node weights (T, V') summing to 1 per time point: node volume over the nodes' total."""
    weights = (x[..., _COLUMN["node_volume_ratio_t0"]] * valid).clamp(min=0)  # node volume / T0 tumour volume
    return weights / weights.sum(-1, keepdim=True).clamp(min=1e-9)


def _spread(x: torch.Tensor, valid: torch.Tensor) -> list[torch.Tensor]:
    count = valid.sum(-1).clamp(min=1).unsqueeze(-1)
    spread = []
    for column in _DISPERSION.values():
        values = torch.where(valid, x[..., column], torch.zeros_like(x[..., column]))
        mean = values.sum(-1, keepdim=True) / count
        spread.append((((values - mean) ** 2 * valid).sum(-1, keepdim=True) / count).sqrt())
    return spread


def global_trajectory(graph: Data, dhi: list[float] | None = None, spec: SubregionSpec | None = None) -> torch.Tensor:
    """The (T, G) global features of one patient's graph (see the module docstring).

    ``spec``: the graph's node layout (default: the standard one when the node count matches it,
    :func:`tumour_node_count`). Raises :class:`ModelInputError` when the graph's node features are not the
    columns of :data:`radiomics.node_features.NODE_FEATURES` (graphs written by another radiomics version).
    """
    x, valid = graph.x.float(), graph.node_valid.bool()
    if x.shape[-1] != len(NODE_FEATURES):
        raise ModelInputError(f"graph {getattr(graph, 'usubjid', '?')}: has {x.shape[-1]} node features, expected "
                              f"{len(NODE_FEATURES)} ({', '.join(NODE_FEATURES)}); rebuild the sub-region graphs")
    if getattr(graph, "pos", None) is None:
        raise ModelInputError(f"graph {getattr(graph, 'usubjid', '?')}: has no node centroids (pos); the shape group "
                              "needs them; rebuild the sub-region graphs with radiomics.graphs")
    n_tumour = tumour_node_count(int(x.shape[1]), spec)
    volume = graph.tumour_volume.float().clamp(min=1e-3)
    xt, vt = x[:, :n_tumour], valid[:, :n_tumour]
    weights = _weights(xt, vt)

    def weighted(columns: tuple[str, ...], values: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (w.unsqueeze(-1) * values[..., [_COLUMN[c] for c in columns]]).sum(1)  # (T, len(columns))

    xr, vr = x[:, n_tumour:], valid[:, n_tumour:]
    ring = weighted(_RING, xr, _weights(xr, vr)) if xr.shape[1] else x.new_zeros(x.shape[0], len(_RING))
    parts = [volume.log().unsqueeze(-1), (volume / volume[0]).log().unsqueeze(-1), weighted(_FIRST_ORDER, xt, weights),
             weighted(_TEXTURE, xt, weights), *_spread(xt, vt), (~vt).float().mean(-1, keepdim=True),
             shape_descriptors(graph.pos[:n_tumour], weights), ring, (ring[:, :1] - ring[:1, :1])]
    if dhi is not None:
        parts.append(torch.tensor(dhi, dtype=torch.float32).unsqueeze(-1))
    return torch.cat(parts, dim=-1)


RESOLVED_CALLS = ("iCR", "iPR", "iSD")  # a later call that shows an iUPD was not progression (Seymour 2017)


def _benefit(days: float, event: bool, landmark: int) -> float:
    """Durable clinical benefit at ``landmark``: 1 without an event before it, 0 with one, NaN if censored before."""
    if event and days < landmark:
        return 0.0
    return 1.0 if days >= landmark else math.nan


def _pseudo_label(ref: pd.Series, t1_call: str, t2_call: str) -> float:
    """The T1 pseudoprogression task: NaN unless T1 is iUPD; 0 when confirmed, 1 when it resolved."""
    if t1_call != "iUPD":
        return math.nan
    if t2_call == "iCPD":
        return 0.0  # confirmed at the next scan
    if t2_call in RESOLVED_CALLS or str(ref.get("PSEUDOPROG", "N")) == "Y":
        return 1.0  # resolved: pseudoprogression (a later, new progression does not undo it)
    # confirmed later, or neither confirmed nor resolved (e.g. lost before the confirmation scan)
    return 0.0 if str(ref.get("IPFS_SOURCE", "")) == "ICPD" else math.nan


def _labels(
    ref: pd.Series, last_assessment: float, t2_day: float | None, durable_day: int, t1_call: str = "",
    t2_call: str = "", late_day: int = 365,
) -> dict[str, object]:
    """Labels of one subject per task (module docstring); ``t2_day`` None: no T2 scan (no full-mode task)."""
    days, event = float(ref["IPFS_DAYS"]), bool(int(ref["IPFS_EVENT"]))
    full, late = _benefit(days, event, durable_day), _benefit(days, event, late_day)
    if t2_day is None or not durable_day > t2_day:
        full = late = math.nan  # no T2 scan, or a landmark the T2 inputs already reach
    return {
        "responder": {"early": float(ref["RESPONDER"] == "Y"), "full": full, "dcb12": late},
        "label_day": {"early": last_assessment, "full": float(durable_day) if math.isfinite(full) else math.inf,
                      "dcb12": float(late_day) if math.isfinite(late) else math.inf},
        "pfs_days": days, "pfs_event": event, "pseudo": _pseudo_label(ref, t1_call, t2_call),
    }


def _analysed(populations: pd.DataFrame) -> tuple[set[str], set[str]]:
    """(EFFFL, EARLYFL ∪ EFFFL) of ``populations.csv``: the full-mode task's patients and every featurized one
    (a table written before EARLYFL: :func:`evaluation.populations.with_later_flags`)."""
    from evaluation.populations import members, with_later_flags

    populations = with_later_flags(populations)
    full = members(populations, "EFFFL")
    return full, full | members(populations, "EARLYFL")


def _early_only(labels: dict[str, object]) -> None:
    """Blank the full-mode tasks (T2 inputs) of a patient in EARLYFL but not EFFFL: NaN label, never decided."""
    responder, label_day = cast(dict[str, float], labels["responder"]), cast(dict[str, float], labels["label_day"])
    for task in ("full", "dcb12"):
        responder[task], label_day[task] = math.nan, math.inf


def _call(own: pd.DataFrame, visit: str, column: str) -> str:
    calls = own.loc[own["VISIT"] == visit, column] if column in own.columns else pd.Series(dtype=str)
    return "" if calls.empty or pd.isna(calls.iloc[0]) else str(calls.iloc[0])


def site_inputs(
    site: str,
    graphs: list[Data],
    crf: pd.DataFrame,
    reference: pd.DataFrame,
    visits: pd.DataFrame,
    dhi: pd.DataFrame | None = None,
    durable_day: int = 183,
    spec: SubregionSpec | None = None,
    populations: pd.DataFrame | None = None,
) -> SiteInputs:
    """Assemble :class:`SiteInputs` for the patients that have a graph, a CRF row and reference labels.

    With ``populations`` (the site's ``assessment/populations.csv``, :mod:`evaluation.populations`) only the
    analysis populations are featurized: the early-mode task uses ``EARLYFL`` (T0 + T1 scanned; no T2
    required) and the full-mode tasks use ``EFFFL`` (their labels are NaN for a patient outside it), so
    training and evaluation use one set of patients per task.

    Parameters
    ----------
    graphs : list of Data
        ``radiomics.graphs.load_graphs`` output (``usubjid``, ``x``, ``tumour_volume``, ...); T0 and T1 valid,
        T2 optional (a missing T2 leaves the patient in early mode only).
    crf, reference, visits : DataFrame
        ``crf.parquet`` of the store; ``reference.csv`` and ``visits.csv`` of its assessment.
    dhi : DataFrame, optional
        ``radiomics dhi`` table (``USUBJID, FROM, TO, DHI``).
    durable_day : int
        Landmark of the full-mode durable-benefit label (study day).
    spec : SubregionSpec, optional
        Node layout of the graphs (tumour shells vs peritumoral rings, :func:`tumour_node_count`).
    populations : DataFrame, optional
        ``USUBJID, EARLYFL, EFFFL, ...``: patients outside EARLYFL ∪ EFFFL are left out (logged with their
        count); EARLYFL-only patients get NaN full-mode labels.
    """
    full_population: set[str] | None = None
    if populations is not None:
        full_population, analysed = _analysed(populations)
        outside = [g for g in graphs if str(g.usubjid) not in analysed]
        if outside:
            log.info("site %s: %d patient(s) outside the analysis populations EARLYFL ∪ EFFFL not featurized "
                     "(e.g. %s)", site, len(outside), outside[0].usubjid)
        graphs = [g for g in graphs if str(g.usubjid) in analysed]
    crf_rows = crf.set_index("USUBJID")
    refs = reference.set_index("USUBJID")
    dhi_by = _dhi_table(dhi)
    records, skipped, without_t2 = [], [], 0
    for graph in graphs:
        usubjid = str(graph.usubjid)
        time_valid = getattr(graph, "time_valid", torch.ones(int(graph.x.shape[0]), dtype=torch.bool))
        if usubjid not in refs.index or usubjid not in crf_rows.index or graph.x.shape[0] < 2 \
                or not bool(time_valid[:2].all()):
            skipped.append(usubjid)
            continue
        has_t2 = len(time_valid) >= 3 and bool(time_valid[2])
        graph = graph if has_t2 else _without_t2(graph)
        without_t2 += not has_t2
        own = visits[visits["USUBJID"] == usubjid]
        labels = _labels(refs.loc[usubjid], float(own["ADY"].max()), float(graph.days[2]) if has_t2 else None,
                         durable_day, _call(own, "T1", "IRECIST_OVR"), _call(own, "T2", "IRECIST_OVR"))
        if full_population is not None and usubjid not in full_population:
            _early_only(labels)
        dhi_values = None if dhi_by is None else dhi_by.get(usubjid, [0.0, 0.0, 0.0])
        records.append(PatientRecord(
            usubjid=usubjid, site=site, graph=graph,
            globals_=torch.cat([global_trajectory(graph, dhi_values, spec), measurement_trajectory(own)], dim=-1),
            clinical=clinical_vector(crf_rows.loc[usubjid]), recist_t1=_call(own, "T1", "RECIST_OVR") or None,
            recist_t2=(_call(own, "T2", "RECIST_OVR") or None) if has_t2 else None, n_scans=3 if has_t2 else 2,
            **labels,  # type: ignore[arg-type]
        ))
    if skipped:
        log.warning("site %s: %d subject(s) without graph/CRF/reference or without T0 and T1 scans left out (e.g. %s)",
                    site, len(skipped), skipped[0])
    if without_t2:
        log.info("site %s: %d subject(s) without a T2 scan: early mode only", site, without_t2)
    if not records:
        raise ModelInputError(f"site {site}: no subject has a graph, a CRF row and reference labels; "
                              "run ingest, assess and radiomics graphs first")
    names, groups = global_names(dhi_by is not None)
    return SiteInputs(site, records, names, groups, list(CLINICAL_NAMES))


#: Day offset of the placeholder slot of a missing T2 scan after T1 (the protocol's two cycles); keeps the
#: days strictly increasing so that nothing divides by a zero interval. The slot holds no valid node.
MISSING_T2_OFFSET_DAYS = 42.0


def _without_t2(graph: Data) -> Data:
    """The graph with an invalid T2 slot (no valid node, zero features, day T1 + 42, volume of T1)."""
    t = min(int(graph.x.shape[0]), 2)
    out = graph.clone()
    out.x = torch.cat([graph.x[:t], torch.zeros(1, *graph.x.shape[1:], dtype=graph.x.dtype)])
    out.x[2, :, _COLUMN["node_empty"]] = 1.0
    out.node_valid = torch.cat([graph.node_valid[:t], torch.zeros(1, *graph.node_valid.shape[1:], dtype=torch.bool)])
    out.days = torch.cat([graph.days[:t], graph.days[1:2] + MISSING_T2_OFFSET_DAYS])
    out.tumour_volume = torch.cat([graph.tumour_volume[:t], graph.tumour_volume[1:2]])
    if getattr(graph, "time_valid", None) is not None:
        out.time_valid = torch.cat([graph.time_valid[:t], torch.zeros(1, dtype=torch.bool)])
    if getattr(graph, "touches_edge", None) is not None:
        out.touches_edge = torch.cat([graph.touches_edge[:t], torch.zeros(1, dtype=torch.bool)])
    return out


def stale_columns(inputs: SiteInputs) -> str | None:
    """Why ``inputs`` (read from an existing ``model_inputs.pt``) does not match this featurizer, or None.

    Stale: the columns do not match their own names and groups (the first featurizer wrote 20 columns
    under 17 names), or the file comes from this featurizer (first column ``log_volume_ml``) but an older
    version of it (other names). Training on such a file would silently mislabel columns, so callers
    re-featurize the store or refuse it. Inputs with columns of their own (e.g. tests' synthetic records)
    are left alone when they are consistent.
    """
    names, groups = global_names("dhi" in inputs.global_names)
    width = int(inputs.records[0].globals_.shape[-1]) if inputs.records else len(inputs.global_names)
    ours = inputs.global_names[:1] == names[:1]
    consistent = len(inputs.global_names) == len(inputs.global_groups) == width
    if not consistent or (ours and (inputs.global_names, inputs.global_groups) != (names, groups)):
        return (f"site {inputs.site}: its model inputs have {width} global columns named {inputs.global_names}, "
                f"this featurizer writes {len(names)} ({names})")
    return None


def _dhi_table(dhi: pd.DataFrame | None) -> dict[str, list[float]] | None:
    """USUBJID → DHI at (T0, T1, T2): 0 at T0, then the DHI of the interval ending at each visit
    (``radiomics dhi`` columns ``USUBJID, FROM, TO, DHI``; a missing or non-finite interval counts 0)."""
    if dhi is None or dhi.empty:
        return None
    missing = [c for c in ("USUBJID", "TO", "DHI") if c not in dhi.columns]
    if missing:
        raise ModelInputError(f"the DHI table lacks {missing}; write it with `fedresponse radiomics dhi`")
    slot = {"T1": 1, "T2": 2}
    out: dict[str, list[float]] = {}
    for row in dhi.itertuples(index=False):
        values = out.setdefault(str(row.USUBJID), [0.0, 0.0, 0.0])
        value = float(row.DHI) if pd.notna(row.DHI) else 0.0
        if str(row.TO) in slot and np.isfinite(value):
            values[slot[str(row.TO)]] = value
    return out
