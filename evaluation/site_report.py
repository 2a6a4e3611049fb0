"""The site report and the site's hand-off to the centre — the step each hospital runs on its own data.

:func:`write_site_evaluation` reads one site's patient-level tables (predictions, response assessment, reads,
attributions, query listing) and writes, atomically, into the site's folder:

- ``report.html`` + ``figures/`` — everything patient-level about this site: waterfall, spider, swimmer, the
  per-patient interpretability panel (titled with a USUBJID), Bland–Altman and DHI box plots, the site's reader
  agreement and query-listing summary. It stays at the site.
- ``site_summary.json`` — what the site sends to the centre (format ``fedresponse.site_summary/1``, see
  ``docs/report.md``): CONSORT counts, site-level statistics each with its n (small-cell rules applied:
  :func:`apply_small_cell_rules`; the aggregate's by :func:`evaluation.pooled.suppress_small_cells`),
  reader-agreement statistics, the query counts by severity, the cut-offs, where the data came from (a
  synthetic cohort says so), and the index of
- ``site_aggregate.bin`` — the site's :func:`evaluation.metrics.site_evaluation_aggregate` vector through the
  codec: CKKS ciphertexts (:class:`evaluation.pooled.CkksCodec`) or, in test mode, the plain float64 vector.

Nothing in ``site_summary.json`` or ``site_aggregate.bin`` is a patient row, an identifier or a per-patient
array; :func:`evaluation.central_report.write_central_evaluation` reads only these files.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation import report_html as rh
from evaluation.atomic import replace_directory
from evaluation.dhi_stats import PROXY_ALPHA, site_dhi_intervals
from evaluation.evaluate import RunInputs
from evaluation.exceptions import EvaluationInputError
from evaluation.metrics import (
    SiteData,
    analysed,
    min_cell_size,
    min_patients_estimate,
    site_evaluation_aggregate,
    site_metrics,
)
from evaluation.pooled import MODES, AggregateCodec, AggregateLayout, PlainCodec, suppress_small_cells
from evaluation.protocol import load_protocol
from evaluation.report_figures import Drawer, consort_figure, mode_populations, site_figures

log = logging.getLogger(__name__)

SUMMARY_FILE = "site_summary.json"
AGGREGATE_FILE = "site_aggregate.bin"
SUMMARY_FORMAT = "fedresponse.site_summary/1"

SITE_SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "This site at a glance"),
    ("consort", "Participant flow at this site"),
    ("primary", "Model on this site's patients"),
    ("patients", "Patient-level response: waterfall, spider, swimmer"),
    ("interpretability", "Per-patient interpretability"),
    ("dhi", "Dynamic Heterogeneity Index at this site"),
    ("agreement", "Reader agreement at this site"),
    ("queries", "Query listing summary"),
    ("handoff", "What this site sends to the centre"),
)

# per-site estimates that rest on the held-out (model) patients, and the key of their n
_MODEL_KEYS = ("auc", "auc_ci", "sensitivity", "sensitivity_ci", "specificity", "specificity_ci", "ppv", "ppv_ci",
               "npv", "npv_ci", "accuracy", "accuracy_ci", "brier", "logrank_called_chi2", "logrank_called_p")


def encode_blob(blob: Any) -> tuple[bytes, list[int]]:
    """A codec's output as bytes plus chunk offsets (CKKS: serialized ciphertexts; plain: float64 little-endian)."""
    if isinstance(blob, np.ndarray):
        return np.asarray(blob, dtype="<f8").tobytes(), [0]
    chunks = [bytes(c) for c in blob]
    offsets = list(np.cumsum([0, *map(len, chunks[:-1])]).astype(int).tolist())
    return b"".join(chunks), offsets


def decode_blob(data: bytes, offsets: list[int], codec: str) -> Any:
    """Inverse of :func:`encode_blob` for the named codec (``PlainCodec`` or ``CkksCodec``)."""
    if codec == "PlainCodec":
        return np.frombuffer(data, dtype="<f8").astype(np.float64)
    ends = [*offsets[1:], len(data)]
    return [data[a:b] for a, b in zip(offsets, ends, strict=True)]


def apply_small_cell_rules(block: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The site-level statistics as they may cross the wall (``configs/study.yaml`` ``statistics``).

    - a mode's model statistics resting on fewer held-out patients than ``min_patients_estimate`` are sent as
      not estimable (``<key>: null`` + ``<key>_not_estimable``, the convention of ``metrics.json``), the n is sent;
    - a confusion table with a cell of 1 to ``min_cell_size − 1`` patients is not sent.

    Returns the filtered copy and the list of suppressions (said in the reports).
    """
    rules = load_protocol().statistics
    out = json.loads(json.dumps(block, default=_json_default))
    done: list[str] = []
    for mode in MODES:
        entry = out.get(mode) or {}
        n = int(entry.get("n") or 0)
        if n < rules.min_patients_estimate and any(entry.get(k) is not None for k in _MODEL_KEYS):
            reason = f"n = {n} held-out patients < {rules.min_patients_estimate} (protocol minimum)"
            entry.update(dict.fromkeys(_MODEL_KEYS))
            entry.update({f"{k}_not_estimable": reason for k in _MODEL_KEYS if not k.endswith("_ci")})
            done.append(f"{mode}: model statistics not estimable ({reason})")
        cells = (entry.get("confusion") or {}).values()
        if any(0 < int(c) < rules.min_cell_size for c in cells):
            entry["confusion"] = None
            done.append(f"{mode}: confusion table withheld (a cell under {rules.min_cell_size} patients)")
    return out, done


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer | np.floating):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def data_source(cohort: Path | None) -> str | None:
    """A description of the synthetic generator when ``cohort`` (or its parent) is a ``fedresponse synth`` cohort."""
    if cohort is None:
        return None
    for folder in (cohort, cohort.parent):
        path = folder / "cohort.json"
        if path.exists():
            meta = json.loads(path.read_text(encoding="utf-8"))
            details = ", ".join(f"{k} {meta[k]}" for k in ("preset", "seed", "generator_version") if k in meta)
            return f"generated by `fedresponse synth` ({details})" if details else "generated by `fedresponse synth`"
    return None


def query_summary(store: Path | None, site: str) -> dict[str, Any] | None:
    """Counts of the site's CRF edit-check queries (``STORE/queries.parquet``) by severity and by rule."""
    if store is None or not (store / "queries.parquet").exists():
        return None
    queries = pd.read_parquet(store / "queries.parquet")
    by_rule = queries.groupby(["RULE_ID", "SEVERITY"]).size().sort_values(ascending=False)
    return {"n_queries": len(queries), "n_subjects": int(queries["USUBJID"].nunique()),
            "by_severity": {str(k): int(v) for k, v in queries["SEVERITY"].value_counts().sort_index().items()},
            "by_rule": [{"rule": str(r), "severity": str(s), "n": int(n)} for (r, s), n in by_rule.items()],
            "site": site}


def dhi_intervals(site: SiteData, inputs: RunInputs) -> list[dict[str, Any]] | None:
    """The site's per-interval DHI statistics (:func:`evaluation.dhi_stats.site_dhi_intervals`), small-cell rule
    applied; None when the run was given no ``radiomics dhi`` table (``--dhi``) or it has no row of this site.

    Outcomes: the analysed subjects' reference label (responder) and PFS (``PFS_DAYS``, ``PFS_EVENT``).
    """
    table = inputs.dhi_intervals
    if table is None or "USUBJID" not in table.columns:
        return None
    wide = analysed(site)
    rows = table[table["USUBJID"].isin(set(wide.index))]
    if rows.empty:
        return None
    # the reference response: the early-mode rows' label (analysed() takes it from there explicitly)
    outcomes = pd.DataFrame({"USUBJID": wide.index, "RESPONDER": wide["LABEL_early"].to_numpy(int),
                             "PFS_DAYS": wide["PFS_DAYS"].to_numpy(float),
                             "PFS_EVENT": wide["PFS_EVENT"].to_numpy(int)})
    try:
        blocks = site_dhi_intervals(rows, outcomes, min_cell=min_cell_size(), min_n=min_patients_estimate())
    except EvaluationInputError as exc:  # an older `radiomics dhi` table (no DLOGVOL): the per-patient DHI still works
        log.warning("site %s: no per-interval DHI section: %s", site.site, exc)
        return None
    return [{"site": site.site, **b} for b in blocks]


def site_consort(inputs: RunInputs, site: str) -> dict[str, Any] | None:
    """The site's CONSORT counts (:func:`evaluation.populations.consort_counts` of its population flags)."""
    return (inputs.consort or {}).get(site)


def write_site_evaluation(site: SiteData, inputs: RunInputs, out: Path, codec: AggregateCodec | None = None, *,
                          layout: AggregateLayout | None = None, store: Path | None = None,
                          source: str | None = None) -> dict[str, Path]:
    """Write the site report and the site's hand-off files under ``out`` (replaced atomically when complete).

    Parameters
    ----------
    site : SiteData
        This site's patient-level inputs (never leave the site).
    inputs : RunInputs
        Cut-offs, reads, attributions and CONSORT of the run (only this site's rows are used).
    codec : AggregateCodec, optional
        How the aggregate vector is sealed (default :class:`PlainCodec`, test mode).
    store : Path, optional
        The site study store: its ``queries.parquet`` (query listing summary) when present.
    source : str, optional
        Where the data came from when synthetic (banner and ``site_summary.json``).
    """
    codec = codec or PlainCodec()
    layout = layout or AggregateLayout()
    block = site_metrics(site, inputs.cutoffs)
    # the protocol's small-cell rule before anything is sealed (evaluation.pooled.suppress_small_cells)
    vector, dropped = suppress_small_cells(site_evaluation_aggregate(site, inputs.cutoffs, layout), layout,
                                           min_cell_size(), site.site)
    data, offsets = encode_blob(codec.encrypt(vector))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        drawer = Drawer(tmp / "figures")
        agreement = site_figures(drawer, site, inputs, block)
        consort = site_consort(inputs, site.site)
        if consort:
            consort_figure(drawer, "consort", {site.site: consort}, f"{site.site}: enrolled → excluded (reasons) → "
                           "eligible → analysed.")
        sent, suppressed = apply_small_cell_rules(block)
        intervals = dhi_intervals(site, inputs)
        suppressed += [f"DHI {b['interval']}: {b['auc_not_estimable']}" for b in intervals or []
                       if b.get("auc_not_estimable")]
        suppressed += [f"pooled {d.statistic}: this site contributes nothing ({d.reason})" for d in dropped]
        summary = {
            "format": SUMMARY_FORMAT, "site": site.site, "study_id": load_protocol().study_id,
            "written": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "data_source": source,
            "consort": consort, "metrics": sent, "agreement": agreement, "suppressed": suppressed,
            "dhi_intervals": intervals,
            "aggregate_suppressed": [d.as_dict() for d in dropped],
            "queries": _query_counts(query_summary(store, site.site)), "cutoffs": dict(inputs.cutoffs),
            "cutoff_source": inputs.cutoff_source, "model_basis": block["model_basis"],
            "aggregate": {"file": AGGREGATE_FILE, "codec": type(codec).__name__, "layout_digest": layout.digest,
                          "length": layout.size, "offsets": offsets, "bytes": len(data)},
        }
        (tmp / AGGREGATE_FILE).write_bytes(data)
        text = json.dumps(rh.json_safe(summary), indent=2, allow_nan=False, default=_json_default)
        (tmp / SUMMARY_FILE).write_text(text, encoding="utf-8")
        page = render_site_html(summary, block, agreement, query_summary(store, site.site), drawer.entries,
                                attribution_table(site, inputs.attributions))
        (tmp / "report.html").write_text(page, encoding="utf-8")
        replace_directory(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("site %s: report and hand-off written to %s (%d figures)", site.site, out, len(drawer.entries))
    return {"report": out / "report.html", "summary": out / SUMMARY_FILE, "aggregate": out / AGGREGATE_FILE,
            "figures": out / "figures"}


def _query_counts(queries: dict[str, Any] | None) -> dict[str, Any] | None:
    """What of the query listing crosses: totals and counts by severity (no rule rows, no subjects)."""
    if queries is None:
        return None
    return {k: queries[k] for k in ("n_queries", "n_subjects", "by_severity")}


def _site_primary(block: Mapping[str, Any]) -> str:
    rows = []
    for mode in MODES:
        b = block[mode]
        n = b.get("n")
        rows.append([mode, f"{rh.fmt(n)} ({rh.fmt(b.get('population'))})", rh.est(b, "auc", null=0.5, n=n),
                     rh.fmt(b.get("cutoff")), rh.est(b, "sensitivity", n=n), rh.est(b, "specificity", n=n),
                     rh.fmt(b.get("brier"), 3)])
    return (f'<p class="method">Basis: {rh.fmt(block.get("model_basis"))}; {rh.fmt(block.get("n_heldout"))} patients '
            f"judge the model here, each mode on its own patients against its own task's label "
            f"({mode_populations(block)}); the reference endpoints rest on the {rh.fmt(block.get('n'))} analysed "
            "(EFFFL) patients.</p>"
            + rh.table(["mode", "n (population)", "AUC (95 % CI, DeLong)", "cut-off", "sensitivity (Wilson)",
                        "specificity (Wilson)", "Brier"], rows))


def _site_glance(summary: Mapping[str, Any], block: Mapping[str, Any]) -> str:
    rows = [["ORR, RECIST 1.1 confirmed, all enrolled", rh.est(block, "orr", n=block.get("orr_n"))],
            ["ORR, RECIST 1.1 confirmed, analysed", rh.est(block, "orr_analysed", n=block.get("orr_analysed_n"))],
            ["median PFS (iRECIST), days", rh.est(block, "median_pfs_days", "median_pfs_ci", digits=0,
                                                  n=block.get("n"))],
            ["DHI AUC", rh.est(block, "dhi_auc", null=0.5, n=block.get("n"))],
            ["C-index (full score)", rh.est(block, "c_index_full", "c_index_full_ci", null=0.5)]]
    return (f"<p>{rh.fmt(block.get('n'))} analysed (EFFFL) patients at {html.escape(str(summary['site']))}; the "
            f"models are judged on {mode_populations(block)}. This report is "
            "patient-level and stays at the site; the centre receives only section 9.</p>" + rh.table(["", ""], rows))


def attribution_table(site: SiteData, attributions: pd.DataFrame | None, top: int = 3) -> str:
    """Per patient of the site: scores, reference label and the ``top`` integrated-gradient attributions (full mode).

    Patient-level: rendered in the site report only.
    """
    if attributions is None or attributions.empty:
        return '<p class="note">No attributions in this run (attributions_full.csv).</p>'
    rows = attributions[attributions["USUBJID"].isin(set(site.predictions["USUBJID"]))]
    value = "ATTRIBUTION" if "ATTRIBUTION" in rows.columns else "VALUE"
    wide = site.predictions.pivot_table(index="USUBJID", columns="MODE", values="SCORE", aggfunc="first").reindex(
        columns=list(MODES))
    # each mode's own task label: early = the reference response, full = durable benefit (empty where undefined)
    labels = site.predictions.pivot_table(index="USUBJID", columns="MODE", values="LABEL", aggfunc="first").reindex(
        columns=list(MODES))
    out = []
    for subject, group in rows.groupby("USUBJID", sort=True):
        summed = group.groupby("FEATURE")[value].sum()
        best = summed.reindex(summed.abs().sort_values(ascending=False).index[:top])
        out.append([html.escape(str(subject)), *(rh.fmt(wide.loc[subject, m]) if subject in wide.index else "–"
                                                for m in MODES),
                    *(_label(labels, subject, m) for m in MODES),
                    "; ".join(f"{html.escape(str(f))} {v:+.3f}" for f, v in best.items())])
    return (rh.table(["USUBJID", *(f"score, {m}" for m in MODES), "reference label (response; early task)",
                      "durable benefit (full task)", f"top {top} attributions (full)"], out)
            + '<p class="method">Integrated gradients of the full model; positive values push towards responder.</p>')


def _label(labels: pd.DataFrame, subject: str, mode: str) -> str:
    value = labels.loc[subject, mode] if subject in labels.index else None
    return rh.fmt(None if value is None or pd.isna(value) else int(value))


def dhi_proxy_sentence(block: Mapping[str, Any]) -> str:
    """What the PI reads under an interval: is the DHI more than a size proxy there?"""
    proxy, name = block.get("size_proxy"), html.escape(str(block.get("interval", "")).replace("-", "→"))
    if proxy is None:
        return f"{name}: not enough to say whether the DHI adds to the volume change."
    if proxy:
        return (f"<b>{name}: the DHI is only a size proxy here</b> — its raw association with response is "
                f"significant (AUC CI excludes 0.5) but not once the volume change is controlled for "
                f"(partial p ≥ {PROXY_ALPHA:g}).")
    return f"{name}: the DHI is not merely a size proxy by this test (raw and volume-adjusted results agree)."


def dhi_intervals_html(blocks: list[Mapping[str, Any]] | None) -> str:
    """The per-interval DHI table of the site report (the same numbers ``site_summary.json`` sends)."""
    if not blocks:
        return ('<p class="note">No per-interval DHI table in this run (pass the site\'s `fedresponse radiomics '
                "dhi` output with --dhi).</p>")
    rows = [[html.escape(str(b["interval"]).replace("-", "→")), rh.fmt(b["n"]), f"{b['responders']}/{b['events']}",
             rh.est(b, "auc", null=0.5, n=b["n"]), rh.est(b, "rho_vol", n=b["n"]),
             rh.est(b, "partial_rho", n=b["n"]) + f" (p {rh.fmt(b.get('partial_p'), 3)})",
             rh.est(b, "hr", null=1.0, n=b["n"])] for b in blocks]
    sentences = "".join(f"<p>{dhi_proxy_sentence(b)}</p>" for b in blocks)
    return (rh.table(["interval", "n", "responders/PFS events", "AUC vs response (95 % CI, DeLong)",
                      "Spearman ρ with Δlog volume", "partial ρ | Δlog volume (p)",
                      "Cox HR per SD, volume-adjusted (95 % CI)"], rows) + sentences
            + '<p class="method">Partial ρ: Spearman of the DHI and the responder flag after residualising both ranks '
            "on the ranks of Δlog volume (t-test, n − 3 df). Cox: PFS on the standardised DHI and Δlog volume "
            "(lifelines, Wald CI). One value per patient and interval (mean over lesions). Small-cell rule: an "
            "interval whose smaller response class (or PFS events, for the HR) is under "
            f"{min_cell_size()} is not estimable.</p>")


def _agreement_html(agree: Mapping[str, Any]) -> str:
    bar = load_protocol().agreement.icc_min
    meets = "yes" if agree.get("icc_meets_required") else ("no" if "icc" in agree else "–")
    rows = [["Cohen κ model (full) vs reference", rh.estimate(agree.get("kappa_full"), agree.get("kappa_full_ci"),
                                                              null=0.0, n=agree.get("kappa_n"))],
            ["readers' ICC(2,1), baseline SLD", rh.estimate(agree.get("icc"), agree.get("icc_ci"),
                                                            n=agree.get("n_pairs"))],
            [f"ICC ≥ {bar:g} (protocol)", meets],
            ["Bland–Altman bias (mm), 95 % limits", f"{rh.fmt(agree.get('ba_bias_mm'), 1)} "
                                                    f"({rh.ci(agree.get('ba_loa_mm'), 1)})"]]
    return rh.table(["statistic", "value"], rows)


def _queries_html(queries: Mapping[str, Any] | None) -> str:
    if queries is None:
        return '<p class="note">No query listing found (pass the site store to include STORE/queries.parquet).</p>'
    rows = [[html.escape(r["rule"]), html.escape(r["severity"]), str(r["n"])] for r in queries["by_rule"]]
    sev = ", ".join(f"{k}: {v}" for k, v in queries["by_severity"].items())
    return (f"<p>{queries['n_queries']} open queries on {queries['n_subjects']} subjects ({html.escape(sev)}).</p>"
            + rh.table(["edit check", "severity", "queries"], rows))


def _handoff_html(summary: Mapping[str, Any]) -> str:
    agg = summary["aggregate"]
    sealed = "CKKS ciphertexts" if agg["codec"] == "CkksCodec" else "a plain float64 vector (PlainCodec, test mode)"
    kept = "".join(f"<li>{html.escape(s)}</li>" for s in summary["suppressed"]) or "<li>nothing suppressed</li>"
    return (f'<div class="crossed"><p><b>{SUMMARY_FILE}</b>: CONSORT counts, the site-level statistics above with '
            f"their n, reader-agreement statistics, query counts by severity, the cut-offs and the data source. "
            f"<b>{AGGREGATE_FILE}</b>: one aggregate vector of {agg['length']} counts and sums (layout "
            f"{agg['layout_digest']}) as {sealed}, {agg['bytes']} bytes. No patient row, identifier or "
            "per-patient value.</p><p>Small-cell rules applied before sending:</p><ul>" + kept + "</ul></div>")


def render_site_html(summary: Mapping[str, Any], block: Mapping[str, Any], agreement: Mapping[str, Any],
                     queries: Mapping[str, Any] | None, figures: list[Any], attributions: str = "") -> str:
    """The site report as one self-contained HTML string."""
    protocol = load_protocol()
    site = str(summary["site"])
    facts = [("Study", f"{html.escape(protocol.title)} ({html.escape(protocol.study_id)})"),
             ("Registration", rh.registration()),
             ("Site", html.escape(site)),
             ("Data cut-off", f"study day {protocol.data_cutoff_day} (protocol)"),
             ("Written", html.escape(str(summary["written"]))),
             ("Cut-offs", html.escape(str(summary["cutoff_source"])))]
    bodies = {"summary": _site_glance(summary, block), "primary": _site_primary(block),
              "agreement": _agreement_html(agreement), "queries": _queries_html(queries),
              "handoff": _handoff_html(summary), "interpretability": attributions,
              "dhi": dhi_intervals_html(summary.get("dhi_intervals")),
              "consort": "" if summary.get("consort") else '<p class="note">No CONSORT counts for this site.</p>'}
    return rh.page(title=protocol.registration.public_title, kind=f"Site report — {site} (patient-level; stays at "
                   "the site)", facts=facts, banner=rh.synthetic_banner(summary.get("data_source")),
                   sections=SITE_SECTIONS, bodies=bodies, figures=figures,
                   footer=f"fedresponse {rh.package_version()} · site {html.escape(site)} · every statistic names its "
                   "method.")


def read_site_summary(folder: Path) -> dict[str, Any]:
    """A site's ``site_summary.json``; the error names the file and what the site must run."""
    path = folder / SUMMARY_FILE
    try:
        summary: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvaluationInputError(f"cannot read {path} ({exc}); the site runs `fedresponse evaluate RUN --site "
                                   "SITE --out DIR` and sends DIR/site_summary.json + site_aggregate.bin") from exc
    if summary.get("format") != SUMMARY_FORMAT:
        raise EvaluationInputError(f"{path} has format {summary.get('format')!r}, expected {SUMMARY_FORMAT!r}")
    return summary
