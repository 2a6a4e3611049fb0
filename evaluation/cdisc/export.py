"""``fedresponse export-cdisc SRC --out DIR``: read site stores or a synthesized cohort, write the submission
package — into a temporary folder that replaces ``DIR`` only when everything is written::

    DIR/sdtm/   dm.xpt tu.xpt tr.xpt rs.xpt [cm.xpt ce.xpt]   define.xml (Define-XML 2.1, SDTMIG 3.4)
    DIR/adam/   adsl.xpt adrs.xpt adtte.xpt                    define.xml (Define-XML 2.1, ADaMIG 1.3)
                results.json (headline ORR / median PFS, evaluation.cdisc.results)
    DIR/adam/programs/   standalone regeneration programs + study.yaml/study.json (evaluation.cdisc.traceability)
    DIR/reviewers_guide.md
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from evaluation.atomic import replace_directory
from evaluation.cdisc.adam import make_adam, primary_evaluator
from evaluation.cdisc.define import define_xml, reviewers_guide
from evaluation.cdisc.labels import labels_for
from evaluation.cdisc.metadata import is_adam, sas_date_formats
from evaluation.cdisc.results import headline_results
from evaluation.cdisc.sdtm import SiteSource, make_sdtm
from evaluation.cdisc.traceability import write_programs
from evaluation.cdisc.xpt import Variable, write_xpt
from evaluation.exceptions import CdiscExportError
from evaluation.populations import stores_populations
from evaluation.protocol import StudyProtocol, load_protocol

log = logging.getLogger(__name__)

SDTM_ORDER = ("dm", "tu", "tr", "rs", "cm", "ce")
ADAM_ORDER = ("adsl", "adrs", "adtte")
SDTM_DIR, ADAM_DIR, PROGRAMS_DIR = "sdtm", "adam", "adam/programs"


def _site_source(folder: Path) -> SiteSource:
    if (folder / "store.json").exists():
        crf = pd.read_parquet(folder / "crf.parquet").astype(str).replace({"None": "", "nan": "", "NaT": ""})
        reads = pd.read_parquet(folder / "measurements.parquet")
        final = folder / "assessment" / "visits.csv"
        if final.exists():
            visits = pd.read_csv(final, keep_default_na=False, na_values=[""])
            return SiteSource(folder.name, crf, reads, visits)
    else:
        crf = pd.read_csv(folder / "crf.csv", dtype=str, keep_default_na=False)
        reads = pd.read_csv(folder / "reads.csv", keep_default_na=False, na_values=[""])
    return SiteSource(folder.name, crf, reads)


def read_sources(src: Path | Sequence[Path]) -> list[SiteSource]:
    """A site store (``store.json``), a cohort site folder (``crf.csv``), a whole cohort (its site folders),
    or a list of any of these."""
    if not isinstance(src, Path):
        return [site for one in src for site in read_sources(one)]
    if not src.is_dir():
        raise CdiscExportError(f"{src} is not a folder; pass a site store or a cohort from `fedresponse synth`")
    if (src / "store.json").exists() or (src / "crf.csv").exists():
        return [_site_source(src)]
    sites = sorted(p for p in src.iterdir() if p.is_dir() and ((p / "crf.csv").exists() or (p / "store.json").exists()))
    if not sites:
        raise CdiscExportError(f"{src} holds no site (no store.json or crf.csv in it or its sub-folders)")
    return [_site_source(p) for p in sites]


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    """XPT numbers are float64: cast integer columns, keep text as text."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_integer_dtype(out[column]) or pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].astype("float64")
    return out


def export_cdisc(src: Path | Sequence[Path], out: Path, labels: str = "en", encoding: str = "utf-8",
                 protocol: StudyProtocol | None = None, created: datetime | None = None) -> dict[str, Path]:
    """Write the submission package; return ``{dataset: path}`` plus ``define_sdtm``, ``define_adam`` (and
    ``define`` = the SDTM one), ``programs`` and ``guide``. ``created``: the export time written as the
    defines' ``CreationDateTime`` (default: now, UTC)."""
    protocol = protocol or load_protocol()
    created = created or datetime.now(UTC)
    dataset_labels, variable_labels = labels_for(labels)
    sdtm = make_sdtm(read_sources(src), protocol)
    populations = stores_populations(src)  # the sites' flags (evaluation.populations)
    adam = make_adam(sdtm, protocol, populations)
    # An events domain without records (no subject started new therapy, say) is not submitted.
    datasets = {name: _numeric(frame) for name, frame in {**sdtm, **adam}.items() if len(frame)}
    language = "zh" if labels == "zh" else "en"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for part, adam_part in ((SDTM_DIR, False), (ADAM_DIR, True)):
            chosen = {n: f for n, f in datasets.items() if is_adam(n) == adam_part}
            written: dict[str, list[Variable]] = {}
            for name, frame in chosen.items():
                formats = sas_date_formats(name, [str(c) for c in frame.columns])
                written[name] = write_xpt(tmp / part / f"{name}.xpt", frame, dataset_labels[name], variable_labels,
                                          encoding, formats, created.replace(tzinfo=None))
            define = define_xml(chosen, written, dataset_labels, protocol.study_id, language, created)
            (tmp / part / "define.xml").write_bytes(define)
        results = headline_results(datasets["adsl"], datasets["adrs"], datasets["adtte"])
        (tmp / ADAM_DIR / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        guide = reviewers_guide(datasets, protocol.study_id, primary_evaluator(sdtm["rs"]), encoding,
                                populations is not None)
        (tmp / "reviewers_guide.md").write_text(guide, encoding="utf-8")
        write_programs(tmp / PROGRAMS_DIR, protocol, populations)
        replace_directory(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("CDISC package written to %s: %s", out, ", ".join(f"{k} ({len(v)})" for k, v in datasets.items()))
    paths = {name: out / (ADAM_DIR if is_adam(name) else SDTM_DIR) / f"{name}.xpt" for name in datasets}
    defines = {"define_sdtm": out / SDTM_DIR / "define.xml", "define_adam": out / ADAM_DIR / "define.xml"}
    return paths | defines | {"define": defines["define_sdtm"], "programs": out / PROGRAMS_DIR,
                              "results": out / ADAM_DIR / "results.json", "guide": out / "reviewers_guide.md"}
