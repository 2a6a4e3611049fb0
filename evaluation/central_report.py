"""The central PI report, built only from what legitimately crosses the hospital wall.

:func:`write_central_evaluation` reads one hand-off folder and nothing else:

- ``<SITE>/site_summary.json`` + ``<SITE>/site_aggregate.bin`` from every site
  (:mod:`evaluation.site_report`);
- optionally ``privacy.json`` (the privacy ledger the server keeps: ε per site and round, δ, budgets),
  ``run.json`` (run id and date), ``run_summary.json`` (rounds planned/completed, stop reason),
  ``pooled_dhi_cox.json`` (the result of the interactive pooled Cox fit, :mod:`evaluation.pooled_cox`) and
  ``pooled_heldout.json`` (the federation's own pooled held-out evaluation as the key holder decrypted it).

The aggregates are added as the server adds them (:func:`decrypt_sum`, public context only
under CKKS) and decrypted once by the key holder; every pooled statistic comes from that sum
(:func:`evaluation.pooled.pooled_metrics`). The report holds no patient-level value: no USUBJID, no
per-patient figure; its privacy section lists exactly the files that crossed.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evaluation import report_html as rh
from evaluation.atomic import replace_directory
from evaluation.dhi_stats import pooled_dhi_intervals
from evaluation.exceptions import EvaluationInputError
from evaluation.figures import orr_label
from evaluation.metrics import ALL_BASIS, HELDOUT_BASIS, pooled_heldout_n
from evaluation.pooled import MODES, AggregateCodec, AggregateLayout, PlainCodec, _round_counts, pooled_metrics
from evaluation.pooled_cox import METHOD as COX_POOLED_METHOD
from evaluation.protocol import load_protocol
from evaluation.report_figures import (
    Drawer,
    FigureEntry,
    consort_figure,
    mode_populations,
    pooled_figures,
    privacy_figure,
)
from evaluation.site_report import AGGREGATE_FILE, SUMMARY_FILE, decode_blob, read_site_summary
from evaluation.stats import METHODS as STATS_METHODS
from evaluation.survival import METHODS as SURVIVAL_METHODS

log = logging.getLogger(__name__)

PRIVACY_FILE = "privacy.json"
RUN_FILE = "run.json"
RUN_SUMMARY_FILE = "run_summary.json"
POOLED_COX_FILE = "pooled_dhi_cox.json"
HELDOUT_FILE = "pooled_heldout.json"

CENTRAL_SECTIONS: tuple[tuple[str, str], ...] = (
    ("population", "Participant flow (CONSORT)"),
    ("summary", "Headline results"),
    ("primary", "Primary endpoint: prediction of response (ROC AUC, sensitivity, specificity)"),
    ("survival", "Secondary endpoint: progression-free survival"),
    ("orr", "Secondary endpoint: objective response rate"),
    ("dhi", "Secondary endpoint: Dynamic Heterogeneity Index"),
    ("calibration", "Calibration"),
    ("agreement", "Agreement: model vs reference, readers (site-level statistics)"),
    ("sites", "Per-site aggregate rows"),
    ("privacy", "Privacy: what crossed the hospital wall"),
    ("methods", "Methods"),
)


@dataclass
class Handoff:
    """What reached the centre: per site its summary and sealed aggregate, plus the run's central files."""

    folder: Path
    summaries: dict[str, dict[str, Any]]
    blobs: dict[str, Any]
    extras: dict[str, Any] = field(default_factory=dict)


def _site_folders(folder: Path) -> list[Path]:
    return sorted(p.parent for p in folder.glob(f"*/{SUMMARY_FILE}"))


def read_handoff(folder: Path) -> Handoff:
    """Read a hand-off folder (``<SITE>/site_summary.json`` + ``site_aggregate.bin`` each, optional run files)."""
    sites = _site_folders(folder) if folder.is_dir() else []
    if not sites:
        raise EvaluationInputError(f"no <SITE>/{SUMMARY_FILE} under {folder}; each site runs `fedresponse evaluate "
                                   "RUN --site SITE --out DIR` and sends DIR's site_summary.json and "
                                   "site_aggregate.bin")
    summaries, blobs = {}, {}
    for site_dir in sites:
        summary = read_site_summary(site_dir)
        agg = summary["aggregate"]
        data = (site_dir / agg.get("file", AGGREGATE_FILE)).read_bytes()
        if len(data) != agg["bytes"]:
            raise EvaluationInputError(f"{site_dir / AGGREGATE_FILE} is {len(data)} bytes, its summary says "
                                       f"{agg['bytes']}; ask site {summary['site']} to resend both files")
        summaries[summary["site"]] = summary
        blobs[summary["site"]] = decode_blob(data, agg["offsets"], agg["codec"])
    extras = {name: json.loads((folder / name).read_text(encoding="utf-8"))
              for name in (PRIVACY_FILE, RUN_FILE, RUN_SUMMARY_FILE, POOLED_COX_FILE, HELDOUT_FILE)
              if (folder / name).exists()}
    return Handoff(folder, summaries, blobs, extras)


def decrypt_sum(blobs: list[Any], codec: AggregateCodec, layout: AggregateLayout) -> Any:
    """The key holder's view of sealed site aggregates: added as the server adds them, the sum decrypted once.

    Integer blocks are rounded by the one rounding rule of :func:`evaluation.pooled.pool`.

    Returns
    -------
    ndarray, shape (layout.size,)
    """
    total = blobs[0]
    for blob in blobs[1:]:
        total = codec.add(total, blob)
    return _round_counts(codec.decrypt(total, layout.size), layout)


def _check_codec(handoff: Handoff, codec: AggregateCodec | None, layout: AggregateLayout) -> AggregateCodec:
    used = {s["aggregate"]["codec"] for s in handoff.summaries.values()}
    digests = {s["aggregate"]["layout_digest"] for s in handoff.summaries.values()}
    if digests != {layout.digest}:
        raise EvaluationInputError(f"site aggregates use layout(s) {sorted(digests)}, the centre expects "
                                   f"{layout.digest}; the sites must agree on AggregateLayout before evaluating")
    if len(used) != 1:
        raise EvaluationInputError(f"sites sealed their aggregates with different codecs {sorted(used)}; all must use "
                                   "the same (CKKS with the ceremony's keys)")
    if used == {"CkksCodec"} and not (codec is not None and type(codec).__name__ == "CkksCodec"):
        raise EvaluationInputError("the site aggregates are CKKS-encrypted: only the key holder can read their sum; "
                                   "run the central step with --keys KEYDIR on the PI's machine")
    return codec if codec is not None and used == {type(codec).__name__} else PlainCodec()


def _basis(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    held = [s for s, v in sorted(summaries.items()) if v.get("model_basis") == HELDOUT_BASIS]
    if len(held) == len(summaries):
        return HELDOUT_BASIS
    if not held:
        return ALL_BASIS
    rest = [s for s in sorted(summaries) if s not in held]
    return f"held-out patients at {', '.join(held)} (SPLIT column); all analysed patients at {', '.join(rest)}"


def central_metrics(handoff: Handoff, codec: AggregateCodec | None = None,
                    layout: AggregateLayout | None = None) -> dict[str, Any]:
    """The central ``metrics.json`` from the hand-off alone (same keys as before the split, plus ``handoff``)."""
    layout = layout or AggregateLayout()
    codec = _check_codec(handoff, codec, layout)
    first = next(iter(handoff.summaries.values()))
    cutoffs = first["cutoffs"]
    summed = decrypt_sum([handoff.blobs[s] for s in sorted(handoff.blobs)], codec, layout)
    pooled = pooled_metrics(summed, cutoffs, layout)
    pooled["n_heldout"] = pooled_heldout_n(pooled)
    cox = handoff.extras.get(POOLED_COX_FILE) or {
        "dhi_hr": None, "dhi_hr_ci": None, "dhi_hr_p": None, "dhi_hr_iterations": None,
        "dhi_hr_method": COX_POOLED_METHOD, "dhi_hr_unit": load_protocol().heterogeneity.dhi_hr_unit,
        "dhi_hr_not_estimable": "the pooled Cox fit needs interactive rounds with the sites (evaluation.pooled_cox); "
                         "none were run for this hand-off"}
    pooled.update(cox)
    pooled["suppressed"] = [item for _, v in sorted(handoff.summaries.items()) for item in
                            v.get("aggregate_suppressed", [])] + list(cox.get("suppressed", []))
    pooled["min_cell_size"] = load_protocol().statistics.min_cell_size
    pooled["dhi_intervals"] = pooled_dhi_intervals(handoff.summaries)
    metrics: dict[str, Any] = {
        "pooled": pooled,
        "sites": {s: v["metrics"] for s, v in sorted(handoff.summaries.items())},
        "agreement": {s: v["agreement"] for s, v in sorted(handoff.summaries.items()) if v.get("agreement")},
        "consort": {s: v["consort"] for s, v in sorted(handoff.summaries.items()) if v.get("consort")},
        "suppressed": {s: v.get("suppressed", []) for s, v in sorted(handoff.summaries.items())},
        "cutoffs": cutoffs, "cutoff_source": first.get("cutoff_source", "given"),
        "model_basis": _basis(handoff.summaries),
        "pooling": {"codec": type(codec).__name__, "layout_digest": layout.digest, "score_bins": layout.score_bins,
                    "pfs_grid_days": [layout.pfs_grid_days[0], layout.pfs_grid_days[1] - layout.pfs_grid_days[0],
                                      layout.pfs_grid_days[-1]]},
        "methods": STATS_METHODS | SURVIVAL_METHODS | {"cox_pooled": COX_POOLED_METHOD},
        "handoff": _crossed(handoff),
    }
    if PRIVACY_FILE in handoff.extras:
        metrics["privacy"] = handoff.extras[PRIVACY_FILE]
    if HELDOUT_FILE in handoff.extras:
        metrics["pooled_heldout"] = handoff.extras[HELDOUT_FILE]
    sources = sorted({str(v["data_source"]) for v in handoff.summaries.values() if v.get("data_source")})
    metrics["data_source"] = "; ".join(sources) or None
    for name in (RUN_FILE, RUN_SUMMARY_FILE):
        if name in handoff.extras:
            metrics[name.removesuffix(".json")] = handoff.extras[name]
    log.info("central: pooled %d site(s), %d subject(s) with %s", len(handoff.summaries), pooled["n"],
             type(codec).__name__)
    return metrics


def _crossed(handoff: Handoff) -> dict[str, Any]:
    """The inventory of what reached the centre (files and their sizes), for the privacy statement."""
    sites = {}
    for site, summary in sorted(handoff.summaries.items()):
        agg = summary["aggregate"]
        sites[site] = {"files": [SUMMARY_FILE, agg.get("file", AGGREGATE_FILE)], "codec": agg["codec"],
                       "aggregate_values": agg["length"], "aggregate_bytes": agg["bytes"]}
    return {"sites": sites, "central_files": sorted(handoff.extras)}


def _flow_totals(consort: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"enrolled": 0, "excluded": {}, "eligible": 0, "analysed": 0, "by_reason_not_analysed": {}}
    for entry in consort.values():
        enrolled = int(entry.get("enrolled", entry.get("screened", 0)))
        total["enrolled"] += enrolled
        total["eligible"] += int(entry.get("eligible", enrolled - sum(entry["excluded"].values())))
        total["analysed"] += int(entry["analysed"])
        for key in ("excluded", "by_reason_not_analysed"):
            for reason, n in (entry.get(key) or {}).items():
                total[key][reason] = total[key].get(reason, 0) + int(n)
    return total


def _population(metrics: Mapping[str, Any]) -> str:
    consort = metrics.get("consort") or {}
    if not consort:
        return ('<p class="note">No CONSORT counts reached the centre (the sites ran without their CRF/population '
                "flags); the analysed n below comes from the pooled aggregate.</p>")
    rows = []
    for name, e in [*sorted(consort.items()), ("all sites", _flow_totals(consort))]:
        enrolled = int(e.get("enrolled", e.get("screened", 0)))
        reasons = "; ".join(f"{html.escape(r)}: {n}" for r, n in e["excluded"].items() if n) or "–"
        rows.append([f"<b>{name}</b>" if name == "all sites" else name, str(enrolled),
                     f"{sum(e['excluded'].values())} ({reasons})",
                     str(e.get("eligible", enrolled - sum(e["excluded"].values()))), str(e["analysed"])])
    return rh.table(["site", "enrolled", "excluded (reasons)", "eligible", "analysed"], rows)


def _cards(metrics: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    p = metrics["pooled"]
    n_model = p.get("n_heldout", p["n"])
    out = []
    for mode, label in (("full", "AUC, full model (T0–T2)"), ("early", "AUC, early model (T0+T1)")):
        out.append((label, rh.est(p[mode], "auc", null=0.5, n=p[mode].get("n", n_model)), True))
    f = p["full"]
    out.append((f"sensitivity, full, cut-off {rh.fmt(f['cutoff'])}",
                rh.est(f, "sensitivity", n=f.get("n")), True))
    out.append((f"specificity, full, cut-off {rh.fmt(f['cutoff'])}",
                rh.est(f, "specificity", n=f.get("n")), True))
    out.append(("ORR (RECIST 1.1 confirmed, all enrolled)", rh.est(p, "orr", n=p.get("orr_n")),
                False))
    out.append(("median PFS (iRECIST), days", rh.est(p, "median_pfs_days", "median_pfs_ci", digits=0,
                                                          n=p["n"]), False))
    return out


def _summary(metrics: Mapping[str, Any]) -> str:
    cards = "".join(f'<div class="card{" primary" if primary else ""}"><div class="label">'
                    f'{"Primary endpoint" if primary else "Secondary endpoint"}</div><div class="value">{value}'
                    f'</div><div class="label">{html.escape(label)} · 95 % CI</div></div>'
                    for label, value, primary in _cards(metrics))
    p = metrics["pooled"]
    return (f'<div class="headline">{cards}</div><p id="model-basis">Model statistics (AUC, sensitivity, '
            f"specificity, calibration, predicted-group KM, model-vs-reference κ) rest on each mode's own patients, "
            f"judged against its own task's label ({mode_populations(p)}) — {rh.fmt(metrics.get('model_basis'))}; "
            f"reference endpoints (ORR, PFS, DHI, reader agreement, participant flow) on all {rh.fmt(p['n'])} analysed "
            f"(EFFFL) patients. Cut-offs: {rh.fmt(metrics['cutoff_source'])}. Marks: "
            '<span class="flag">CI includes 0.5</span> the estimate is compatible with chance; '
            f'<span class="flag">n &lt; {rh.min_patients()}</span> fewer patients than the protocol minimum '
            "(configs/study.yaml statistics.min_patients_estimate).</p>")


def _mode_row(name: str, mode: str, b: Mapping[str, Any]) -> list[str]:
    n = b.get("n")
    population = f" ({rh.fmt(b['population'])})" if b.get("population") else ""
    return [name, mode, rh.fmt(n) + population, rh.est(b, "auc", null=0.5, n=n),
            rh.fmt(b.get("cutoff")),
            rh.est(b, "sensitivity", n=n), rh.est(b, "specificity", n=n),
            rh.fmt(b.get("ppv")), rh.fmt(b.get("npv"))]


def _primary(metrics: Mapping[str, Any]) -> str:
    rows = [_mode_row("pooled", mode, metrics["pooled"][mode]) for mode in MODES]
    header = ["block", "mode", "n (population)", "AUC (95 % CI, DeLong)", "cut-off", "sensitivity (Wilson)",
              "specificity (Wilson)", "PPV", "NPV"]
    bounds = [b for m in MODES if rh.finite(b := metrics["pooled"][m].get("auc_binning_bound"))]
    binning = (f'<p class="method">Pooled AUC from {metrics["pooling"]["score_bins"]}-bin score histograms; binning '
               f"error at most {max(bounds):.4f} (half the share of responder/non-responder pairs sharing a bin).</p>"
               if bounds else "")
    return (f'<p class="method">Basis: {rh.fmt(metrics.get("model_basis"))}. Pooled statistics from the sites\' '
            f'aggregates, {rh.codec_words(metrics["pooling"]["codec"])}. Per-site rows: section 9.</p>'
            + rh.table(header, rows) + _suppressed(metrics) + binning + _heldout_pooled(metrics.get("pooled_heldout")))


def _suppressed(metrics: Mapping[str, Any]) -> str:
    """Which site contributes nothing to which pooled statistic (small cells, ``statistics.min_cell_size``)."""
    items = metrics["pooled"].get("suppressed") or []
    if not items:
        return ""
    listed = "".join(f"<li>{html.escape(str(i['site']))}: pooled {html.escape(str(i['statistic']))} — "
                     f"{html.escape(str(i['reason']))}</li>" for i in items)
    return (f'<div class="note" id="small-cells">Small cells: these sites contribute nothing to these pooled '
            f"statistics (fewer than {metrics['pooled'].get('min_cell_size')} subjects in a cell):<ul>{listed}</ul>"
            "</div>")


def _heldout_pooled(block: Mapping[str, Any] | None) -> str:
    """The federation's encrypted pooled evaluation (``RUN/pooled_aggregate.ckks``), decrypted or not."""
    if not block:
        return ""
    if block.get("status") != "decrypted":
        return f'<p class="note" id="pooled-heldout">{rh.fmt(block.get("note"))}</p>'
    rows = [[m, rh.fmt(block[m].get("n")) + (f" ({rh.fmt(block[m]['population'])})" if block[m].get("population")
                                             else ""),
             rh.est(block[m], "auc", null=0.5, n=block[m].get("n")),
             rh.fmt(block[m]["auc_binning_bound"], 4), rh.fmt(block[m]["cutoff"]), rh.fmt(block[m]["sensitivity"]),
             rh.fmt(block[m]["specificity"])] for m in MODES]
    table = rh.table(["mode", "n held-out", "AUC (95 % CI, binned DeLong)", "binning bound", "cut-off", "sens.",
                      "spec."], rows)
    return (f'<h3 id="pooled-heldout">Federated pooled evaluation, decrypted by the key holder</h3>{table}'
            f'<p class="method">{rh.fmt(block.get("evaluation"))}; sites {rh.fmt(", ".join(block.get("sites", [])))}; '
            f'source {rh.fmt(block.get("source"))}.</p>')


def _survival(metrics: Mapping[str, Any]) -> str:
    p = metrics["pooled"]
    rows = [["pooled", rh.fmt(p["n"]), rh.est(p, "median_pfs_days", "median_pfs_ci", digits=0, n=p["n"]),
             rh.fmt(p["full"].get("logrank_called_p"), 3), rh.fmt(p.get("logrank_reference_p"), 3)]]
    return (rh.table(["block", "n", "median PFS, days (95 % CI, Brookmeyer–Crowley)",
                      "log-rank p, predicted groups (full)", "log-rank p, reference groups"], rows)
            + '<p class="method">PFS by iRECIST: event = confirmed progression (iCPD) or death; pooled KM from '
            "the sites' numbers at risk and events on a 7-day grid. Site rows: section 9.</p>")


def _orr(metrics: Mapping[str, Any]) -> str:
    p = metrics["pooled"]
    rows = []
    for basis, key in (("all enrolled (ITTFL, protocol)", "orr_all"), ("analysed (EFFFL)", "orr_all_analysed")):
        for name, o in (p.get(key) or {}).items():
            rows.append([orr_label(name), basis, f'{o["k"]}/{o["n"]}', rh.estimate(o["estimate"], o["ci"], n=o["n"])])
    return (rh.table(["definition", "denominator", "responders/denominator", "ORR (95 % CI, Clopper–Pearson)"], rows)
            + f'<p class="method">Headline ORR: RECIST 1.1 confirmed over {rh.fmt(p.get("orr_denominator"))}.</p>')


def _dhi(metrics: Mapping[str, Any]) -> str:
    p = metrics["pooled"]
    unit = p.get("dhi_hr_unit") or 1.0
    rows = [["pooled", rh.est(p, "dhi_auc", null=0.5, n=p["n"]), rh.est(p, "dhi_hr", null=1.0, n=p["n"])]]
    bound = p.get("dhi_auc_binning_bound")
    note = (f"Pooled DHI AUC from histograms over the agreed DHI range; binning error at most {bound:.4f}. "
            if rh.finite(bound) else "")
    steps = p.get("dhi_hr_iterations")
    note += (f"Pooled HR per {unit:g} DHI: {html.escape(str(p.get('dhi_hr_method')))}"
             + (f" ({steps} Newton steps)." if steps else "."))
    return (rh.table(["block", "DHI AUC (95 % CI, DeLong)", f"Cox HR per {unit:g} DHI (95 % CI)"], rows)
            + f'<p class="method">{note}</p>' + _dhi_intervals(p.get("dhi_intervals")))


def _dhi_intervals(blocks: list[Mapping[str, Any]] | None) -> str:
    """Per-interval pooled DHI association (from the sites' ``dhi_intervals`` blocks only)."""
    if not blocks:
        return '<p class="note">No site sent per-interval DHI statistics (sites evaluate with --dhi).</p>'
    rows = [[html.escape(str(b["interval"]).replace("-", "→")), f"{b['n']} ({b['n_sites']} sites)",
             rh.est(b, "auc", null=0.5) + f" [{len(b.get('auc_sites') or [])} sites]",
             rh.est(b, "partial_rho") + f" (p {rh.fmt(b.get('partial_p'), 3)}) "
             f"[{len(b.get('partial_rho_sites') or [])} sites]",
             rh.est(b, "hr", null=1.0) + f" [{len(b.get('hr_sites') or [])} sites]"] for b in blocks]
    proxy = [str(b["interval"]).replace("-", "→") for b in blocks if b.get("size_proxy")]
    verdict = (f"<p><b>Pooled, the DHI is only a size proxy at {html.escape(', '.join(proxy))}</b>: its raw "
               "association with response is significant but not once the volume change is controlled for.</p>"
               if proxy else "")
    return (rh.table(["interval", "n", "AUC vs response (95 % CI)", "partial ρ | Δlog volume (95 % CI)",
                      "Cox HR per SD, volume-adjusted (95 % CI)"], rows) + verdict
            + '<p class="method">Pooled from the sites\' per-interval statistics only (no patient row crosses): '
            "partial ρ by inverse-variance Fisher-z meta-analysis (site weight n − 3 − 1); AUC and volume-adjusted "
            "HR by fixed-effect inverse-variance meta-analysis of the site estimates (SE from each site's 95 % CI; "
            "log scale for the HR). Sites whose value the small-cell rule withheld contribute nothing; [k sites] "
            "counts those pooled.</p>")


def _agreement(metrics: Mapping[str, Any]) -> str:
    bar = load_protocol().agreement.icc_min
    rows = []
    for name, a in sorted((metrics.get("agreement") or {}).items()):
        meets = "yes" if a.get("icc_meets_required") else ("no" if "icc" in a else "–")
        rows.append([name, rh.est(a, "kappa_full", null=0.0, n=a.get("kappa_n")), rh.est(a, "icc", n=a.get("n_pairs")),
                     meets,
                     f"{rh.fmt(a.get('ba_bias_mm'), 1)} ({rh.ci(a.get('ba_loa_mm'), 1)})"])
    return (rh.table(["site", "Cohen κ model (full) vs reference", "readers' ICC(2,1), baseline SLD",
                      f"ICC ≥ {bar:g} (protocol)", "Bland–Altman bias, mm (95 % limits)"], rows)
            + '<p class="method">Computed at each site from its own reads; the Bland–Altman plots (one point per '
            "patient) are in the site reports.</p>")


def _sites(metrics: Mapping[str, Any]) -> str:
    rows = []
    for site, b in sorted(metrics["sites"].items()):
        for mode in MODES:
            rows.append(_mode_row(site, mode, b[mode]))
    model = rh.table(["site", "mode", "n (population)", "AUC (95 % CI)", "cut-off", "sensitivity", "specificity", "PPV",
                      "NPV"], rows)
    ref = [[site, rh.fmt(b.get("n")), rh.est(b, "orr", n=b.get("orr_n")),
            rh.est(b, "median_pfs_days", "median_pfs_ci", digits=0, n=b.get("n")),
            rh.est(b, "dhi_auc", null=0.5, n=b.get("n")), rh.est(b, "hr_responder", null=1.0, n=b.get("n"))]
           for site, b in sorted(metrics["sites"].items())]
    supp = "".join(f"<li>{html.escape(site)}: {html.escape(s)}</li>" for site, items in
                   sorted((metrics.get("suppressed") or {}).items()) for s in items)
    return (model + rh.table(["site", "n (EFFFL)", "ORR RECIST 1.1 confirmed (enrolled)", "median PFS, days", "DHI AUC",
                              "Cox HR responder vs not"], ref)
            + '<p class="method">Each row was computed at its site and sent with its n; small-cell rules '
            f'(configs/study.yaml statistics) applied at the site:</p><ul>{supp or "<li>none</li>"}</ul>')


def _privacy(metrics: Mapping[str, Any]) -> str:
    crossed = metrics["handoff"]
    items = "".join(
        f"<li><b>{html.escape(site)}</b>: {', '.join(v['files'])} — one aggregate vector of {v['aggregate_values']} "
        f"counts and sums ({'CKKS ciphertexts' if v['codec'] == 'CkksCodec' else 'unencrypted, PlainCodec test mode'}"
        f", {v['aggregate_bytes']} bytes) plus CONSORT counts and site-level statistics with their n</li>"
        for site, v in crossed["sites"].items())
    central = ", ".join(crossed["central_files"]) or "none"
    statement = (f'<div class="crossed" id="what-crossed"><p>What reached the centre, and nothing else:</p><ul>{items}'
                 f"<li>run files: {html.escape(central)}</li></ul><p>No patient row, identifier or per-patient value "
                 f"crossed any site's wall; the pooled statistics come from the sum of the site vectors, "
                 f"{rh.codec_words(metrics['pooling']['codec'])}. Patient-level figures are in each site's own "
                 "report.</p></div>")
    priv = metrics.get("privacy") or {}
    rows = [[s, rh.fmt(v.get("epsilon")), rh.fmt(v.get("budget")), rh.fmt(v.get("rounds"))]
            for s, v in sorted(priv.get("sites", {}).items())]
    ledger = (rh.table(["site", "ε spent", "ε budget", "rounds"], rows)
              + f'<p class="method">δ = {rh.fmt(priv.get("delta"), 6)}; ledger: '
                f'{rh.fmt(", ".join(priv.get("source", [])))}.</p>') if priv else (
        '<p class="note">No privacy ledger in this run (not a DP run).</p>')
    stopped = stop_line(metrics.get("run_summary"))
    stop = f'<p class="note" id="stop-line">Federated training {html.escape(stopped)}.</p>' if stopped else ""
    excluded = excluded_line(metrics.get("run_summary"))
    stop += f'<p class="note" id="excluded-sites">{html.escape(excluded)}</p>' if excluded else ""
    return statement + stop + ledger


def _methods(metrics: Mapping[str, Any]) -> str:
    items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in metrics["methods"].items())
    return f"<ul>{items}</ul>"


RENDERERS = {"population": _population, "summary": _summary, "primary": _primary, "survival": _survival,
             "orr": _orr, "dhi": _dhi, "agreement": _agreement, "sites": _sites, "privacy": _privacy,
             "methods": _methods}


def stop_line(run_summary: Mapping[str, Any] | None) -> str | None:
    """``stopped after round k of n: <reason>`` from ``run_summary.json`` (the server's own ``stop`` sentence,
    ``fl_server.planning``, when it wrote one), or None."""
    if not run_summary or run_summary.get("rounds_completed") is None:
        return None
    if run_summary.get("stop"):
        return str(run_summary["stop"])
    done = run_summary["rounds_completed"]
    planned = run_summary.get("rounds_configured", run_summary.get("rounds_planned"))
    reason = str(run_summary.get("stop_reason") or "").replace("_", " ")
    if planned is not None and done >= planned and reason in ("", "completed", "rounds completed"):
        return f"completed all {planned} rounds"
    of = planned if planned is not None else "?"
    return f"stopped after round {done} of {of}" + (f": {reason}" if reason else "")


def excluded_line(run_summary: Mapping[str, Any] | None) -> str | None:
    """``Sites excluded at the handshake: S03 (reason); node 7 (reason).`` from ``run_summary.json``
    ``excluded_sites`` (``fl_server.handshake``), or None when the handshake excluded no site."""
    excluded = (run_summary or {}).get("excluded_sites") or []
    if not excluded:
        return None
    named = "; ".join(f"{e.get('site') or 'node ' + str(e.get('node'))} ({str(e.get('reason', '')).rstrip('.')})"
                      for e in excluded)
    return f"Sites excluded at the handshake: {named}."


def _facts(metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    protocol = load_protocol()
    run = metrics.get("run") or {}
    p = metrics["pooled"]
    facts = [("Study", f"{html.escape(protocol.title)} ({html.escape(protocol.study_id)})"),
             ("Registration", rh.registration()),
             ("Data cut-off", f"study day {protocol.data_cutoff_day} (protocol data_cutoff_day)"),
             ("Run", f"{html.escape(str(run.get('run_id', 'not given')))}"
                     + (f", trained {html.escape(str(run['date']))}" if run.get("date") else "")),
             ("Report generated", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
             ("Population", f"{len(metrics['sites'])} site(s), {p['n']} analysed (EFFFL) patients; model judged "
                            f"on {mode_populations(p)}")]
    stopped = stop_line(metrics.get("run_summary"))
    if stopped:
        facts.append(("Federated training", html.escape(stopped)))
    return facts


def render_central_html(metrics: Mapping[str, Any], figures: list[FigureEntry]) -> str:
    """The central PI report as one self-contained HTML string (aggregates only)."""
    protocol = load_protocol()
    bodies = {sid: RENDERERS[sid](metrics) for sid, _ in CENTRAL_SECTIONS if sid in RENDERERS}
    return rh.page(title=protocol.registration.public_title, kind="Central PI report — pooled results (aggregates "
                   "only)", facts=_facts(metrics), banner=rh.synthetic_banner(metrics.get("data_source")),
                   sections=CENTRAL_SECTIONS, bodies=bodies, figures=figures,
                   footer=f"fedresponse {rh.package_version()} · built at the centre from the hand-off folder only · "
                   "every statistic names its method.")


def write_central_evaluation(handoff_dir: Path, out: Path, codec: AggregateCodec | None = None) -> dict[str, Path]:
    """Read ``handoff_dir`` (only); write ``metrics.json``, ``figures/``, ``report.html`` and a copy of the hand-off
    (``handoff/``) under ``out`` atomically."""
    metrics = central_metrics(read_handoff(handoff_dir), codec)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        drawer = Drawer(tmp / "figures")
        if metrics.get("consort"):
            flow = dict(sorted(metrics["consort"].items()))
            if len(flow) > 1:
                flow["all sites"] = _flow_totals(metrics["consort"])
            consort_figure(drawer, "population", flow, "Enrolled → excluded (protocol reasons) → eligible → analysed, "
                           "per site and in total (counts sent by the sites).")
        pooled_figures(drawer, metrics)
        if metrics.get("privacy"):
            privacy_figure(drawer, metrics["privacy"])
        text = json.dumps(rh.json_safe(metrics), indent=2, allow_nan=False)
        (tmp / "metrics.json").write_text(text, encoding="utf-8")
        (tmp / "report.html").write_text(render_central_html(metrics, drawer.entries), encoding="utf-8")
        shutil.copytree(handoff_dir, tmp / "handoff")  # what the report was built from, for the audit
        replace_directory(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("central report written to %s (%d figures)", out, len(drawer.entries))
    return {"metrics": out / "metrics.json", "report": out / "report.html", "figures": out / "figures",
            "handoff": out / "handoff"}
