"""The PI report: ``metrics.json``, figures (PNG + SVG) and a self-contained ``report.html``.

:func:`write_evaluation` computes the metrics (:mod:`evaluation.metrics`), draws every figure, renders the
HTML with each image embedded as a ``data:`` URI (the file opens offline, on its own) and writes all of it
into a temporary folder that replaces ``out`` only when complete, so a crash never leaves half a report.

Sections (their ``id`` is what the browser test checks): ``summary``, ``primary``, ``calibration``,
``survival``, ``orr``, ``dhi``, ``agreement``, ``privacy``, ``consort``, ``sites``, ``methods``.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

from evaluation.atomic import replace_directory
from evaluation.evaluate import RunInputs
from evaluation.metrics import compute_metrics
from evaluation.pooled import MODES, AggregateCodec
from evaluation.protocol import load_protocol
from evaluation.report_figures import FigureEntry, draw_figures

log = logging.getLogger(__name__)

SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Headline results"),
    ("primary", "Primary endpoint: prediction of response (ROC AUC, sensitivity, specificity)"),
    ("calibration", "Calibration"),
    ("survival", "Progression-free survival"),
    ("orr", "Objective response rate"),
    ("dhi", "Dynamic Heterogeneity Index"),
    ("agreement", "Agreement: model vs reference, readers"),
    ("privacy", "Privacy budget"),
    ("consort", "Participant flow"),
    ("sites", "Site-local patient-level figures"),
    ("methods", "Methods"),
)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "not reached"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _ci(pair: Sequence[float] | None, digits: int = 2) -> str:
    return "–" if not pair else f"{_fmt(pair[0], digits)}–{_fmt(pair[1], digits)}"


def _img(entry: FigureEntry) -> str:
    data = base64.b64encode(entry.png.read_bytes()).decode("ascii")
    return (f'<figure id="fig-{entry.name}"><img src="data:image/png;base64,{data}" alt="{html.escape(entry.caption)}">'
            f"<figcaption>{html.escape(entry.caption)}</figcaption></figure>")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _blocks(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("pooled", metrics["pooled"]), *sorted(metrics["sites"].items())]


def _summary(metrics: dict[str, Any]) -> str:
    p = metrics["pooled"]
    cards = [
        ("AUC, full (T2)", _fmt(p["full"]["auc"]), _ci(p["full"]["auc_ci"])),
        ("AUC, early (T1)", _fmt(p["early"]["auc"]), _ci(p["early"]["auc_ci"])),
        ("sensitivity, full", _fmt(p["full"]["sensitivity"]), _ci(p["full"]["sensitivity_ci"])),
        ("specificity, full", _fmt(p["full"]["specificity"]), _ci(p["full"]["specificity_ci"])),
        ("ORR (RECIST 1.1, confirmed)", _fmt(p["orr"]), _ci(p["orr_ci"])),
        ("median PFS, days", _fmt(p["median_pfs_days"], 0), _ci(p["median_pfs_ci"], 0)),
    ]
    html_cards = "".join(
        f'<div class="card"><div class="value">{v}</div>'
        f'<div class="label">{html.escape(label)}<br>95 % CI {ci}</div></div>'
        for label, v, ci in cards
    )
    return (f'<div class="headline">{html_cards}</div><p>Cut-offs: {_fmt(metrics["cutoff_source"])}.</p>'
            + _basis_note(metrics))


def _basis_note(metrics: dict[str, Any]) -> str:
    """Which patients the model statistics rest on, in words (the headline must not hide training patients)."""
    p = metrics["pooled"]
    basis = metrics.get("model_basis", "all analysed patients")
    return (f'<p id="model-basis">Model statistics (AUC, sensitivity, specificity, calibration, predicted-group KM, '
            f"model-vs-reference κ) rest on {_fmt(p.get('n_heldout', p['n']))} patients — {_fmt(basis)}; reference "
            f"endpoints (ORR, PFS, DHI, reader agreement, participant flow) on all {_fmt(p['n'])} analysed "
            "patients.</p>")


def _primary(metrics: dict[str, Any]) -> str:
    rows = []
    for name, block in _blocks(metrics):
        for mode in MODES:
            b = block[mode]
            rows.append([name, mode, _fmt(b.get("n")), _fmt(b["auc"]), _ci(b["auc_ci"]), _fmt(b["cutoff"]),
                         _fmt(b["sensitivity"]),
                         _ci(b["sensitivity_ci"]), _fmt(b["specificity"]), _ci(b["specificity_ci"]), _fmt(b["ppv"]),
                         _fmt(b["npv"]), _fmt(b["accuracy"])])
    header = ["block", "mode", "n (model)", "AUC", "95 % CI (DeLong)", "cut-off", "sens.", "95 % CI (Wilson)",
              "spec.", "95 % CI (Wilson)", "PPV", "NPV", "accuracy"]
    bound = max(metrics["pooled"][m]["auc_binning_bound"] for m in MODES)
    return (f'<p class="method">Basis: {_fmt(metrics.get("model_basis", "all analysed patients"))}.</p>'
            + _table(header, rows) + (f'<p class="method">Pooled AUC from {metrics["pooling"]["score_bins"]}-bin score '
                                      f"histograms; binning error at most {bound:.4f} (half the share of "
                                      "responder/non-responder pairs sharing a bin).</p>")
            + _heldout_pooled(metrics.get("pooled_heldout")))


def _heldout_pooled(block: dict[str, Any] | None) -> str:
    """The federation's own encrypted pooled evaluation (``RUN/pooled_aggregate.ckks``), decrypted or not."""
    if not block:
        return ""
    if block.get("status") != "decrypted":
        return (f'<p class="note" id="pooled-heldout">{_fmt(block.get("note"))}</p>')
    rows = [[m, _fmt(block[m].get("n")), _fmt(block[m]["auc"]), _ci(block[m]["auc_ci"]),
             _fmt(block[m]["auc_binning_bound"], 4), _fmt(block[m]["cutoff"]), _fmt(block[m]["sensitivity"]),
             _fmt(block[m]["specificity"])] for m in MODES]
    table = _table(["mode", "n held-out", "AUC", "95 % CI (binned DeLong)", "binning bound", "cut-off", "sens.",
                    "spec."], rows)
    return (f'<h3 id="pooled-heldout">Federated pooled evaluation, decrypted by the key holder</h3>{table}'
            f'<p class="method">{_fmt(block.get("evaluation"))}; sites {_fmt(", ".join(block.get("sites", [])))}; '
            f'source {_fmt(block.get("source"))}; written {_fmt(", ".join(block.get("written", [])))}.</p>')


def _survival(metrics: dict[str, Any]) -> str:
    rows = []
    for name, b in _blocks(metrics):
        rows.append([name, _fmt(b["median_pfs_days"], 0), _ci(b["median_pfs_ci"], 0),
                     _fmt(b["full"].get("logrank_called_p"), 3), _fmt(b.get("hr_responder")),
                     _ci(b.get("hr_responder_ci")), _fmt(b.get("c_index_full"))])
    return _table(["block", "median PFS (days)", "95 % CI (Brookmeyer–Crowley)", "log-rank p (called groups, full)",
                   "Cox HR responder vs not", "95 % CI (Wald)", "C-index (full score)"], rows)


def _orr(metrics: dict[str, Any]) -> str:
    rows = []
    for name, b in _blocks(metrics):
        for key, o in b["orr_all"].items():
            rows.append([name, key.replace("_", ", "), f'{o["k"]}/{o["n"]}', _fmt(o["estimate"]), _ci(o["ci"])])
    return _table(["block", "definition", "responders/analysed", "ORR", "95 % CI (Clopper–Pearson)"], rows)


def _dhi(metrics: dict[str, Any]) -> str:
    rows = [[name, _fmt(b.get("dhi_auc")), _ci(b.get("dhi_auc_ci")), _fmt(b.get("dhi_hr")), _ci(b.get("dhi_hr_ci"))]
            for name, b in _blocks(metrics)]
    bound = metrics["pooled"].get("dhi_auc_binning_bound")
    note = (f'<p class="method">Pooled DHI AUC from histograms over the agreed DHI range; binning error at most '
            f"{bound:.4f}.</p>") if bound is not None else ""
    method = metrics["pooled"].get("dhi_hr_method")
    unit = metrics["pooled"].get("dhi_hr_unit") or 1.0
    if method:
        steps = metrics["pooled"].get("dhi_hr_iterations")
        done = f" ({steps} Newton steps)" if steps else " (not estimable on these data)"
        note += (f'<p class="method">Pooled HR per {unit:g} DHI: {html.escape(method)}{done}. Site rows: site-local '
                 "Cox.</p>")
    return _table(["block", "DHI AUC", "95 % CI (DeLong)", f"Cox HR per {unit:g} DHI", "95 % CI"], rows) + note


def _agreement(metrics: dict[str, Any]) -> str:
    agree = metrics.get("agreement", {})
    bar = load_protocol().agreement.icc_min
    rows = [[name, _fmt(a.get("kappa_full")), _ci(a.get("kappa_full_ci")), _fmt(a.get("kappa_n")),
             _fmt(a.get("icc")), _ci(a.get("icc_ci")),
             "yes" if a.get("icc_meets_required") else ("no" if "icc" in a else "–"), _fmt(a.get("ba_bias_mm"), 1),
             _ci(a.get("ba_loa_mm"), 1), _fmt(a.get("n_pairs"))] for name, a in sorted(agree.items())]
    return _table(["site", "Cohen κ model (full) vs reference", "95 % CI", "κ patients (model basis)",
                   "readers' ICC(2,1), baseline SLD",
                   "95 % CI (McGraw–Wong)", f"ICC ≥ {bar:g} (protocol)", "Bland–Altman bias (mm)",
                   "95 % limits of agreement", "reader pairs"], rows)


def _privacy(metrics: dict[str, Any]) -> str:
    priv = metrics.get("privacy") or {}
    rows = [[s, _fmt(v.get("epsilon")), _fmt(v.get("budget")), _fmt(v.get("rounds"))]
            for s, v in sorted(priv.get("sites", {}).items())]
    return _table(["site", "ε spent", "ε budget", "rounds"], rows) + (
        f'<p class="method">δ = {_fmt(priv.get("delta"), 6)}; source: {_fmt(", ".join(priv.get("source", [])))}.</p>'
        if priv else '<p class="note">No privacy ledger in this run (not a DP run).</p>')


def _methods(metrics: dict[str, Any]) -> str:
    items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in metrics["methods"].items())
    return f"<ul>{items}</ul>"


RENDERERS = {"summary": _summary, "primary": _primary, "survival": _survival, "orr": _orr, "dhi": _dhi,
             "agreement": _agreement, "privacy": _privacy, "methods": _methods}


def render_html(metrics: dict[str, Any], figures: list[FigureEntry], inputs: RunInputs) -> str:
    """The report as one self-contained HTML string."""
    from importlib.metadata import version  # the distribution's version: evaluation never imports the CLI

    parts = []
    for sid, title in SECTIONS:
        body = RENDERERS[sid](metrics) if sid in RENDERERS else ""
        body += "".join(_img(f) for f in figures if f.section == sid)
        parts.append(f'<section id="{sid}"><h2>{html.escape(title)}</h2>{body}</section>')
    template = Template((Path(__file__).parent / "templates" / "report.html").read_text(encoding="utf-8"))
    return template.substitute(
        title="Response prediction — evaluation report", run=html.escape(str(inputs.run)),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), n_sites=len(inputs.sites),
        n_subjects=metrics["pooled"]["n"], codec=html.escape(metrics["pooling"]["codec"]),
        sections="\n".join(parts), version=version("fedresponse"),
    )


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_evaluation(inputs: RunInputs, out: Path, codec: AggregateCodec | None = None,
                     heldout: dict[str, Any] | None = None) -> dict[str, Path]:
    """Compute, draw and write ``metrics.json``, ``figures/`` and ``report.html`` under ``out`` atomically.

    ``heldout`` is the federation's encrypted pooled evaluation as the key holder read it (``status``
    ``decrypted`` with per-mode ``auc``/``auc_ci``/``cutoff``/... and ``n_test``, or ``encrypted`` with a
    ``note``); it is kept as ``metrics.json``'s ``pooled_heldout`` and shown beside the site-scored figures.
    """
    metrics = compute_metrics(inputs.sites, inputs.cutoffs, codec=codec, cutoff_source=inputs.cutoff_source)
    if heldout is not None:
        metrics["pooled_heldout"] = heldout
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        figures, extra = draw_figures(inputs, metrics, tmp / "figures")
        metrics.update(extra)
        (tmp / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=2, allow_nan=False), encoding="utf-8")
        (tmp / "report.html").write_text(render_html(metrics, figures, inputs), encoding="utf-8")
        replace_directory(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("evaluation written to %s (%d figures)", out, len(figures))
    return {"metrics": out / "metrics.json", "report": out / "report.html", "figures": out / "figures"}
