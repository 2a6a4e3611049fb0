"""``fedresponse export-cdisc SRC --out DIR``: read a site store or a synthesized cohort, write SDTM and ADaM
as XPT v5, define.xml, the reviewer's guide and the derivation programs — into a temporary folder that
replaces ``DIR`` only when everything is written.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from evaluation.atomic import replace_directory
from evaluation.cdisc.adam import make_adam, primary_evaluator
from evaluation.cdisc.define import define_xml, reviewers_guide
from evaluation.cdisc.labels import labels_for
from evaluation.cdisc.sdtm import SiteSource, make_sdtm
from evaluation.cdisc.xpt import Variable, write_xpt
from evaluation.exceptions import CdiscExportError
from evaluation.populations import stores_populations
from evaluation.protocol import StudyProtocol, load_protocol

log = logging.getLogger(__name__)

SDTM_ORDER = ("dm", "tu", "tr", "rs", "cm", "ce")
ADAM_ORDER = ("adsl", "adrs", "adtte")


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
                 protocol: StudyProtocol | None = None) -> dict[str, Path]:
    """Write the submission package; return ``{dataset: path}`` plus ``define`` and ``guide``."""
    protocol = protocol or load_protocol()
    dataset_labels, variable_labels = labels_for(labels)
    sdtm = make_sdtm(read_sources(src), protocol)
    adam = make_adam(sdtm, protocol, stores_populations(src))  # the sites' flags (evaluation.populations)
    # An events domain without records (no subject started new therapy, say) is not submitted.
    datasets = {name: _numeric(frame) for name, frame in {**sdtm, **adam}.items() if len(frame)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        written: dict[str, list[Variable]] = {}
        for name, frame in datasets.items():
            written[name] = write_xpt(tmp / f"{name}.xpt", frame, dataset_labels[name], variable_labels, encoding)
        language = "zh" if labels == "zh" else "en"
        (tmp / "define.xml").write_bytes(define_xml(datasets, written, dataset_labels, protocol.study_id, language))
        guide = reviewers_guide(datasets, protocol.study_id, primary_evaluator(sdtm["rs"]), encoding)
        (tmp / "reviewers_guide.md").write_text(guide, encoding="utf-8")
        programs = tmp / "programs"
        programs.mkdir()
        for module in ("sdtm.py", "adam.py", "pfs.py"):
            shutil.copy2(Path(__file__).with_name(module), programs / module)
        replace_directory(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("CDISC package written to %s: %s", out, ", ".join(f"{k} ({len(v)})" for k, v in datasets.items()))
    paths = {name: out / f"{name}.xpt" for name in datasets}
    return paths | {"define": out / "define.xml", "guide": out / "reviewers_guide.md"}


