"""The edit-check engine: a CRF table and a data validation plan → a query listing and eligibility.

Query listing columns: ``QUERY_ID, USUBJID, FIELD, VALUE, RULE_ID, SEVERITY, MESSAGE``. Query ids are
``Q00001, …`` in (subject, rule order, field) order, so the same CRF always gives the same listing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date

import pandas as pd

from evaluation.protocol import StudyProtocol
from fl_client.crf.dvp import Condition, DataValidationPlan, Rule
from fl_client.ingest.visits import study_day

QUERY_COLUMNS = ["QUERY_ID", "USUBJID", "FIELD", "VALUE", "RULE_ID", "SEVERITY", "MESSAGE"]
ELIGIBILITY_COLUMNS = ["USUBJID", "ELIGIBLE", "REASONS"]
#: (field, value seen, message) of one failed check on one row
Failure = tuple[str, str, str]


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _code(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value.upper()
    return str(int(number)) if number.is_integer() else value


def _iso(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        return None


def _applies(condition: Condition | None, row: dict[str, str]) -> bool:
    if condition is None:
        return True
    value = _code(row.get(condition.field, ""))
    if condition.in_ is not None:
        return value in {_code(str(v)) for v in condition.in_}
    return value not in {_code(str(v)) for v in condition.not_in or []}


def _required(rule: Rule, row: dict[str, str], _: StudyProtocol) -> list[Failure]:
    return [(f, "", rule.message or f"{f} is missing") for f in rule.fields or [] if not row.get(f, "")]


def _range(rule: Rule, row: dict[str, str], _: StudyProtocol) -> list[Failure]:
    field = str(rule.field)
    value = row.get(field, "")
    if not value:
        return []
    try:
        number = float(value)
    except ValueError:
        return [(field, value, f"{field} must be a number, but was {value!r}")]
    if math.isnan(number) or (rule.min is not None and number < rule.min) or (
            rule.max is not None and number > rule.max):
        bounds = f"[{'' if rule.min is None else f'{rule.min:g}'}, {'' if rule.max is None else f'{rule.max:g}'}]"
        kind = "impossible" if rule.severity == "HARD" else "unlikely"
        return [(field, value, rule.message or f"{field} = {value} is {kind}: expected within {bounds}")]
    return []


def _codes(rule: Rule, row: dict[str, str], _: StudyProtocol) -> list[Failure]:
    field = str(rule.field)
    value = row.get(field, "")
    allowed = [_code(str(v)) for v in rule.values or []]
    if value and _code(value) not in allowed:
        return [(field, value, rule.message or f"{field} = {value!r} is not a valid code; expected one of {allowed}")]
    return []


def _date(rule: Rule, row: dict[str, str], _: StudyProtocol) -> list[Failure]:
    return [(f, row[f], f"{f} = {row[f]!r} is not a valid date (YYYY-MM-DD)")
            for f in rule.fields or [] if row.get(f, "") and _iso(row[f]) is None]


def _date_order(rule: Rule, row: dict[str, str], _: StudyProtocol) -> list[Failure]:
    first, second = _iso(row.get(str(rule.before), "")), _iso(row.get(str(rule.after), ""))
    if first is None or second is None:
        return []
    bad = second < first if rule.allow_equal else second <= first
    relation = "on or after" if rule.allow_equal else "after"
    if bad:
        target = rule.field or str(rule.after)
        return [(target, row.get(target, ""),
                 rule.message or f"{rule.after} ({second}) must be {relation} {rule.before} ({first})")]
    return []


def _visit_window(rule: Rule, row: dict[str, str], protocol: StudyProtocol) -> list[Failure]:
    field, visit = str(rule.field), str(rule.visit)
    when, reference = _iso(row.get(field, "")), _iso(row.get(str(rule.reference), ""))
    if when is None or reference is None:
        return []
    ady = study_day(when, reference)
    low, high = protocol.timepoints[visit].window
    if not low <= ady <= high:
        return [(field, row[field], rule.message or f"{field} is study day {ady}, outside the {visit} window "
                                                    f"[{low}, {high}] (protocol, relative to {rule.reference})")]
    return []


def _identifier(rule: Rule, row: dict[str, str], protocol: StudyProtocol) -> list[Failure]:
    subjid = row.get("SUBJID", "")
    expected = f"{protocol.study_id}-{row.get('SITEID', '')}-{subjid.zfill(4) if subjid.isdigit() else subjid}"
    value = row.get("USUBJID", "")
    if value != expected:
        return [("USUBJID", value, f"USUBJID {value!r} does not match STUDYID-SITEID-SUBJID = {expected!r}")]
    return []


CHECKS: dict[str, Callable[[Rule, dict[str, str], StudyProtocol], list[Failure]]] = {
    "required": _required, "range": _range, "codes": _codes, "date": _date, "date_order": _date_order,
    "visit_window": _visit_window, "identifier": _identifier,
}


def _rows(crf: pd.DataFrame) -> list[dict[str, str]]:
    return [{str(k): _text(v) for k, v in record.items()} for record in crf.to_dict(orient="records")]


def run_checks(crf: pd.DataFrame, plan: DataValidationPlan, protocol: StudyProtocol) -> pd.DataFrame:
    """Apply every edit check and eligibility criterion to every CRF row; returns the query listing.

    Eligibility criteria raise SOFT queries (the site confirms the protocol deviation).
    """
    records: list[dict[str, str]] = []
    rules = [*plan.rules, *(r.model_copy(update={"severity": "SOFT"}) for r in plan.eligibility)]
    for row in _rows(crf):
        for rule in rules:
            if not _applies(rule.when, row):
                continue
            for field, value, message in CHECKS[rule.type](rule, row, protocol):
                records.append({"USUBJID": row.get("USUBJID", ""), "FIELD": field, "VALUE": value,
                                "RULE_ID": rule.id, "SEVERITY": rule.severity, "MESSAGE": message})
    queries = pd.DataFrame(records, columns=QUERY_COLUMNS[1:])
    queries.insert(0, "QUERY_ID", [f"Q{i:05d}" for i in range(1, len(queries) + 1)])
    return queries


def eligibility(crf: pd.DataFrame, plan: DataValidationPlan, protocol: StudyProtocol) -> pd.DataFrame:
    """Per subject: eligible when every eligibility criterion holds and no HARD edit check fails.

    Returns a table with :data:`ELIGIBILITY_COLUMNS`; ``REASONS`` joins the failed criteria with ``; ``.
    """
    out: list[dict[str, object]] = []
    for row in _rows(crf):
        reasons: list[str] = []
        for rule in plan.eligibility:
            if _applies(rule.when, row):
                reasons += [f"{rule.id}: {message}" for _, _, message in CHECKS[rule.type](rule, row, protocol)]
        for rule in plan.rules:
            if rule.severity == "HARD" and _applies(rule.when, row):
                failures = CHECKS[rule.type](rule, row, protocol)
                reasons += [f"{rule.id}: unresolved hard query on {field}" for field, _, _ in failures]
        out.append({"USUBJID": row.get("USUBJID", ""), "ELIGIBLE": not reasons, "REASONS": "; ".join(reasons)})
    return pd.DataFrame(out, columns=ELIGIBILITY_COLUMNS)
