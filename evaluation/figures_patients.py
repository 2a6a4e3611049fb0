"""Patient-level figures: waterfall by iBOR, spider plot, swimmer plot, per-patient interpretability panels.

These show one bar or line per patient, so they are rendered **at the site** from the site's own
response tables (``visits.csv``/``subjects.csv`` of :mod:`evaluation.response`); only the images enter the
site's section of the report. Inputs are pandas DataFrames with the response module's columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from evaluation.figures import PALETTE, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Swimmer markers (marker, subjects.csv column, colour); every legend entry names its criterion, since the
#: lanes are iRECIST PFS and the RECIST 1.1 PD day is drawn beside the iRECIST events.
SWIMMER_MARKERS: tuple[tuple[str, str, str], ...] = (("|", "IUPD_ADY", "#fc8d59"), ("x", "ICPD_ADY", "#d73027"),
                                                     ("d", "PD_ADY", "k"))
SWIMMER_LABELS: dict[str, str] = {"IUPD_ADY": "iUPD (iRECIST, unconfirmed)", "ICPD_ADY": "iCPD (iRECIST, confirmed)",
                                  "PD_ADY": "PD (RECIST 1.1)"}

IBOR_COLOURS: dict[str, str] = {
    "iCR": "#1a9850", "iPR": "#91cf60", "iSD": "#fee08b", "NON-iCR/NON-iUPD": "#d9ef8b",
    "iUPD": "#fc8d59", "iCPD": "#d73027", "NE": "#bdbdbd",
}


def best_change(visits: pd.DataFrame) -> pd.Series:
    """Best (most negative) % change of SLD from baseline per subject (post-baseline visits)."""
    post = visits.dropna(subset=["PCHG_BASE"])
    return post.groupby("USUBJID")["PCHG_BASE"].min()


def waterfall_figure(visits: pd.DataFrame, subjects: pd.DataFrame, pr_threshold: float,
                     pd_threshold: float) -> Figure:
    """Bars of best % change in SLD, sorted, coloured by iRECIST best overall response (iBOR)."""
    best = best_change(visits).sort_values(ascending=False)
    ibor = subjects.set_index("USUBJID")["IBOR"].reindex(best.index).fillna("NE").astype(str)
    fig = new_figure(max(5.0, 0.12 * best.size + 3), 4.2)
    ax = fig.add_subplot()
    ax.bar(np.arange(best.size), best.to_numpy(), color=[IBOR_COLOURS.get(v, "#bdbdbd") for v in ibor], width=0.85)
    ax.axhline(pr_threshold, ls="--", color=PALETTE["grey"], lw=1)
    ax.axhline(pd_threshold, ls="--", color=PALETTE["grey"], lw=1)
    ax.set_xticks([])
    ax.set(ylabel="best change of SLD from baseline (%)", xlabel=f"patients (n = {best.size})",
           title="Waterfall by iBOR")
    _legend(ax, sorted(set(ibor)))
    return fig


def _legend(ax: object, labels: list[str]) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=IBOR_COLOURS.get(k, "#bdbdbd"), label=k) for k in labels]
    ax.legend(handles=handles, fontsize=7, loc="upper right")  # type: ignore[attr-defined]


def spider_figure(visits: pd.DataFrame, subjects: pd.DataFrame) -> Figure:
    """% change of SLD from baseline over study days, one line per patient, coloured by iBOR."""
    ibor = subjects.set_index("USUBJID")["IBOR"].astype(str)
    fig = new_figure(6.0, 4.2)
    ax = fig.add_subplot()
    for subject, rows in visits.sort_values("ADY").groupby("USUBJID"):
        change = rows["PCHG_BASE"].fillna(0.0).to_numpy(float)
        ax.plot(rows["ADY"].to_numpy(float), change, "-o", ms=3, lw=1,
                color=IBOR_COLOURS.get(ibor.get(subject, "NE"), "#bdbdbd"))
    ax.axhline(0, color="k", lw=0.6)
    ax.set(xlabel="study day", ylabel="change of SLD from baseline (%)", title="Spider plot")
    _legend(ax, sorted(set(ibor)))
    return fig


def swimmer_figure(subjects: pd.DataFrame, pfs: pd.DataFrame) -> Figure:
    """Swimmer plot: a lane per patient to PFS time, with iUPD/iCPD/PD markers and censoring arrows.

    Parameters
    ----------
    subjects : DataFrame with ``USUBJID, IBOR, PD_ADY, IUPD_ADY, ICPD_ADY``
    pfs : DataFrame with ``USUBJID, PFS_DAYS, PFS_EVENT``
    """
    lanes = pfs.drop_duplicates("USUBJID").set_index("USUBJID").sort_values("PFS_DAYS")
    info = subjects.set_index("USUBJID").reindex(lanes.index)
    fig = new_figure(6.5, max(3.0, 0.16 * len(lanes) + 1.5))
    ax = fig.add_subplot()
    y = np.arange(len(lanes))
    colours = [IBOR_COLOURS.get(str(v), "#bdbdbd") for v in info["IBOR"]]
    ax.barh(y, lanes["PFS_DAYS"].to_numpy(float), color=colours, height=0.7)
    for marker, column, colour in SWIMMER_MARKERS:
        days = pd.to_numeric(info[column], errors="coerce").to_numpy(float)
        ax.scatter(days, y, marker=marker, color=colour, s=28, label=SWIMMER_LABELS[column], zorder=3)
    censored = lanes["PFS_EVENT"].to_numpy(int) == 0
    ax.scatter(lanes["PFS_DAYS"].to_numpy(float)[censored] + 8, y[censored], marker=">", color=PALETTE["grey"],
               s=18, label="censored (iRECIST PFS)")
    ax.set_yticks([])
    ax.set(xlabel="study day", ylabel=f"patients (n = {len(lanes)})",
           title="Swimmer plot: lanes = iRECIST PFS, colour = iBOR")
    from matplotlib.patches import Patch

    markers, _ = ax.get_legend_handles_labels()
    bars = [Patch(color=IBOR_COLOURS.get(k, "#bdbdbd"), label=f"iBOR {k}") for k in sorted(set(map(str, info["IBOR"])))]
    ax.legend(handles=[*markers, *bars], fontsize=6.5, loc="lower right", title="criterion named per entry",
              title_fontsize=6.5)
    return fig


def visit_label(row: pd.Series) -> str:
    """A visit's point label: its iRECIST overall response, or the visit name where there is none (baseline).

    A missing response reads as NaN in pandas; it must never be drawn as "nan".
    """
    response = row.get("IRECIST_OVR")
    if response is None or pd.isna(response) or not str(response).strip():
        return f"{row['VISIT']} (baseline)" if str(row["VISIT"]) == "T0" else str(row["VISIT"])
    return f"{row['VISIT']}: {response}"


def interpretability_figure(
    subject: str,
    visits: pd.DataFrame,
    scores: Mapping[str, float],
    cutoffs: Mapping[str, float],
    attributions: pd.Series | None = None,
) -> Figure:
    """One patient's panel: SLD trajectory, early/full scores against their cut-offs, top attributions.

    Parameters
    ----------
    attributions : Series, optional
        Feature -> attribution (e.g. integrated gradients from the models package); the 8 largest |values|
        are shown. Without it the panel says so instead of inventing one.
    """
    fig = new_figure(9.0, 3.0)
    axes = fig.subplots(1, 3)
    rows = visits[visits["USUBJID"] == subject].sort_values("ADY")
    axes[0].plot(rows["ADY"], rows["SLD_MM"], "-o", color=PALETTE["line"])
    for _, r in rows.iterrows():
        axes[0].annotate(visit_label(r), (r["ADY"], r["SLD_MM"]), fontsize=7, textcoords="offset points",
                         xytext=(0, 6), ha="center")
    axes[0].set(xlabel="study day", ylabel="SLD (mm)", title=subject)
    modes = list(scores)
    axes[1].bar(modes, [scores[m] for m in modes], color=[PALETTE["pos"] if scores[m] >= cutoffs[m] else PALETTE["neg"]
                                                         for m in modes])
    axes[1].scatter(modes, [cutoffs[m] for m in modes], marker="_", s=600, color="k", label="cut-off")
    axes[1].set(ylim=(0, 1), ylabel="P(responder)", title="model score")
    axes[1].legend(fontsize=7)
    if attributions is not None and len(attributions):
        top = attributions.reindex(attributions.abs().sort_values(ascending=False).index[:8])[::-1]
        axes[2].barh(top.index.astype(str), top.to_numpy(float),
                     color=[PALETTE["pos"] if v > 0 else PALETTE["neg"] for v in top])
        axes[2].set(title="top attributions", xlabel="attribution")
        axes[2].tick_params(axis="y", labelsize=7)
    else:
        axes[2].set_axis_off()
        axes[2].text(0.5, 0.5, "no attributions\nin this run", ha="center", va="center", color=PALETTE["grey"])
    return fig
