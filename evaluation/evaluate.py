"""Gather a finished run's evaluation inputs (site by site) and produce ``metrics.json`` + the report.

Where things are looked for (documented in ``docs/report.md``):

- ``RUN/**/predictions.csv`` — site-local predictions; rows are grouped into sites by USUBJID;
- ``RUN/**/subjects.csv`` and ``visits.csv`` — the site's response assessment (optional);
- ``RUN/**/attributions_full.csv`` (``USUBJID, MODE, FEATURE, ATTRIBUTION``) for the interpretability panels;
- ``RUN/cutoffs.json`` — ``{"early": c, "full": c}`` fixed on training data (else 0.5, said in the report);
- ``RUN/**/privacy_ledger.csv`` (:mod:`privacy.accounting` format; ε of each site's last round) and
  ``RUN/privacy.json`` — ``{"delta": d, "sites": {"S01": {"epsilon": e, "budget": b}}}`` (optional);
- ``RUN/**/populations.csv`` or ``ASSESSMENT/populations.csv`` — each site's analysis populations
  (:mod:`evaluation.populations`, written by ``fedresponse assess STORE``): statistics use the efficacy
  population (EFFFL; PFS: PFSFL), the ORR denominator is all enrolled (ITTFL), CONSORT is
  :func:`evaluation.populations.consort_counts` of these flags;
- ``--cohort COHORT`` (optional) — a cohort/site folder with ``reads.csv`` (reader agreement).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from evaluation.exceptions import EvaluationInputError
from evaluation.metrics import SiteData, read_predictions, site_of
from evaluation.populations import POPULATIONS_FILE, consort_counts, read_populations

log = logging.getLogger(__name__)

DEFAULT_CUTOFF = 0.5


@dataclass
class RunInputs:
    """Everything the report needs, per site where patient-level."""

    run: Path
    sites: list[SiteData]
    cutoffs: dict[str, float]
    cutoff_source: str
    privacy: dict[str, Any] | None = None
    consort: dict[str, dict[str, Any]] | None = None
    reads: dict[str, pd.DataFrame] = field(default_factory=dict)
    attributions: pd.DataFrame | None = None
    dhi_intervals: pd.DataFrame | None = None  # the sites' `radiomics dhi` rows, per lesion and interval


def _read_optional_csv(paths: list[Path]) -> pd.DataFrame | None:
    frames = [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else None


def _final_tables(folders: Sequence[Path], name: str) -> list[Path]:
    """``name`` files under ``folders``, leaving out each reader's own copy (``readers/<R>/``)."""
    return [p for f in folders for p in sorted(f.rglob(name)) if "readers" not in p.relative_to(f).parts]


def _cutoffs(run: Path) -> tuple[dict[str, float], str]:
    path = run / "cutoffs.json"
    if not path.exists():
        log.warning("no %s: using cut-off %.2f for both modes (say so in the report)", path, DEFAULT_CUTOFF)
        return {"early": DEFAULT_CUTOFF, "full": DEFAULT_CUTOFF}, f"default {DEFAULT_CUTOFF} (no cutoffs.json in run)"
    data = json.loads(path.read_text(encoding="utf-8"))
    # a run that trained one mode only (the federated early model) fixes no cut-off for the other
    missing = [mode for mode in ("early", "full") if mode not in data]
    try:
        cutoffs = {mode: float(data.get(mode, DEFAULT_CUTOFF)) for mode in ("early", "full")}
    except (TypeError, ValueError) as exc:
        raise EvaluationInputError(f"{path} must hold numbers for 'early' and 'full', but was {data!r}") from exc
    if len(missing) == 2:
        raise EvaluationInputError(f"{path} must hold numbers for 'early' and 'full', but was {data!r}")
    note = f"; {missing[0]}: default {DEFAULT_CUTOFF}" if missing else ""
    return cutoffs, f"training data ({path.name}){note}"


def _privacy(run: Path) -> dict[str, Any] | None:
    """ε spent per site: the last round of ``privacy_ledger.csv`` (privacy.accounting), budgets from privacy.json."""
    path = run / "privacy.json"
    given = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    ledgers = sorted(run.rglob("privacy_ledger.csv"))
    if not ledgers and not given:
        return None
    sites: dict[str, dict[str, float]] = {k: dict(v) for k, v in given.get("sites", {}).items()}
    delta = given.get("delta")
    for ledger in ledgers:
        rows = pd.read_csv(ledger)
        for site, site_rows in rows.sort_values("round").groupby("site"):
            last = site_rows.iloc[-1]
            sites.setdefault(str(site), {})["epsilon"] = float(last["epsilon"])
            sites[str(site)]["rounds"] = int(last["round"])
            delta = float(last["delta"])
    return {"delta": delta, "sites": sites, "source": [str(p.relative_to(run)) for p in ledgers] or ["privacy.json"]}


def load_run(run: Path, cohort: Path | None = None, assessments: Sequence[Path] = (),
             epsilon_budget: float | None = None, dhi_tables: Sequence[Path] = ()) -> RunInputs:
    """Read a run directory (and optionally its cohort and the sites' assessment folders) into :class:`RunInputs`.

    ``assessments`` are output folders of ``fedresponse assess`` (``visits.csv``, ``subjects.csv``); they are
    used when the run directory itself holds no response tables. ``epsilon_budget`` is the per-site ε budget
    of the run (``epsilon-budget`` of the Flower run config) for sites ``privacy.json`` gives none.
    ``dhi_tables`` are the sites' ``fedresponse radiomics dhi`` outputs, used when predictions carry no DHI.
    """
    if not run.is_dir():
        raise EvaluationInputError(f"run directory {run} does not exist; pass the folder `fedresponse train` wrote")
    pred_paths = sorted(run.rglob("predictions.csv"))
    if not pred_paths:
        raise EvaluationInputError(f"no predictions.csv under {run}; each site writes one during training/inference")
    predictions = pd.concat([read_predictions(p) for p in pred_paths], ignore_index=True)
    dhi_read = {p: pd.read_csv(p) for p in dhi_tables}  # each table read once: per patient and per interval
    if "DHI" not in predictions.columns and dhi_read:
        predictions = predictions.merge(patient_dhi(dhi_read), on="USUBJID", how="left")
    dhi_intervals = pd.concat(dhi_read.values(), ignore_index=True) if dhi_read else None
    folders = [run, *assessments]
    subjects = _read_optional_csv(_final_tables(folders, "subjects.csv"))
    visits = _read_optional_csv(_final_tables(folders, "visits.csv"))
    populations = _populations(folders)
    sites = []
    for site, rows in predictions.groupby("SITEID", sort=True):
        sites.append(SiteData(
            site=str(site),
            predictions=rows.reset_index(drop=True),
            subjects=_of_site(subjects, str(site)),  # every assessed subject: ORR over all enrolled needs them
            visits=_of_site(visits, str(site)),
            populations=_of_site(populations, str(site)),
        ))
    cutoffs, source = _cutoffs(run)
    privacy = _privacy(run)
    if privacy is not None and epsilon_budget is not None:
        for values in privacy["sites"].values():
            values.setdefault("budget", float(epsilon_budget))
    attributions = _read_optional_csv(sorted(run.rglob("attributions_full.csv")))
    inputs = RunInputs(run, sites, cutoffs, source, privacy=privacy, attributions=attributions,
                       dhi_intervals=dhi_intervals)
    if populations is not None:
        inputs.consort = {site: consort_counts(rows) for site, rows in populations.groupby("SITEID", sort=True)}
    if cohort is not None:
        _add_cohort(inputs, cohort)
    return inputs


def _of_site(frame: pd.DataFrame | None, site: str) -> pd.DataFrame | None:
    if frame is None:
        return None
    return frame[frame["USUBJID"].astype(str).map(site_of) == site].reset_index(drop=True)


def _populations(folders: Sequence[Path]) -> pd.DataFrame | None:
    """Every site's ``populations.csv`` under ``folders`` (one per site; the last found wins, with a warning)."""
    paths = _final_tables(folders, POPULATIONS_FILE)
    if not paths:
        log.warning("no %s under %s: statistics use every predicted subject and CONSORT is not drawn; run "
                    "`fedresponse assess STORE` and pass --assessment STORE/assessment", POPULATIONS_FILE,
                    ", ".join(str(f) for f in folders))
        return None
    frame = pd.concat([read_populations(p) for p in paths], ignore_index=True)
    duplicated = frame["USUBJID"].duplicated(keep="last")
    if duplicated.any():
        log.warning("%d subject(s) appear in more than one populations.csv; the last one read is used",
                    int(duplicated.sum()))
    return frame[~duplicated].reset_index(drop=True)


def patient_dhi(tables: Sequence[Path] | Mapping[Path, pd.DataFrame]) -> pd.DataFrame:
    """One DHI per patient (``USUBJID, DHI``): the mean over lesions and intervals of the rows with a value.

    Reads ``radiomics dhi`` tables (``USUBJID, LESIONID, FROM, TO, DAYS, ..., DHI, STATUS``; docs/dhi.md), or
    takes them already read (path → table).
    """
    read = tables if isinstance(tables, Mapping) else {path: pd.read_csv(path) for path in tables}
    frames = []
    for path, frame in read.items():
        if not {"USUBJID", "DHI"} <= set(frame.columns):
            raise EvaluationInputError(f"{path} lacks USUBJID/DHI columns; pass the output of `radiomics dhi`")
        frames.append(frame[["USUBJID", "DHI"]])
    table = pd.concat(frames, ignore_index=True)
    table["DHI"] = pd.to_numeric(table["DHI"], errors="coerce")
    return table.dropna().groupby("USUBJID", as_index=False)["DHI"].mean()


def _site_dirs(cohort: Path) -> list[Path]:
    if (cohort / "crf.csv").exists():
        return [cohort]
    return sorted(p for p in cohort.iterdir() if p.is_dir() and (p / "crf.csv").exists())


def _add_cohort(inputs: RunInputs, cohort: Path) -> None:
    """Reader tables (``reads.csv``) of the cohort's sites; the CONSORT flow comes from the populations."""
    site_dirs = _site_dirs(cohort)
    if not site_dirs:
        raise EvaluationInputError(f"{cohort} holds no crf.csv (neither itself nor in site folders)")
    for folder in site_dirs:
        if (folder / "reads.csv").exists():
            inputs.reads[folder.name] = pd.read_csv(folder / "reads.csv", keep_default_na=False, na_values=[""])


def reader_sld(reads: pd.DataFrame, visit: str = "T0") -> pd.DataFrame:
    """Per subject and reader, the SLD (mm) of target lesions at ``visit``: wide, one column per reader."""
    rows = reads[(reads["VISIT"] == visit) & (reads["CATEGORY"] == "TARGET")]
    sld = rows.groupby(["USUBJID", "READER"])["DIAM_MM"].sum().unstack("READER")
    return sld.dropna()
