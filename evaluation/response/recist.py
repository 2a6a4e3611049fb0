"""RECIST 1.1 time-point response (Eisenhauer et al., Eur J Cancer 2009;45:228-47).

Target response (§4.3.1): CR when every non-nodal target has disappeared and every nodal target's
short axis is below 10 mm; PR at a sum ≤ −30 % from baseline; PD at a sum ≥ +20 % from the nadir
(smallest sum on study, baseline included, NE visits excluded) **and** ≥ +5 mm absolute; else SD.
Overall response combines target, non-target and new lesions by Table 1 (targets at baseline) or
Table 2 (non-target disease only). All numbers come from :class:`evaluation.protocol.Recist`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from evaluation.protocol import Recist
from evaluation.response.findings import VisitFindings, rounded


@dataclass(frozen=True)
class TargetResult:
    """Target-lesion response at one visit with the percentages behind it (``None`` when undefined)."""

    response: str
    pchg_base: float | None
    pchg_nadir: float | None


def percent_change(value: float, reference: float) -> float | None:
    """``100 · (value − reference) / reference`` rounded to 1e-6 %, ``None`` when the reference is 0."""
    if reference == 0:
        return None
    return rounded((value - reference) / reference * 100.0)


def is_progression(sld: float, nadir: float, rules: Recist) -> bool:
    """RECIST 1.1 target PD: increase ≥ ``pd_threshold_pct`` % over the nadir and ≥ ``pd_min_absolute_mm``.

    With a nadir of 0 mm (all targets gone) the relative rule holds for any increase, so only the
    absolute ≥ 5 mm applies.
    """
    increase = rounded(sld - nadir)
    if increase < rules.pd_min_absolute_mm:
        return False
    pct = percent_change(sld, nadir)
    return pct is None or pct >= rules.pd_threshold_pct


def target_response(
    f: VisitFindings, baseline_sld: float, nadir: float, previous_cr: bool, rules: Recist
) -> TargetResult:
    """Target response at one follow-up visit.

    Parameters
    ----------
    f : VisitFindings
        The visit.
    baseline_sld, nadir : float
        Baseline sum and the smallest sum of the earlier evaluable visits (baseline included), mm.
    previous_cr : bool
        The last evaluable target response was CR: a non-nodal target reappearing is then PD
        (Eisenhauer 2009, Appendix I, "lesions that disappear and reappear").

    Notes
    -----
    When some targets were not measured the visit is NE, unless the measured ones alone already
    meet PD (Eisenhauer 2009 §4.3.4: missing lesions can only add to the sum).
    """
    if not f.has_targets:
        return TargetResult("NA", None, None)
    if f.sld_mm is None:
        return TargetResult("NE", None, None)
    pchg_base = percent_change(f.sld_mm, baseline_sld)
    pchg_nadir = percent_change(f.sld_mm, nadir)
    if not f.targets_complete:
        pd = is_progression(f.sld_mm, nadir, rules) or (previous_cr and f.nonnodal_any_present)
        return TargetResult("PD" if pd else "NE", None, None)
    if is_progression(f.sld_mm, nadir, rules) or (previous_cr and f.nonnodal_any_present):
        return TargetResult("PD", pchg_base, pchg_nadir)
    if f.nonnodal_all_zero and f.nodes_all_normal:
        return TargetResult("CR", pchg_base, pchg_nadir)
    if pchg_base is not None and pchg_base <= rules.pr_threshold_pct:
        return TargetResult("PR", pchg_base, pchg_nadir)
    return TargetResult("SD", pchg_base, pchg_nadir)


def overall_response(target: str, nontarget: str, newles: str) -> str:
    """Time-point overall response, Eisenhauer 2009 Table 1 (targets) and Table 2 (non-targets only).

    Parameters
    ----------
    target : str
        ``CR|PR|SD|PD|NE`` or ``NA`` (no target lesions at baseline).
    nontarget : str
        ``CR|NON-CR/NON-PD|PD|NE`` or ``NA`` (no non-target lesions at baseline).
    newles : str
        ``Y`` (unequivocal new lesion), ``EQUIVOCAL`` or ``N``; an equivocal lesion is not PD.

    Returns
    -------
    str
        ``CR|PR|SD|PD|NE|NON-CR/NON-PD``.
    """
    if target == "PD" or nontarget == "PD" or newles == "Y":
        return "PD"
    if target == "NA":
        return {"CR": "CR", "NON-CR/NON-PD": "NON-CR/NON-PD"}.get(nontarget, "NE")
    if target == "CR":
        return "CR" if nontarget in {"CR", "NA"} else "PR"
    return target  # PR, SD (non-target non-PD or NE) and NE


@dataclass
class RecistTrack:
    """Running RECIST state of one subject across its follow-up visits (nadir, last evaluable response)."""

    baseline_sld: float
    nadir: float
    previous_cr: bool = False

    @classmethod
    def start(cls, baseline: VisitFindings) -> RecistTrack:
        sld = baseline.sld_mm if baseline.sld_mm is not None else math.nan
        return cls(baseline_sld=sld, nadir=sld)

    def step(self, f: VisitFindings, rules: Recist) -> tuple[TargetResult, str]:
        """Assess one visit, then update the nadir (complete visits only) and the CR memory."""
        result = target_response(f, self.baseline_sld, self.nadir, self.previous_cr, rules)
        overall = overall_response(result.response, f.nontarget, f.newles)
        if f.targets_complete and f.sld_mm is not None:
            self.nadir = min(self.nadir, f.sld_mm)
        if result.response != "NE":
            self.previous_cr = result.response == "CR"
        return result, overall
