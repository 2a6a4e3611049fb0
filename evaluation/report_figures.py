"""Draw the figures of the two reports.

:func:`pooled_figures`, :func:`privacy_figure` and :func:`consort_figure` draw the central PI report's figures
from aggregates only (the pooled block of ``metrics.json``, the privacy ledger, CONSORT counts);
:func:`site_figures` draws a site report's patient-level figures (waterfall, spider, swimmer, the
interpretability panel, Bland–Altman and DHI box plots, one mark per patient) from that site's own tables,
at the site.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation import figures as figs
from evaluation import figures_patients as pfigs
from evaluation.agreement import bland_altman, cohen_kappa, icc_a1
from evaluation.evaluate import RunInputs, reader_sld
from evaluation.metrics import SiteData, has_split
from evaluation.pooled import MODE_POPULATIONS, MODES
from evaluation.protocol import load_protocol

log = logging.getLogger(__name__)

AT_RISK_DAYS: tuple[float, ...] = (0, 90, 180, 270, 360, 450, 540, 630, 720)


@dataclass(frozen=True)
class FigureEntry:
    """One drawn figure: the report section it belongs to, its file stem, caption and files."""

    section: str
    name: str
    caption: str
    png: Path
    svg: Path


class Drawer:
    """Saves figures under ``out`` and keeps their :class:`FigureEntry` list in drawing order."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.entries: list[FigureEntry] = []

    def add(self, section: str, name: str, caption: str, fig: Any) -> None:
        paths = figs.save_figure(fig, self.out, name)
        self.entries.append(FigureEntry(section, name, caption, paths["png"], paths["svg"]))


def _at_risk(km: dict[str, list[float]]) -> list[int]:
    times, counts = np.asarray(km["times"]), np.asarray(km["at_risk"])
    if times.size == 0:
        return [0] * len(AT_RISK_DAYS)
    idx = np.searchsorted(times, AT_RISK_DAYS, side="left")
    return [int(np.r_[counts, 0][i]) for i in idx]


def _km_curves(groups: dict[str, dict[str, list[float]]]) -> tuple[dict[str, Any], dict[str, Any]]:
    curves = {k: (v["times"], v["survival"], v["low"], v["high"]) for k, v in groups.items() if v["times"]}
    return curves, {k: _at_risk(v) for k, v in groups.items() if v["times"]}


def _codec_phrase(metrics: dict[str, Any]) -> str:
    codec = metrics["pooling"]["codec"]
    words = {"CkksCodec": "CKKS-encrypted site histograms (summed encrypted, decrypted once by the key holder)",
             "PlainCodec": "unencrypted site histograms (PlainCodec, test mode)"}
    return words.get(codec, f"site histograms ({codec})")


def mode_populations(block: Mapping[str, Any]) -> str:
    """Each mode's n with its population, e.g. ``early 40 (EARLYFL), full 35 (EFFFL)``: a mode is judged on its
    own subjects (``metrics.json`` per-mode ``n`` and ``population``), so one n never stands for both."""
    return ", ".join(f"{m} {block[m].get('n')} ({block[m].get('population') or MODE_POPULATIONS[m]})"
                     for m in MODES if isinstance(block.get(m), Mapping))


def pooled_figures(d: Drawer, metrics: dict[str, Any]) -> None:
    """The central report's figures: each drawn from the pooled block (sums of site aggregates) only."""
    pooled = metrics["pooled"]
    curves = {f"{m} ({'T1' if m == 'early' else 'T2'})": (pooled[m]["roc"]["fpr"], pooled[m]["roc"]["tpr"],
                                                          pooled[m]["auc"], pooled[m]["auc_ci"],
                                                          sum(pooled[m]["confusion"][k] for k in ("tp", "fn")))
              for m in MODES}
    d.add("primary", "roc_pooled", f"Pooled ROC per mode, each on its own patients the model statistics rest on "
          f"({mode_populations(pooled)}), from {_codec_phrase(metrics)}; band: Wilson 95 % CI of sensitivity; "
          "dashed: chance (AUC 0.5).",
          figs.roc_figure(curves))
    cal = pooled["full"]["calibration"]
    d.add("calibration", "calibration_full", "Pooled reliability diagram, full mode (10 equal-width bins).",
          figs.calibration_figure(cal["observed"], cal["predicted"], cal["count"], pooled["full"]["brier"]))
    for name, groups, caption in (
        ("km_predicted", pooled["full"]["km_called"], "Pooled KM by predicted group (full mode, training cut-off; "
         f"PFS population of the {pooled['full']['n']} full-mode (EFFFL) patients the model statistics rest on)."),
        ("km_reference", pooled["km_reference"], "Pooled KM by reference response (dynamic iRECIST label)."),
    ):
        curves_km, at_risk = _km_curves(groups)
        if curves_km:
            d.add("survival", name, caption + " PFS by iRECIST (event: confirmed progression or death). Band: "
                  "Greenwood log(−log) 95 % CI; numbers at risk below.",
                  figs.km_figure(curves_km, at_risk, AT_RISK_DAYS))
    d.add("orr", "orr_pooled", "Pooled ORR by definition (RECIST 1.1 and iRECIST, each labelled), Clopper–Pearson "
          "95 % CI.", figs.orr_figure(pooled["orr_all"]))


def site_agreement(site: SiteData, reads: pd.DataFrame | None, cutoffs: dict[str, float]) -> dict[str, Any]:
    """Model vs reference (Cohen's κ) and, with double reads, readers' baseline SLD ICC(2,1) and Bland–Altman."""
    held = site.predictions[site.predictions["SPLIT"] == "test"] if has_split(site) else site.predictions
    # κ judges the model: held-out rows only. The reference is the response assessment — the early-mode rows'
    # LABEL (response as registered) — of the held-out subjects with a full-mode call
    calls = held[held["MODE"] == "full"].drop_duplicates("USUBJID").set_index("USUBJID")["SCORE"]
    reference = _early_labels(held).reindex(calls.index).dropna()
    out: dict[str, Any] = {"kappa_n": int(reference.size)}
    if reference.size:
        called = (calls.loc[reference.index].astype(float) >= cutoffs["full"]).astype(int)
        kappa = cohen_kappa(reference.astype(int).tolist(), called.tolist(), labels=[0, 1])
        out.update(kappa_full=kappa.kappa, kappa_full_ci=[kappa.ci_low, kappa.ci_high])
    if reads is not None and "READER" in reads.columns:
        sld = reader_sld(reads)
        if sld.shape[1] >= 2 and len(sld) >= 3:
            ba = bland_altman(sld.iloc[:, 0].to_numpy(), sld.iloc[:, 1].to_numpy())
            icc = icc_a1(sld.iloc[:, :2].to_numpy())
            bar = load_protocol().agreement.icc_min
            out.update(ba_bias_mm=ba.bias, ba_loa_mm=[ba.loa_low, ba.loa_high], n_pairs=ba.n, icc=icc.icc,
                       icc_ci=[icc.ci_low, icc.ci_high], icc_required=bar, icc_meets_required=bool(icc.icc >= bar),
                       _sld=sld)
    return out


def _early_labels(predictions: pd.DataFrame) -> pd.Series:
    """The reference response per subject: the ``LABEL`` of its early-mode row (NaN where it has none)."""
    early = predictions[predictions["MODE"] == "early"].drop_duplicates("USUBJID").set_index("USUBJID")
    return pd.to_numeric(early["LABEL"], errors="coerce")


def site_figures(d: Drawer, site: SiteData, inputs: RunInputs, block: dict[str, Any]) -> dict[str, Any]:
    """The site report's figures (patient-level: one point, bar or lane per patient); returns its agreement block.

    ``block`` is the site's own ``site_metrics`` (for the DHI AUC in the box plot title).
    """
    s = site.site
    agree = site_agreement(site, inputs.reads.get(s), inputs.cutoffs)
    sld = agree.pop("_sld", None)
    if sld is not None:
        d.add("agreement", f"bland_altman_{s}", f"{s}: readers' baseline SLD (mm), Bland–Altman; one point per "
              "patient.", figs.bland_altman_figure(sld.iloc[:, 0], sld.iloc[:, 1], agree["ba_bias_mm"],
                                                   agree["ba_loa_mm"]))
    first = site.predictions.drop_duplicates("USUBJID")
    if "DHI" in first.columns:
        reference = _early_labels(site.predictions).reindex(first["USUBJID"]).to_numpy()
        groups = {"responder": first.loc[reference == 1, "DHI"], "non-responder": first.loc[reference == 0, "DHI"]}
        d.add("dhi", f"dhi_box_{s}", f"{s}: DHI by reference response (dynamic iRECIST label); one point per patient.",
              figs.dhi_box_figure(groups, block.get("dhi_auc")))
    if site.visits is not None and site.subjects is not None and len(site.subjects):
        rules = load_protocol().recist
        d.add("patients", f"waterfall_{s}", f"{s}: best % change of SLD from baseline (RECIST 1.1 measurements), "
              "bars coloured by iRECIST best overall response (iBOR, legend); dashed: RECIST 1.1 PR −30 % and "
              "PD +20 % thresholds.",
              pfigs.waterfall_figure(site.visits, site.subjects, rules.pr_threshold_pct, rules.pd_threshold_pct))
        d.add("patients", f"spider_{s}", f"{s}: % change of SLD over time, one line per patient, coloured by iBOR "
              "(iRECIST, legend).", pfigs.spider_figure(site.visits, site.subjects))
        d.add("patients", f"swimmer_{s}", f"{s}: one lane per patient to its iRECIST PFS time, coloured by iBOR; "
              "markers: iUPD and iCPD (iRECIST) and PD (RECIST 1.1), each named in the legend; arrow: censored.",
              pfigs.swimmer_figure(site.subjects, first[["USUBJID", "PFS_DAYS", "PFS_EVENT"]]))
        _panel(d, site, inputs)
    return agree


def _panel(d: Drawer, site: SiteData, inputs: RunInputs) -> None:
    # a mode's column is NaN for a subject it does not score (no T2 scan: no full-mode row)
    wide = site.predictions.pivot_table(index="USUBJID", columns="MODE", values="SCORE", aggfunc="first").reindex(
        columns=list(MODES))
    pseudo = site.subjects[site.subjects.get("PSEUDOPROG", pd.Series(dtype=str)).astype(str) == "Y"] \
        if site.subjects is not None and "PSEUDOPROG" in site.subjects.columns else pd.DataFrame()
    if len(pseudo):  # only a patient the model scored (the efficacy population) can be shown with its scores
        pseudo = pseudo[pseudo["USUBJID"].isin(wide.index)]
    subject = str(pseudo["USUBJID"].iloc[0]) if len(pseudo) else str(wide["full"].idxmax())
    why = "the site's pseudoprogression case" if len(pseudo) else "the highest full-mode score"
    attributions = None
    if inputs.attributions is not None:
        rows = inputs.attributions[inputs.attributions["USUBJID"] == subject]
        value = "ATTRIBUTION" if "ATTRIBUTION" in rows.columns else "VALUE"
        attributions = rows.groupby("FEATURE")[value].sum() if len(rows) else None
    scores = {m: float(wide.loc[subject, m]) for m in MODES}
    d.add("interpretability", f"panel_{site.site}", f"{site.site}: interpretability panel for {subject} ({why}): SLD "
          "by visit with the iRECIST overall response, early/full scores against the cut-offs, top integrated-"
          "gradient attributions.",
          pfigs.interpretability_figure(subject, site.visits, scores, inputs.cutoffs, attributions))


def privacy_figure(d: Drawer, privacy: dict[str, Any]) -> None:
    """ε spent per site against its budget, from the privacy ledger (central report)."""
    sites = privacy.get("sites", {})
    d.add("privacy", "privacy_budget", "ε spent per site (bars) against its budget (red tick), from the privacy "
          "ledger.", figs.privacy_figure({s: v.get("epsilon", 0.0) for s, v in sites.items()},
                                          {s: v["budget"] for s, v in sites.items() if "budget" in v},
                                          privacy.get("delta")))


def consort_figure(d: Drawer, section: str, flow: dict[str, dict[str, Any]], caption: str) -> None:
    """The participant flow (CONSORT) of the given sites (and a total column when there are several)."""
    d.add(section, "consort", caption, figs.consort_figure(flow))
