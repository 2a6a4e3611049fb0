"""A site's model inputs (``model_inputs.pt``) from its sub-region graphs, CRF and reference labels.

Plain functions over tables and graphs; the entry point (``fedresponse train``) reads the store and
calls :func:`site_inputs`. Everything stays at the site.

Per time point, the global trajectory ``(T, G)`` has these feature groups (node columns looked up by name
in :data:`radiomics.node_features.NODE_FEATURES`):

- ``volume``: log tumour volume (mL) and its log ratio to T0;
- ``intensity``: volume-weighted means of the sub-regions' first-order statistics (whole-tumour mean,
  median, p10, p90, IQR, robust MAD, skewness, kurtosis, entropy, uniformity);
- ``texture``: volume-weighted means of the sub-regions' GLCM features (joint entropy, contrast,
  normalised inverse difference; IBSI 3-D merged, :data:`radiomics.node_features.TEXTURE_TAGS`);
- ``heterogeneity``: dispersion between sub-regions (standard deviation over valid nodes of the mean,
  p90 and entropy) and the fraction of sub-regions that are empty;
- ``shape``: where the volume sits among the sub-regions, from the T0 node centroids (``pos``) weighted
  by each node's volume at that time point — distance of the volume-weighted centroid from the T0
  tumour centroid (mm), radius of gyration (mm) and anisotropy ``1 − λ_min/λ_max`` of the weighted
  centroid covariance. A coarse, graph-only shape descriptor: no image is re-read;
- ``dhi``: the Dynamic Heterogeneity Index of the interval ending at that time point (0 at T0) when a
  DHI table is given (``radiomics dhi``), else left out;
- ``recist`` (:func:`measurement_trajectory`, not radiomics): the readers' reference measurements of
  *all* target lesions at that visit (``assessment/visits.csv``) — log(1 + SLD in mm), SLD change from
  baseline as a fraction, and a new-lesion flag. The images cover one lesion; the label (SLD at T2,
  no new lesion) is about all of them, and these are known at the visit itself, so they are inputs
  of the mode that contains the visit and nothing later.

Labels, from the dynamic-iRECIST reference (``assessment/reference.csv``, ``visits.csv``):

- ``early``: ``RESPONDER == "Y"``; decided at the subject's last assessment (its best overall response
  uses every assessment), which lies after T1;
- ``full``: durable benefit — no iRECIST PFS event before ``durable_day``; decided on ``durable_day``
  (or the event day). Subjects whose full-mode label is decided by T2, or censored before ``durable_day``
  without an event, get NaN (left out of full mode, logged);
- PFS: iRECIST PFS (``IPFS_DAYS``, ``IPFS_EVENT``); pseudoprogression: 1 when ``PSEUDOPROG == "Y"``,
  0 when an iUPD was confirmed (``IPFS_SOURCE == "ICPD"``), NaN otherwise; ``recist_t1``: the RECIST 1.1
  overall response at T1.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Data

from fl_client.train import PatientRecord, SiteInputs
from models.exceptions import ModelInputError
from radiomics.node_features import N_FIRST_ORDER, NODE_FEATURES

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


def global_trajectory(graph: Data, dhi: list[float] | None = None) -> torch.Tensor:
    """The (T, G) global features of one patient's graph (see the module docstring).

    Raises :class:`ModelInputError` when the graph's node features are not the columns of
    :data:`radiomics.node_features.NODE_FEATURES` (graphs written by another radiomics version).
    """
    x, valid = graph.x.float(), graph.node_valid.bool()
    if x.shape[-1] != len(NODE_FEATURES):
        raise ModelInputError(f"graph {getattr(graph, 'usubjid', '?')}: has {x.shape[-1]} node features, expected "
                              f"{len(NODE_FEATURES)} ({', '.join(NODE_FEATURES)}); rebuild the sub-region graphs")
    if getattr(graph, "pos", None) is None:
        raise ModelInputError(f"graph {getattr(graph, 'usubjid', '?')}: has no node centroids (pos); the shape group "
                              "needs them; rebuild the sub-region graphs with radiomics.graphs")
    volume = graph.tumour_volume.float().clamp(min=1e-3)
    weights = (x[..., _COLUMN["node_volume_ratio_t0"]] * valid).clamp(min=0)  # node volume / T0 volume
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=1e-9)

    def weighted(columns: tuple[str, ...]) -> torch.Tensor:
        return (weights.unsqueeze(-1) * x[..., [_COLUMN[c] for c in columns]]).sum(1)  # (T, len(columns))

    count = valid.sum(-1).clamp(min=1).unsqueeze(-1)
    spread = []
    for column in _DISPERSION.values():
        values = torch.where(valid, x[..., column], torch.zeros_like(x[..., column]))
        mean = values.sum(-1, keepdim=True) / count
        spread.append((((values - mean) ** 2 * valid).sum(-1, keepdim=True) / count).sqrt())
    parts = [volume.log().unsqueeze(-1), (volume / volume[0]).log().unsqueeze(-1), weighted(_FIRST_ORDER),
             weighted(_TEXTURE), *spread, (~valid).float().mean(-1, keepdim=True),
             shape_descriptors(graph.pos, weights)]
    if dhi is not None:
        parts.append(torch.tensor(dhi, dtype=torch.float32).unsqueeze(-1))
    return torch.cat(parts, dim=-1)


def _labels(ref: pd.Series, last_assessment: float, t2_day: float, durable_day: int) -> dict[str, object]:
    days, event = float(ref["IPFS_DAYS"]), bool(int(ref["IPFS_EVENT"]))
    if event and days < durable_day:
        full, full_day = 0.0, days
    elif days >= durable_day:
        full, full_day = 1.0, float(durable_day)
    else:
        full, full_day = math.nan, math.nan  # censored before the landmark: benefit unknown
    if not full_day > t2_day:
        full = math.nan  # decided by T2 already: nothing to predict from the T2 scan
    source = str(ref.get("IPFS_SOURCE", ""))
    pseudo = 1.0 if str(ref.get("PSEUDOPROG", "N")) == "Y" else (0.0 if source == "ICPD" else math.nan)
    return {
        "responder": {"early": float(ref["RESPONDER"] == "Y"), "full": full},
        "label_day": {"early": last_assessment, "full": full_day if not math.isnan(full) else math.inf},
        "pfs_days": days, "pfs_event": event, "pseudo": pseudo,
    }


def site_inputs(
    site: str,
    graphs: list[Data],
    crf: pd.DataFrame,
    reference: pd.DataFrame,
    visits: pd.DataFrame,
    dhi: pd.DataFrame | None = None,
    durable_day: int = 183,
    populations: pd.DataFrame | None = None,
) -> SiteInputs:
    """Assemble :class:`SiteInputs` for the patients that have a graph, a CRF row and reference labels.

    With ``populations`` (the site's ``assessment/populations.csv``, :mod:`evaluation.populations`) only the
    efficacy population (``EFFFL == "Y"``) is featurized: training and evaluation use one set of patients.

    Parameters
    ----------
    graphs : list of Data
        ``radiomics.graphs.load_graphs`` output (``usubjid``, ``x``, ``tumour_volume``, ...), T = 3.
    crf, reference, visits : DataFrame
        ``crf.parquet`` of the store; ``reference.csv`` and ``visits.csv`` of its assessment.
    dhi : DataFrame, optional
        ``radiomics dhi`` table (``USUBJID, FROM, TO, DHI``).
    durable_day : int
        Landmark of the full-mode durable-benefit label (study day).
    populations : DataFrame, optional
        ``USUBJID, EFFFL, ...``: patients outside EFFFL are left out (logged with their count).
    """
    if populations is not None:
        efficacy = set(populations.loc[populations["EFFFL"] == "Y", "USUBJID"].astype(str))
        outside = [g for g in graphs if str(g.usubjid) not in efficacy]
        if outside:
            log.info("site %s: %d patient(s) outside the efficacy population EFFFL not featurized (e.g. %s)", site,
                     len(outside), outside[0].usubjid)
        graphs = [g for g in graphs if str(g.usubjid) in efficacy]
    crf_rows = crf.set_index("USUBJID")
    refs = reference.set_index("USUBJID")
    dhi_by = _dhi_table(dhi)
    records, skipped = [], []
    for graph in graphs:
        usubjid = str(graph.usubjid)
        if usubjid not in refs.index or usubjid not in crf_rows.index:
            skipped.append(usubjid)
            continue
        if graph.x.shape[0] < 3 or not bool(graph.time_valid[:3].all()):
            skipped.append(usubjid)
            continue
        own = visits[visits["USUBJID"] == usubjid]
        t1 = own.loc[own["VISIT"] == "T1", "RECIST_OVR"]
        labels = _labels(refs.loc[usubjid], float(own["ADY"].max()), float(graph.days[2]), durable_day)
        dhi_values = None if dhi_by is None else dhi_by.get(usubjid, [0.0, 0.0, 0.0])
        records.append(PatientRecord(
            usubjid=usubjid, site=site, graph=graph,
            globals_=torch.cat([global_trajectory(graph, dhi_values), measurement_trajectory(own)], dim=-1),
            clinical=clinical_vector(crf_rows.loc[usubjid]), recist_t1=str(t1.iloc[0]) if len(t1) else None,
            **labels,  # type: ignore[arg-type]
        ))
    if skipped:
        log.warning("site %s: %d subject(s) without graph/CRF/reference or all three scans left out (e.g. %s)",
                    site, len(skipped), skipped[0])
    if not records:
        raise ModelInputError(f"site {site}: no subject has a graph, a CRF row and reference labels; "
                              "run ingest, assess and radiomics graphs first")
    names, groups = global_names(dhi_by is not None)
    return SiteInputs(site, records, names, groups, list(CLINICAL_NAMES))


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
