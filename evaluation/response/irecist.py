"""iRECIST time-point response (Seymour et al., Lancet Oncol 2017;18:e143-52).

The first RECIST 1.1 progression is *unconfirmed* (iUPD). It becomes confirmed (iCPD) at a later
assessment made ``irecist.confirm_window_days`` (28–56 days in this protocol) after the iUPD when,
compared with the iUPD assessment, any of these holds (Seymour 2017, "Confirmation of progression"):

- targets progressed at iUPD and their sum rose a further ≥ ``further_increase_mm`` (5 mm);
- non-targets progressed at iUPD and a non-target lesion increased further (``INCREASED`` or newly
  ``UNEQUIVOCAL_PROGRESSION``; it need not be unequivocal);
- new lesions were present at iUPD and the sum of new *target* lesions rose ≥ 5 mm, a new non-target
  lesion increased, or more new lesions appeared;
- a category that had not progressed at iUPD now meets RECIST 1.1 progression (including the first
  appearance of new lesions).

When the disease no longer meets progression (an iSD, iPR or iCR — or NON-iCR/NON-iUPD for
non-target-only disease) the bar resets: the iUPD is left unconfirmed and the next progression is a
fresh iUPD. A scan earlier than the window cannot confirm; a still-progressed scan later than the window
cannot confirm either and starts a fresh iUPD (the old one expired). Rule choices: ``docs/response.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from evaluation.protocol import Irecist, Recist
from evaluation.response.findings import NewLesion, VisitFindings, rounded

_TO_IRECIST = {"CR": "iCR", "PR": "iPR", "SD": "iSD", "NE": "NE", "NON-CR/NON-PD": "NON-iCR/NON-iUPD", "PD": "iUPD"}
RESETTING = frozenset({"iCR", "iPR", "iSD", "NON-iCR/NON-iUPD"})


def new_target_lesions(lesions: tuple[NewLesion, ...], chosen: dict[str, str], rules: Recist) -> dict[str, str]:
    """Choose new *target* lesions (NLT) at their first unequivocal appearance, RECIST 1.1 style.

    Measurable new lesions (non-nodal ≥ ``measurable_min_mm``, nodes ≥ ``node_measurable_min_mm``)
    become NLT, largest first, up to ``max_targets`` in all and ``max_targets_per_organ`` per organ
    (Seymour 2017, "New lesions"). Returns the updated ``{lesion id: organ}`` choice.
    """
    chosen = dict(chosen)
    candidates = [
        n for n in lesions
        if n.state == "Y" and n.lesion_id not in chosen
        and n.diam_mm >= (rules.node_measurable_min_mm if n.node else rules.measurable_min_mm)
    ]
    for lesion in sorted(candidates, key=lambda n: (-n.diam_mm, n.lesion_id)):
        per_organ = sum(1 for organ in chosen.values() if organ == lesion.organ)
        if len(chosen) < rules.max_targets and per_organ < rules.max_targets_per_organ:
            chosen[lesion.lesion_id] = lesion.organ
    return chosen


def _nlt_sum(lesions: tuple[NewLesion, ...], nlt: dict[str, str]) -> float:
    total = sum(n.diam_mm for n in lesions if n.lesion_id in nlt and n.state == "Y" and n.diam_mm == n.diam_mm)
    return rounded(total)


@dataclass(frozen=True)
class PendingIupd:
    """An unconfirmed progression: when it was seen and what had progressed then."""

    ady: int
    sld_mm: float | None
    target_pd: bool
    nontarget_pd: bool
    nontarget_unequivocal: frozenset[str]
    new_ids: frozenset[str]
    nlt_sum_mm: float


def _confirms(p: PendingIupd, f: VisitFindings, target: str, nlt_sum: float, further_mm: float) -> bool:
    """Whether visit ``f`` confirms the pending iUPD ``p`` (Seymour 2017; see module docstring)."""
    if p.target_pd and f.targets_complete and f.sld_mm is not None and p.sld_mm is not None:
        if rounded(f.sld_mm - p.sld_mm) >= further_mm:
            return True
    if not p.target_pd and target == "PD":
        return True
    if p.nontarget_pd and (f.nontarget_increased or f.nontarget_unequivocal - p.nontarget_unequivocal):
        return True
    if not p.nontarget_pd and f.nontarget == "PD":
        return True
    if not p.new_ids:
        return bool(f.new_present)
    nlnt_grew = any(n.state == "Y" and n.status in {"INCREASED", "UNEQUIVOCAL_PROGRESSION"} for n in f.new_lesions)
    return bool(f.new_present - p.new_ids) or rounded(nlt_sum - p.nlt_sum_mm) >= further_mm or nlnt_grew


@dataclass
class IrecistTrack:
    """Running iRECIST state of one subject (the pending iUPD, confirmed or not, and new-target choice)."""

    rules: Recist
    irules: Irecist
    pending: PendingIupd | None = None
    confirmed: bool = False
    nlt: dict[str, str] = field(default_factory=dict)
    first_iupd_ady: int | None = None
    confirmed_iupd_ady: int | None = None
    icpd_ady: int | None = None
    pseudoprogression: bool = False

    def _open(self, f: VisitFindings, target: str, nlt_sum: float) -> str:
        self.pending = PendingIupd(
            ady=f.ady, sld_mm=f.sld_mm if f.targets_complete else None, target_pd=target == "PD",
            nontarget_pd=f.nontarget == "PD", nontarget_unequivocal=f.nontarget_unequivocal,
            new_ids=f.new_present, nlt_sum_mm=nlt_sum,
        )
        self.confirmed = False
        if self.first_iupd_ady is None:
            self.first_iupd_ady = f.ady
        return "iUPD"

    def step(self, f: VisitFindings, target: str, recist_overall: str) -> str:
        """iRECIST response at visit ``f`` given its RECIST target and overall responses."""
        self.nlt = new_target_lesions(f.new_lesions, self.nlt, self.rules)
        nlt_sum = _nlt_sum(f.new_lesions, self.nlt)
        p = self.pending
        still = recist_overall == "PD" or (p is not None and p.nontarget_pd and bool(f.nontarget_increased))
        if p is None:
            return self._open(f, target, nlt_sum) if still else _TO_IRECIST[recist_overall]
        if not still:
            mapped = _TO_IRECIST[recist_overall]
            if mapped in RESETTING:
                self.pseudoprogression = self.pseudoprogression or not self.confirmed
                self.pending, self.confirmed = None, False
            return mapped
        if self.confirmed:
            return "iCPD"
        days = f.ady - p.ady
        low, high = self.irules.confirm_window_days
        if days > high:
            return self._open(f, target, nlt_sum)
        if days >= low and _confirms(p, f, target, nlt_sum, self.irules.further_increase_mm):
            self.confirmed = True
            if self.icpd_ady is None:
                self.icpd_ady, self.confirmed_iupd_ady = f.ady, p.ady
            return "iCPD"
        return "iUPD"


def progression_event_day(days: list[int], responses: list[str]) -> tuple[int | None, int | None]:
    """The one dating rule of a confirmed iRECIST progression (reference labels, featurizer, ADRS, ADTTE).

    Seymour 2017: when an iUPD is confirmed, the date of progression is the date the iUPD was *first*
    documented. The event day is therefore the first iUPD of the run that ended in the first iCPD — the
    run since the last resetting response (iSD, iPR, iCR, NON-iCR/NON-iUPD); NE visits do not break it,
    and neither does a fresh iUPD after an expired confirmation window (the disease met progression at
    every assessment since the first one).

    Parameters
    ----------
    days, responses : list
        Study days and iRECIST overall responses of the post-baseline assessments, in time order.

    Returns
    -------
    (event_day, open_day)
        ``event_day``: day of the first iUPD of the confirmed run (None without an iCPD); ``open_day``:
        the first iUPD day of a run still unconfirmed at the last assessment (None otherwise).
    """
    first: int | None = None
    for ady, response in zip(days, responses, strict=True):
        if response == "iUPD" and first is None:
            first = int(ady)
        elif response in RESETTING:
            first = None
        elif response == "iCPD":
            return (first if first is not None else int(ady)), None
    return None, first
