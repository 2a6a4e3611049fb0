"""The data validation plan (``configs/dvp.yaml``) as typed configuration.

A plan is data: a list of edit checks (``rules``) that raise queries, and the protocol's inclusion and
exclusion criteria (``eligibility``) that decide eligibility (and raise a SOFT query when unmet, so the
site confirms the deviation). Rule types:

``required``      every field in ``fields`` is present (``when`` may restrict it to some subjects)
``range``         ``min <= value <= max`` (inclusive; either bound optional); non-numbers are queried
``codes``         value in ``values`` (integers compared as integers: ``1`` and ``1.0`` are the same code)
``date``          every field in ``fields`` is empty or an ISO date ``YYYY-MM-DD``
``date_order``    ``before`` ≤ ``after`` (``<`` when ``allow_equal`` is false); skipped if either is empty;
                  the query is raised on ``field`` when given, else on ``after``
``visit_window``  study day of ``field`` relative to ``reference`` lies in the protocol window of ``visit``
``identifier``    USUBJID = STUDYID-SITEID-SUBJID, with the study id of configs/study.yaml

Any rule may carry ``when: {field: F, in: [...]}`` (or ``not_in``): it applies only to rows meeting it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fl_client.exceptions import DvpError

RuleType = Literal["required", "range", "codes", "date", "date_order", "visit_window", "identifier"]


class Condition(BaseModel):
    """Restricts a rule to the rows whose ``field`` is (or is not) one of some values."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)
    field: str
    in_: list[str | int] | None = Field(default=None, alias="in")
    not_in: list[str | int] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Condition:
        if (self.in_ is None) == (self.not_in is None):
            raise ValueError(f"condition on {self.field!r} needs exactly one of 'in' or 'not_in'")
        return self


class Rule(BaseModel):
    """One edit check or eligibility criterion."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[A-Z][A-Z0-9_-]{1,31}$")
    type: RuleType
    severity: Literal["HARD", "SOFT"] = "HARD"
    field: str | None = None
    fields: list[str] | None = None
    min: float | None = None
    max: float | None = None
    values: list[str | int] | None = None
    before: str | None = None
    after: str | None = None
    allow_equal: bool = True
    visit: str | None = None
    reference: str | None = None
    when: Condition | None = None
    message: str = ""

    @model_validator(mode="after")
    def _needs(self) -> Rule:
        needs = {"required": ("fields",), "range": ("field",), "codes": ("field", "values"), "date": ("fields",),
                 "date_order": ("before", "after"), "visit_window": ("field", "visit", "reference"),
                 "identifier": ()}[self.type]
        missing = [name for name in needs if getattr(self, name) in (None, [])]
        if missing:
            raise ValueError(f"rule {self.id} of type {self.type} needs {missing}")
        if self.type == "range" and self.min is None and self.max is None:
            raise ValueError(f"range rule {self.id} needs min or max")
        return self

    @property
    def targets(self) -> list[str]:
        """The fields a query of this rule is raised on."""
        if self.fields:
            return list(self.fields)
        if self.type == "date_order":
            return [self.field or str(self.after)]
        return [self.field or "USUBJID"]


class DataValidationPlan(BaseModel):
    """Typed view of ``configs/dvp.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = 1
    rules: list[Rule]
    eligibility: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> DataValidationPlan:
        ids = [r.id for r in [*self.rules, *self.eligibility]]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"rule ids must be unique; repeated: {duplicates}")
        return self


def load_dvp(path: Path | None = None) -> DataValidationPlan:
    """Read and validate a plan (default ``configs/dvp.yaml``); :class:`DvpError` says what is wrong."""
    if path is None:
        from evaluation.protocol import configs_dir

        path = configs_dir() / "dvp.yaml"
    try:
        with path.open(encoding="utf-8") as handle:
            return DataValidationPlan.model_validate(yaml.safe_load(handle))
    except (OSError, yaml.YAMLError) as exc:
        raise DvpError(f"cannot read the data validation plan {path}: {exc}") from exc
    except ValidationError as exc:
        raise DvpError(f"invalid data validation plan {path}: {exc}") from exc
