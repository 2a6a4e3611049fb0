"""A site's model inputs (``model_inputs.pt``) from its sub-region graphs, CRF and reference labels.

Plain functions over tables and graphs; the entry point (``fedresponse train``) reads the store and
calls :func:`site_inputs`. Everything stays at the site.

Per time point, the global trajectory ``(T, G)`` has four feature groups:

- ``volume``: log tumour volume (mL) and its log ratio to T0;
- ``intensity``: volume-weighted means of the sub-regions' first-order statistics (whole-tumour mean,
  median, p10, p90, IQR, robust MAD, skewness, kurtosis, entropy, uniformity);
- ``heterogeneity``: dispersion between sub-regions (standard deviation over valid nodes of the mean,
  p90 and entropy) and the fraction of sub-regions that are empty;
- ``dhi``: the Dynamic Heterogeneity Index of the interval ending at that time point (0 at T0) when a
  DHI table is given (``radiomics dhi``), else left out.

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

log = logging.getLogger(__name__)

CLINICAL_NAMES: tuple[str, ...] = (
    "age_decades", "male", "smoking_former", "smoking_current", "ecog", "stage_iv", "squamous",
    "egfr_positive", "alk_positive", "pdl1_tps_fraction", "line_2plus",
)
_STAT_NAMES = ("mean", "median", "p10", "p90", "iqr", "rmad", "skew", "kurt", "entropy", "uniformity")
_DISPERSION = {"mean": 2, "p90": 5, "entropy": 10}  # column of x (radiomics.graphs.NODE_FEATURES)


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


def global_names(with_dhi: bool) -> tuple[list[str], list[str]]:
    """Names and groups of the global trajectory columns."""
    names = ["log_volume_ml", "log_volume_ratio_t0"] + [f"tumour_{s}" for s in _STAT_NAMES]
    names += [f"subregion_sd_{s}" for s in _DISPERSION] + ["empty_subregion_fraction"]
    groups = ["volume"] * 2 + ["intensity"] * len(_STAT_NAMES) + ["heterogeneity"] * (len(_DISPERSION) + 1)
    if with_dhi:
        names, groups = [*names, "dhi"], [*groups, "dhi"]
    return names, groups


def global_trajectory(graph: Data, dhi: list[float] | None = None) -> torch.Tensor:
    """The (T, G) global features of one patient's graph (see the module docstring)."""
    x, valid = graph.x.float(), graph.node_valid.bool()
    volume = graph.tumour_volume.float().clamp(min=1e-3)
    weights = (x[..., 1] * valid).clamp(min=0)  # node volume / T0 volume
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=1e-9)
    stats = (weights.unsqueeze(-1) * x[..., 2:]).sum(1)  # (T, 10)
    count = valid.sum(-1).clamp(min=1).unsqueeze(-1)
    spread = []
    for column in _DISPERSION.values():
        values = torch.where(valid, x[..., column], torch.zeros_like(x[..., column]))
        mean = values.sum(-1, keepdim=True) / count
        spread.append((((values - mean) ** 2 * valid).sum(-1, keepdim=True) / count).sqrt())
    parts = [volume.log().unsqueeze(-1), (volume / volume[0]).log().unsqueeze(-1), stats, *spread,
             (~valid).float().mean(-1, keepdim=True)]
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
) -> SiteInputs:
    """Assemble :class:`SiteInputs` for the patients that have a graph, a CRF row and reference labels.

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
    """
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
            usubjid=usubjid, site=site, graph=graph, globals_=global_trajectory(graph, dhi_values),
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
