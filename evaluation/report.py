"""The whole evaluation on one machine: every site's step, then the centre's, split by the hospital wall.

:func:`write_evaluation` plays each hospital and then the coordinating centre, exactly as a deployment runs
them apart:

1. per site, :func:`evaluation.site_report.write_site_evaluation` writes the patient-level site report and the
   site's hand-off (``site_summary.json`` + ``site_aggregate.bin``) into ``site_out/<SITE>/``;
2. the hand-off files, the privacy ledger, ``run.json``/``run_summary.json``, the interactive pooled DHI Cox fit
   (:func:`evaluation.metrics.pooled_dhi_hazard_ratio`: each Newton step sees only summed, sealed score and
   information) and the key holder's decrypted federated evaluation are gathered into a hand-off folder;
3. :func:`evaluation.central_report.write_central_evaluation` builds the central PI report from that folder
   alone (kept as ``out/handoff/`` so the report documents exactly what it was built from).

Every output folder is written atomically (a temporary sibling renamed over it when complete).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evaluation.central_report import (
    CENTRAL_SECTIONS,
    HELDOUT_FILE,
    POOLED_COX_FILE,
    PRIVACY_FILE,
    RUN_FILE,
    RUN_SUMMARY_FILE,
    write_central_evaluation,
)
from evaluation.evaluate import RunInputs
from evaluation.metrics import pooled_dhi_hazard_ratio
from evaluation.pooled import AggregateCodec, PlainCodec
from evaluation.report_html import json_safe
from evaluation.site_report import AGGREGATE_FILE, SUMMARY_FILE, write_site_evaluation

log = logging.getLogger(__name__)

#: The central PI report's sections (``id``, title), in reading order.
SECTIONS = CENTRAL_SECTIONS


def default_site_out(out: Path) -> Path:
    """Where a one-machine run keeps the site reports: ``<out>_sites/`` beside the central report."""
    return out.with_name(f"{out.name}_sites")


def run_facts(inputs: RunInputs) -> dict[str, Any]:
    """``run.json``: the run id (its folder name) and when its predictions were written (UTC)."""
    stamps = [p.stat().st_mtime for p in inputs.run.rglob("predictions.csv")]
    date = datetime.fromtimestamp(max(stamps), UTC).strftime("%Y-%m-%d %H:%M UTC") if stamps else None
    return {"run_id": inputs.run.name, "date": date}


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(json_safe(value), indent=2, allow_nan=False), encoding="utf-8")


def write_evaluation(inputs: RunInputs, out: Path, codec: AggregateCodec | None = None,
                     heldout: dict[str, Any] | None = None, *, site_out: Path | None = None,
                     stores: dict[str, Path] | None = None, source: str | None = None) -> dict[str, Any]:
    """Every site's report and hand-off, then the central PI report built from the hand-off only.

    Parameters
    ----------
    inputs : RunInputs
        The run as :func:`evaluation.evaluate.load_run` read it (each site's rows are used only by its step).
    out : Path
        The central report folder (``metrics.json``, ``report.html``, ``figures/``, ``handoff/``).
    codec : AggregateCodec, optional
        How sites seal their aggregates; :class:`~evaluation.pooled.CkksCodec` (with the key holder's context)
        in a real study, :class:`~evaluation.pooled.PlainCodec` (default) in tests.
    heldout : dict, optional
        The federation's pooled held-out evaluation as the key holder read it (``metrics.json`` ``pooled_heldout``).
    site_out : Path, optional
        Where the site reports go (default :func:`default_site_out`); in a deployment each stays at its site.
    stores : dict, optional
        Site → study store (query listing, ``assessment/populations.csv``).
    source : str, optional
        The synthetic generator, when the cohort is synthetic (banner on both reports).

    Returns
    -------
    dict
        ``metrics``, ``report``, ``figures``, ``handoff`` (central) and ``sites``: site → its report paths.
    """
    codec = codec or PlainCodec()
    site_out = site_out or default_site_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    handoff = Path(tempfile.mkdtemp(prefix=f".{out.name}.handoff.", dir=out.parent))
    try:
        cox = pooled_dhi_hazard_ratio(inputs.sites, codec)  # before any output: a bad input fails cleanly
        sites = {}
        for site in inputs.sites:
            paths = write_site_evaluation(site, inputs, site_out / site.site, codec,
                                          store=(stores or {}).get(site.site), source=source)
            (handoff / site.site).mkdir()
            for name in (SUMMARY_FILE, AGGREGATE_FILE):
                shutil.copy2(paths["summary"].parent / name, handoff / site.site / name)
            sites[site.site] = paths
        _write_json(handoff / POOLED_COX_FILE, cox)
        _write_json(handoff / RUN_FILE, run_facts(inputs))
        if inputs.privacy:
            _write_json(handoff / PRIVACY_FILE, inputs.privacy)
        if (inputs.run / RUN_SUMMARY_FILE).exists():
            shutil.copy2(inputs.run / RUN_SUMMARY_FILE, handoff / RUN_SUMMARY_FILE)
        if heldout is not None:
            _write_json(handoff / HELDOUT_FILE, heldout)
        paths_central = write_central_evaluation(handoff, out, codec)
    finally:
        shutil.rmtree(handoff, ignore_errors=True)
    log.info("evaluation: %d site report(s) under %s, central report %s", len(sites), site_out, out)
    return {**paths_central, "sites": sites}
