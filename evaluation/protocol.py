"""The study protocol as typed configuration (``configs/study.yaml``).

One home for the numbers the protocol fixes: the T0/T1/T2 schedule and its windows, imaging
requirements, and the RECIST 1.1 / iRECIST thresholds. Study days (``ADY``) follow CDISC: day 1 is
the first dose, there is no day 0.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Timepoint(_Frozen):
    visitnum: int
    cycles_completed: int = Field(ge=0)
    target_day: int
    window: tuple[int, int]

    @model_validator(mode="after")
    def _window_contains_target(self) -> Timepoint:
        low, high = self.window
        if not low <= self.target_day <= high:
            raise ValueError(f"target_day {self.target_day} lies outside its window {self.window}")
        if 0 in (low, high) or (low < 0 < high):
            raise ValueError(f"window {self.window} spans study day 0, which does not exist (CDISC ADY)")
        return self


class FollowUp(_Frozen):
    interval_days: int = Field(gt=0)
    window_days: int = Field(ge=0)


class Imaging(_Frozen):
    modality: str
    max_slice_thickness_mm: float = Field(gt=0)
    max_spacing_irregularity_mm: float = Field(ge=0)
    air_hu_expected: float
    air_hu_tolerance: float = Field(gt=0)
    lesion_margin_voxels: int = Field(ge=0)


class Recist(_Frozen):
    measurable_min_mm: float
    node_measurable_min_mm: float
    node_normal_below_mm: float
    max_targets: int
    max_targets_per_organ: int
    pr_threshold_pct: float
    pd_threshold_pct: float
    pd_min_absolute_mm: float
    sd_min_days: int
    confirm_min_days: int


class Irecist(_Frozen):
    confirm_window_days: tuple[int, int]
    further_increase_mm: float


class Agreement(_Frozen):
    """Reader-agreement requirement: ICC(2,1) of the two readers' SLD at least ``icc_min``."""

    icc_min: float = Field(gt=0, le=1)


class DhiComponent(_Frozen):
    """One pre-specified DHI component: ``weight · (x − mean) / sd`` (docs/dhi.md)."""

    weight: float
    mean: float
    sd: float = Field(gt=0)


class Heterogeneity(_Frozen):
    """The DHI definition (components, weights, reference scales) and how it is reported: hazard ratios per
    ``dhi_hr_unit`` of DHI."""

    dhi_hr_unit: float = Field(gt=0)
    dhi_components: dict[Literal["density", "spatial", "texture"], DhiComponent]

    @model_validator(mode="after")
    def _all_components(self) -> Heterogeneity:
        missing = {"density", "spatial", "texture"} - set(self.dhi_components)
        if missing:
            raise ValueError(f"heterogeneity.dhi_components lacks {sorted(missing)}; docs/dhi.md lists the three")
        return self


class Populations(_Frozen):
    """The analysis populations (one definition; :mod:`evaluation.populations` derives the flags per site).

    ``efficacy_visits`` are the protocol scans an efficacy (full-mode model-evaluation) subject must have;
    ``early_visits`` those of the early-mode population ``EARLYFL`` (a subset of them: no later scan);
    ``efficacy_needs_reference`` requires a dynamic-iRECIST reference label; ``endpoint_fields`` maps a
    per-endpoint flag (``PFSFL``) to the CRF fields whose unresolved HARD query removes a subject from that
    endpoint only (with the reason recorded) instead of from the study; ``orr_denominator`` is the flag whose
    subjects form the protocol's ORR denominator (``ITTFL``: all enrolled).
    """

    efficacy_visits: tuple[str, ...] = Field(min_length=1)
    early_visits: tuple[str, ...] = Field(default=("T0", "T1"), min_length=1)
    efficacy_needs_reference: bool = True
    endpoint_fields: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    orr_denominator: str = Field(default="ITTFL", pattern=r"^(ITTFL|ELIGFL|EFFFL)$")

    @model_validator(mode="after")
    def _known_flags(self) -> Populations:
        unknown = sorted(set(self.endpoint_fields) - {"PFSFL"})
        if unknown:
            raise ValueError(f"populations.endpoint_fields: unknown endpoint flag(s) {unknown}; known: ['PFSFL']")
        return self


class Statistics(_Frozen):
    """Disclosure and estimability limits of the reported statistics.

    ``min_cell_size``: a site contributes to a pooled statistic only when each of its cells (e.g. responders
    and non-responders, events) holds at least this many subjects; ``min_patients_estimate``: fewer analysed
    subjects than this and an estimate is reported as not estimable.
    """

    min_cell_size: int = Field(ge=1)
    min_patients_estimate: int = Field(ge=1)


class Registration(_Frozen):
    """The trial registration the protocol implements (registry, number, registered public title)."""

    registry: str
    number: str = Field(min_length=1)
    public_title: str


class StudyProtocol(_Frozen):
    """Typed view of ``configs/study.yaml``."""

    study_id: str = Field(pattern=r"^[A-Z][A-Z0-9]{1,11}$")
    title: str
    registration: Registration
    cycle_length_days: int = Field(gt=0)
    timepoints: dict[str, Timepoint]
    follow_up: FollowUp
    imaging: Imaging
    recist: Recist
    irecist: Irecist
    agreement: Agreement
    heterogeneity: Heterogeneity
    populations: Populations
    statistics: Statistics
    data_cutoff_day: int = Field(gt=0)

    @model_validator(mode="after")
    def _efficacy_visits_known(self) -> StudyProtocol:
        unknown = [v for v in self.populations.efficacy_visits if v not in self.timepoints]
        if unknown:
            raise ValueError(f"populations.efficacy_visits {unknown} are not protocol time points "
                             f"{sorted(self.timepoints)}; list visits of `timepoints`")
        rules = self.populations
        later = [v for v in rules.early_visits if v not in rules.efficacy_visits]
        if later:
            raise ValueError(f"populations.early_visits {later} are not in efficacy_visits "
                             f"{list(rules.efficacy_visits)}; the early-mode population needs a subset of the "
                             "efficacy scans (e.g. [T0, T1])")
        return self

    @property
    def visits(self) -> list[str]:
        """Protocol imaging visits in time order (``["T0", "T1", "T2"]``)."""
        return sorted(self.timepoints, key=lambda name: self.timepoints[name].visitnum)


#: A SITEID is site configuration (``S01``, ``QY``, ``ZJU1``): 2-8 capitals or digits, so that
#: USUBJID = STUDYID-SITEID-NNNN splits unambiguously on ``-``.
SITE_CODE_PATTERN = r"^[A-Z0-9]{2,8}$"


def check_site_code(site: str) -> str:
    """Return ``site`` if it is a valid SITEID, else raise ``ValueError`` saying what a SITEID may be."""
    if not isinstance(site, str) or not re.fullmatch(SITE_CODE_PATTERN, site):
        raise ValueError(f"site code must be 2-8 capital letters or digits (e.g. S01, QY), but was {site!r}; "
                         "set it in the site configuration or pass --site")
    return site


def configs_dir() -> Path:
    """The folder holding the YAML presets (repository checkout or installed wheel)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "configs", here.parent / "fedresponse" / "configs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no configs/ folder found next to {here}; reinstall fedresponse")


def load_protocol(path: Path | None = None) -> StudyProtocol:
    """Read and validate the study protocol (default: ``configs/study.yaml``)."""
    path = path or configs_dir() / "study.yaml"
    with path.open(encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    return StudyProtocol.model_validate(data)
