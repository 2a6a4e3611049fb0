"""Summary figures of the PI report: ROC with CI band, KM with at-risk table, calibration, DHI box plot,
reader Bland–Altman, CONSORT flow and privacy budget bars. Patient-level figures: :mod:`evaluation.figures_patients`.

Every function takes plain numbers and returns a :class:`matplotlib.figure.Figure` built without pyplot
(no global state, Agg canvas); :func:`save_figure` writes PNG and SVG atomically. matplotlib is imported
lazily so that importing :mod:`evaluation` stays cheap.
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PALETTE = {"pos": "#1b7837", "neg": "#b2182b", "band": "#9ecae1", "line": "#08519c", "grey": "#737373"}


def new_figure(width: float = 6.0, height: float = 4.5) -> Figure:
    """A Figure on an Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_dir: Path, name: str) -> dict[str, Path]:
    """Write ``name.png`` (110 dpi) and ``name.svg`` under ``out_dir`` atomically; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for ext in ("png", "svg"):
        final = out_dir / f"{name}.{ext}"
        handle, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".{ext}", dir=out_dir)
        os.close(handle)
        try:
            fig.savefig(tmp, format=ext, dpi=110, metadata={"Date": None} if ext == "svg" else None)
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths[ext] = final
    return paths


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and bool(np.isfinite(value))


def _auc_text(auc: float | None, ci: Sequence[float] | None) -> str:
    """``AUC 0.81 (0.70–0.92)``; ``AUC not estimable`` when there is none (never "nan")."""
    if not _finite(auc):
        return "AUC not estimable"
    interval = f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci is not None and all(_finite(v) for v in ci) else ""
    return f"AUC {auc:.2f}{interval}"


def roc_figure(curves: Mapping[str, tuple[ArrayLike, ArrayLike, float | None, Sequence[float] | None, int]]) -> Figure:
    """ROC curves with a pointwise CI band.

    Parameters
    ----------
    curves : mapping label -> (fpr, tpr, auc, (low, high), n_pos)
        ``fpr``/``tpr`` shape (k,) from (0, 0) to (1, 1); ``(low, high)`` the DeLong AUC CI; ``n_pos`` the
        number of responders. The band is the Wilson 95 % interval of the sensitivity at each
        1 − specificity (pointwise binomial uncertainty of the TPR).
    """
    from evaluation.stats import proportion_ci

    fig = new_figure(5.5, 5.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color=PALETTE["grey"], lw=1)
    colours = ["#08519c", "#d95f02", "#7570b3", "#1b9e77"]
    for (label, (fpr, tpr, auc, ci, n_pos)), colour in zip(curves.items(), colours, strict=False):
        fpr, tpr = np.asarray(fpr, float), np.asarray(tpr, float)
        ax.step(fpr, tpr, where="post", color=colour, lw=2, label=f"{label}: {_auc_text(auc, ci)}")
        bands = [proportion_ci(round(v * n_pos), n_pos) for v in tpr]
        ax.fill_between(fpr, [b.low for b in bands], [b.high for b in bands], step="post", color=colour, alpha=0.15)
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01), title="ROC (DeLong 95 % CI)")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def km_figure(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]],
    at_risk: Mapping[str, ArrayLike],
    at_risk_days: Sequence[float],
    title: str = "Progression-free survival",
) -> Figure:
    """Kaplan–Meier curves with CI bands and a numbers-at-risk table underneath.

    Parameters
    ----------
    curves : mapping label -> (times, survival, low, high), days and probabilities, each shape (k,)
    at_risk : mapping label -> counts at ``at_risk_days``
    at_risk_days : sequence of float, days
    """
    fig = new_figure(6.5, 5.2)
    grid = fig.add_gridspec(2, 1, height_ratios=[4, 1])
    ax, table = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    colours = [PALETTE["pos"], PALETTE["neg"], "#08519c", "#7570b3"]
    for (label, (t, s, lo, hi)), colour in zip(curves.items(), colours, strict=False):
        t_arr = np.r_[0.0, np.asarray(t, float)]
        ax.step(t_arr, np.r_[1.0, np.asarray(s, float)], where="post", color=colour, lw=2, label=label)
        ax.fill_between(t_arr, np.r_[1.0, lo], np.r_[1.0, hi], step="post", color=colour, alpha=0.12)
    ax.axhline(0.5, color=PALETTE["grey"], lw=0.8, ls=":")
    ax.set(ylabel="PFS probability", ylim=(0, 1.02), xlim=(0, max(at_risk_days)), title=title)
    ax.legend(loc="upper right", fontsize=8)
    table.set_axis_off()
    table.set_xlim(ax.get_xlim())
    table.text(0, 1.0, "Numbers at risk", fontsize=8, weight="bold", va="bottom")
    for row, ((_label, counts), colour) in enumerate(zip(at_risk.items(), colours, strict=False)):
        for day, count in zip(at_risk_days, np.asarray(counts), strict=True):
            table.text(day, 0.75 - 0.3 * row, str(int(count)), color=colour, fontsize=8, ha="center")
    ax.set_xlabel("days since first dose")
    return fig


def calibration_figure(observed: Sequence[float], predicted: Sequence[float], counts: Sequence[float],
                       brier: float | None) -> Figure:
    """Reliability diagram; marker area ∝ patients per bin."""
    fig = new_figure(4.8, 4.5)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color=PALETTE["grey"], lw=1)
    ax.plot(predicted, observed, "-o", color=PALETTE["line"])
    ax.scatter(predicted, observed, s=np.asarray(counts, float) * 8 + 5, alpha=0.3, color=PALETTE["line"])
    ax.set(xlabel="mean predicted probability", ylabel="observed responder rate", xlim=(0, 1), ylim=(0, 1),
           title=f"Calibration (Brier {brier:.3f})" if _finite(brier) else "Calibration (Brier not estimable)")
    return fig


def dhi_box_figure(groups: Mapping[str, ArrayLike], auc: float | None) -> Figure:
    """Box plot of the Dynamic Heterogeneity Index by reference response group (points overlaid)."""
    fig = new_figure(4.8, 4.5)
    ax = fig.add_subplot()
    labels = list(groups)
    data = [np.asarray(groups[k], float) for k in labels]
    ax.boxplot(data, tick_labels=labels, widths=0.5)
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    for i, values in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, values.size), values, s=12, alpha=0.6, color=PALETTE["line"])
    ax.set(ylabel="DHI (z units, docs/dhi.md)", title="DHI by response" + (f" (AUC {auc:.2f})" if _finite(auc) else ""))
    return fig


def bland_altman_figure(reader_a: ArrayLike, reader_b: ArrayLike, bias: float, loa: Sequence[float]) -> Figure:
    """Bland–Altman plot of two readers' SLD (mm): difference vs mean, bias and 95 % limits of agreement."""
    a, b = np.asarray(reader_a, float), np.asarray(reader_b, float)
    fig = new_figure(5.5, 4.2)
    ax = fig.add_subplot()
    ax.scatter((a + b) / 2, a - b, s=14, color=PALETTE["line"], alpha=0.7)
    ax.axhline(bias, color="k", lw=1, label=f"bias {bias:.1f} mm")
    for value in loa:
        ax.axhline(value, color=PALETTE["neg"], lw=1, ls="--")
    ax.set(xlabel="mean of readers' SLD (mm)", ylabel="reader 1 − reader 2 (mm)",
           title=f"Bland–Altman: LoA {loa[0]:.1f} to {loa[1]:.1f} mm")
    ax.legend(fontsize=8)
    return fig


def consort_figure(flow: Mapping[str, Mapping[str, Any]]) -> Figure:
    """CONSORT-style flow per column (site, or "all sites"): enrolled → excluded (reasons) → eligible → analysed.

    Parameters
    ----------
    flow : mapping column -> {"enrolled" (or "screened"): int, "excluded": {reason: int}, "analysed": int,
        optional "eligible": int and "by_reason_not_analysed": {reason: int}}
    """
    sites = list(flow)
    fig = new_figure(max(4.0, 2.7 * len(sites)), 4.4)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set(xlim=(0, len(sites)), ylim=(0, 4))
    box = {"boxstyle": "round,pad=0.4", "fc": "#f7fbff", "ec": PALETTE["line"]}
    red = box | {"fc": "#fff5f0", "ec": PALETTE["neg"]}
    for i, site in enumerate(sites):
        entry = flow[site]
        enrolled = int(entry.get("enrolled", entry.get("screened", 0)))
        excluded = {r: int(n) for r, n in entry["excluded"].items() if n}
        eligible = int(entry.get("eligible", enrolled - sum(excluded.values())))
        not_analysed = {r: int(n) for r, n in (entry.get("by_reason_not_analysed") or {}).items() if n}
        x = i + 0.5
        ax.text(x, 3.7, f"{site}\nenrolled n={enrolled}", ha="center", va="center", fontsize=8, bbox=box)
        reasons = "\n".join(textwrap.fill(f"{r}: {n}", 34) for r, n in excluded.items()) or "none"
        ax.text(x, 2.85, f"excluded n={sum(excluded.values())}\n{reasons}", ha="center", va="center", fontsize=6.5,
                bbox=red)
        ax.text(x, 1.95, f"eligible n={eligible}", ha="center", va="center", fontsize=8, bbox=box)
        if not_analysed:
            lines = "\n".join(textwrap.fill(f"{r}: {n}", 34) for r, n in not_analysed.items())
            ax.text(x, 1.15, f"not analysed n={sum(not_analysed.values())}\n{lines}", ha="center", va="center",
                    fontsize=6.5, bbox=red)
        ax.text(x, 0.3, f"analysed n={entry['analysed']}", ha="center", va="center", fontsize=8, bbox=box)
        for y0, y1 in ((3.5, 3.15), (2.55, 2.15), (1.75, 0.5)):
            ax.annotate("", xy=(x, y1), xytext=(x, y0), arrowprops={"arrowstyle": "->", "color": PALETTE["grey"]})
    ax.set_title("Participant flow (CONSORT)")
    return fig


def privacy_figure(spent: Mapping[str, float], budget: Mapping[str, float], delta: float | None) -> Figure:
    """ε spent per site against its budget (bars; budget as a tick line)."""
    sites = list(spent)
    fig = new_figure(max(4.0, 1.2 * len(sites) + 2), 4.0)
    ax = fig.add_subplot()
    x = np.arange(len(sites))
    ax.bar(x, [spent[s] for s in sites], color=PALETTE["line"], width=0.6, label="ε spent")
    ax.scatter(x, [budget.get(s, np.nan) for s in sites], marker="_", s=900, color=PALETTE["neg"], label="budget")
    ax.set_xticks(x, sites)
    ax.set(ylabel="ε", title="Differential privacy budget" + (f" (δ = {delta:g})" if delta else ""))
    ax.legend(fontsize=8)
    return fig


def orr_label(key: str) -> str:
    """``recist_confirmed`` → ``RECIST 1.1, confirmed``; ``irecist_unconfirmed`` → ``iRECIST, unconfirmed``."""
    criterion, _, kind = key.partition("_")
    return f"{'iRECIST' if criterion == 'irecist' else 'RECIST 1.1'}, {kind}"


def orr_figure(orr_all: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Forest plot of the ORR under each definition with its Clopper–Pearson 95 % CI."""
    fig = new_figure(5.5, 3.2)
    ax = fig.add_subplot()
    keys = list(orr_all)
    y = np.arange(len(keys))[::-1]
    est = [orr_all[k]["estimate"] for k in keys]
    lows = [orr_all[k]["ci"][0] for k in keys]
    highs = [orr_all[k]["ci"][1] for k in keys]
    ax.errorbar(est, y, xerr=[np.subtract(est, lows), np.subtract(highs, est)], fmt="o", color=PALETTE["line"],
                capsize=3)
    ax.set_yticks(y, [orr_label(k) for k in keys])
    ax.set(xlim=(0, 1), xlabel="ORR (CR + PR) / analysed", title="Objective response rate (Clopper–Pearson 95 % CI)")
    return fig
