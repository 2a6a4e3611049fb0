"""The analysis populations of the study: one definition (``configs/study.yaml`` ``populations``), derived once
per site by ``fedresponse assess STORE`` into ``STORE/assessment/populations.csv``.

Every consumer reads these flags — training (which patients are featurized), the site statistics and the
pooled aggregates, the report's CONSORT flow, ADSL — and nothing recomputes its own set.

Rules (one row per enrolled subject; ``Y``/``N`` flags, each population a subset of the one before it, except
EARLYFL):

- ``ITTFL`` (enrolled): every subject of the site's enrolment (the store's ``subjects.parquet``, or the CRF).
- ``ELIGFL`` (eligible): ``eligibility.parquet`` says eligible — the data validation plan's inclusion and
  exclusion criteria hold, no HARD edit check is unresolved, no imaging ``REJECT`` at a protocol visit —
  **except** that an unresolved HARD query on a field of an endpoint (``populations.endpoint_fields``, e.g.
  a death date before the first dose touches ``PFSFL``) removes the subject from that endpoint only.
- ``EARLYFL`` (early-mode population): eligible — or ineligible *only* for reasons about a visit after the
  early ones (an imaging finding at T2 such as ``VISIT_MISSING``, a HARD query on ``T2_DATE``) — a CT study at
  every ``populations.early_visits`` visit (T0, T1), and a dynamic-iRECIST reference label. Early mode
  predicts response as registered from T0 + T1, so its population must not require a later scan (that would
  select on the future); ``EFFFL ⊆ EARLYFL`` (and EARLYFL is not nested in ELIGFL).
- ``EFFFL`` (efficacy / full-mode model-evaluation population): eligible, a CT study at every
  ``populations.efficacy_visits`` visit (T0, T1, T2), and a dynamic-iRECIST reference label. The CONSORT
  flow's "analysed" count.
- ``PFSFL`` (PFS analysis): in ``EFFFL`` and no unresolved HARD query on a PFS field.

``EXCLREAS`` says why a subject is not in ``EFFFL``/``PFSFL`` (short categories joined with ``"; "``, the
primary one first; the full text stays in ``eligibility.parquet`` / ``queries.parquet``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from evaluation.protocol import Populations

log = logging.getLogger(__name__)

POPULATION_COLUMNS: tuple[str, ...] = ("USUBJID", "SITEID", "ITTFL", "ELIGFL", "EARLYFL", "EFFFL", "PFSFL",
                                       "EXCLREAS")
FLAGS: tuple[str, ...] = ("ITTFL", "ELIGFL", "EARLYFL", "EFFFL", "PFSFL")
#: Flags a file written before they existed may lack (read as the flag named here, the older, narrower set).
_LATER_FLAGS: dict[str, str] = {"EARLYFL": "EFFFL"}
POPULATIONS_FILE = "populations.csv"
NOT_ELIGIBLE_PREFIX = "not eligible: "
_HARD_QUERY = re.compile(r"^(?P<rule>[A-Z0-9-]+): unresolved hard query on (?P<field>[A-Z0-9_]+)$")
_CRITERION = re.compile(r"^(?P<rule>(INC|EXC)-[A-Z0-9-]+): (?P<message>.+)$")


def _category(reason: str) -> tuple[int, str]:
    """(rank, short category) of one ``eligibility.parquet`` reason; criteria rank before data and imaging."""
    criterion = _CRITERION.match(reason)
    if criterion:
        return 0, criterion["message"]
    if _HARD_QUERY.match(reason):
        return 2, "unresolved hard query"
    if reason.startswith("imaging "):
        check = reason.split(" ")[1]
        return 1, f"imaging {check}"
    return 3, reason


def _ineligibility(reasons: Iterable[str]) -> list[str]:
    """Distinct short categories, primary (lowest rank, first seen) first."""
    ranked = sorted({_category(r) for r in reasons}, key=lambda x: x[0])
    out: list[str] = []
    for _, text in ranked:
        if text not in out:
            out.append(text)
    return out


def _endpoint_queries(queries: pd.DataFrame | None, rules: Populations) -> dict[str, dict[str, list[str]]]:
    """USUBJID → endpoint flag → ``"RULE on FIELD"`` of its unresolved HARD queries on that endpoint's fields."""
    out: dict[str, dict[str, list[str]]] = {}
    if queries is None or queries.empty:
        return out
    hard = queries[queries["SEVERITY"].astype(str) == "HARD"]
    for flag, fields in rules.endpoint_fields.items():
        for row in hard[hard["FIELD"].isin(fields)].itertuples(index=False):
            out.setdefault(str(row.USUBJID), {}).setdefault(flag, []).append(f"{row.RULE_ID} on {row.FIELD}")
    return out


_IMAGING_AT = re.compile(r"^imaging [A-Z0-9_]+ at (?P<visit>[A-Z0-9]+)\b")


def _after_early(reason: str, later: Sequence[str]) -> bool:
    """Whether an ineligibility reason concerns only a visit after the early ones (``later``, e.g. T2): an
    imaging finding at it (``imaging VISIT_MISSING at T2: ...``) or a HARD query on its date (``T2_DATE``).
    Such a reason removes the subject from ELIGFL/EFFFL but not from EARLYFL: early mode must not select on
    what happens after T1."""
    imaging, query = _IMAGING_AT.match(reason), _HARD_QUERY.match(reason)
    if imaging:
        return imaging["visit"] in later
    return bool(query and any(query["field"] == f"{visit}_DATE" for visit in later))


def _endpoint_reason(reason: str, endpoint_fields: set[str]) -> bool:
    match = _HARD_QUERY.match(reason)
    return bool(match and match["field"] in endpoint_fields)


def derive_populations(
    site: str,
    enrolled: Iterable[str],
    eligibility: pd.DataFrame,
    queries: pd.DataFrame | None,
    scans: pd.DataFrame,
    reference: pd.DataFrame | None,
    rules: Populations,
) -> pd.DataFrame:
    """The population flags of one site (columns :data:`POPULATION_COLUMNS`, one row per enrolled subject).

    Parameters
    ----------
    site : str
        SITEID.
    enrolled : iterable of str
        USUBJIDs of every enrolled subject (ITT).
    eligibility : DataFrame
        ``USUBJID, ELIGIBLE, REASONS`` (``eligibility.parquet``, reasons ``"; "``-joined).
    queries : DataFrame, optional
        ``USUBJID, FIELD, RULE_ID, SEVERITY`` (``queries.parquet``).
    scans : DataFrame
        ``USUBJID, VISIT`` of the protocol CT studies found (``visits.parquet``).
    reference : DataFrame, optional
        ``USUBJID, RESPONDER`` (``reference.csv``); without it nobody has a reference label.
    rules : Populations
        ``configs/study.yaml`` ``populations``.
    """
    endpoint_fields = {f for fields in rules.endpoint_fields.values() for f in fields}
    later = tuple(v for v in rules.efficacy_visits if v not in rules.early_visits)
    by_endpoint = _endpoint_queries(queries, rules)
    reasons = {str(r.USUBJID): [x for x in str(r.REASONS or "").split("; ") if x]
               for r in eligibility.itertuples(index=False)}
    seen = scans.groupby("USUBJID")["VISIT"].agg(set).to_dict() if len(scans) else {}
    labelled = set() if reference is None else set(
        reference.loc[reference["RESPONDER"].astype(str).isin(["Y", "N"]), "USUBJID"].astype(str))
    rows = []
    for subject in sorted(dict.fromkeys(str(s) for s in enrolled)):
        own = reasons.get(subject, ["no eligibility record (no CRF row)"])
        blocking = [r for r in own if not _endpoint_reason(r, endpoint_fields)]
        why = [NOT_ELIGIBLE_PREFIX + c for c in _ineligibility(blocking)]
        eligible = not blocking
        scanned = seen.get(subject, set())
        unlabelled = rules.efficacy_needs_reference and subject not in labelled
        early_ok = eligible or all(_after_early(r, later) for r in blocking)
        early = early_ok and all(v in scanned for v in rules.early_visits) and not unlabelled
        missing = [v for v in rules.efficacy_visits if v not in scanned]
        if eligible and missing:
            why.append(f"no protocol CT at {', '.join(missing)}")
        if eligible and unlabelled:
            why.append("no reference label")
        efficacy = eligible and not why
        pfs_queries = by_endpoint.get(subject, {}).get("PFSFL", [])
        if efficacy and pfs_queries:
            why.append(f"PFS: open hard query ({', '.join(sorted(set(pfs_queries)))})")
        rows.append({"USUBJID": subject, "SITEID": site, "ITTFL": "Y", "ELIGFL": _yn(eligible),
                     "EARLYFL": _yn(early), "EFFFL": _yn(efficacy), "PFSFL": _yn(efficacy and not pfs_queries),
                     "EXCLREAS": "; ".join(why)})
    return pd.DataFrame(rows, columns=list(POPULATION_COLUMNS))


def _yn(value: bool) -> str:
    return "Y" if value else "N"


def read_populations(folder_or_csv: Path | str) -> pd.DataFrame:
    """Read ``populations.csv`` (a path to it, an assessment folder, or a site store holding ``assessment/``).

    Raises
    ------
    FileNotFoundError
        No populations file there: run ``fedresponse assess STORE``.
    ValueError
        A column is missing or a flag is not ``Y``/``N``.
    """
    path = Path(folder_or_csv)
    if path.is_dir():
        candidates = [path / POPULATIONS_FILE, path / "assessment" / POPULATIONS_FILE]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            raise FileNotFoundError(f"no {POPULATIONS_FILE} in {path} (or its assessment/); run "
                                    "`fedresponse assess STORE`, which derives the analysis populations")
        path = found
    elif not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run `fedresponse assess STORE` to derive the populations")
    frame = with_later_flags(pd.read_csv(path, dtype=str, keep_default_na=False), path)
    missing = [c for c in POPULATION_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing}; populations.csv needs {list(POPULATION_COLUMNS)}")
    for flag in FLAGS:
        bad = sorted(set(frame[flag]) - {"Y", "N"})
        if bad:
            raise ValueError(f"{path}: {flag} must be Y or N, but held {bad}; re-run `fedresponse assess STORE`")
    return frame


def with_later_flags(frame: pd.DataFrame, source: object = "populations table") -> pd.DataFrame:
    """``frame`` with every flag added since it was written (``EARLYFL``) read as the older, narrower flag it
    refines (``EFFFL``), logged with ``source``; unchanged when it has them. Every reader of population flags
    (``read_populations``, ADSL, the featurizer) goes through this one rule."""
    for flag, older in _LATER_FLAGS.items():
        if flag not in frame.columns and older in frame.columns:
            log.warning("%s predates %s: read as %s (the narrower set); re-run `fedresponse assess STORE` to derive "
                        "it", source, flag, older)
            frame = frame.copy()
            frame.insert(list(frame.columns).index(older), flag, frame[older])
    return frame


def members(pop: pd.DataFrame, flag: str) -> set[str]:
    """USUBJIDs with ``flag == "Y"``."""
    return set(pop.loc[pop[flag] == "Y", "USUBJID"].astype(str))


def consort_counts(pop: pd.DataFrame) -> dict[str, Any]:
    """The CONSORT flow of one site (or of several, concatenated) from the population flags.

    Returns
    -------
    dict
        Stable keys: ``enrolled`` (ITTFL), ``excluded`` ({primary ineligibility reason: n}, summing to
        enrolled − eligible), ``eligible`` (ELIGFL), ``analysed`` (EFFFL: the model-evaluation population),
        ``by_reason_not_analysed`` ({primary reason: n} of the eligible subjects not analysed, summing to
        eligible − analysed), ``pfs_analysed`` (PFSFL) and ``screened`` (= ``enrolled``, the earlier name).
        The flow counts EFFFL; the early-mode population EARLYFL (⊇ EFFFL) is read from the flags directly.
    """
    enrolled = pop[pop["ITTFL"] == "Y"]
    excluded: dict[str, int] = {}
    not_analysed: dict[str, int] = {}
    for row in enrolled.itertuples(index=False):
        primary = str(row.EXCLREAS).split("; ")[0]
        if row.ELIGFL != "Y":
            key = primary.removeprefix(NOT_ELIGIBLE_PREFIX) or "not eligible"
            excluded[key] = excluded.get(key, 0) + 1
        elif row.EFFFL != "Y":
            not_analysed[primary or "not analysed"] = not_analysed.get(primary or "not analysed", 0) + 1
    n = len(enrolled)
    return {"enrolled": n, "screened": n, "excluded": dict(sorted(excluded.items())),
            "eligible": int((enrolled["ELIGFL"] == "Y").sum()), "analysed": int((enrolled["EFFFL"] == "Y").sum()),
            "by_reason_not_analysed": dict(sorted(not_analysed.items())),
            "pfs_analysed": int((enrolled["PFSFL"] == "Y").sum())}


def stores_populations(src: Path | Sequence[Path]) -> pd.DataFrame | None:
    """Every site store's ``assessment/populations.csv`` under ``src`` (a store, a folder of stores, or a list),
    concatenated; None when no store there has one (e.g. a synthesized cohort, which has no stores)."""
    if not isinstance(src, Path):
        frames = [f for one in src if (f := stores_populations(one)) is not None]
        return pd.concat(frames, ignore_index=True) if frames else None
    stores = [src] if (src / "store.json").exists() else sorted(
        p for p in src.iterdir() if p.is_dir() and (p / "store.json").exists()) if src.is_dir() else []
    found = [read_populations(s / "assessment" / POPULATIONS_FILE) for s in stores
             if (s / "assessment" / POPULATIONS_FILE).exists()]
    return pd.concat(found, ignore_index=True) if found else None
