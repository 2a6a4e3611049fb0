"""Best overall response, unconfirmed and confirmed (RECIST 1.1 §4.4; iRECIST iBOR).

Eisenhauer 2009 §4.4.1: the best response recorded from the start of treatment until progression.
Stable disease (and NON-CR/NON-PD) counts only when it was observed at least ``sd_min_days`` after the
first dose; a confirmed CR/PR needs a repeat assessment at least ``confirm_min_days`` later (§4.4.2,
Table 3). Days since the first dose are ``ADY − 1`` (CDISC study day 1 = first dose).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Scheme:
    """The vocabulary of one criterion, so that one algorithm serves RECIST 1.1 and iRECIST."""

    cr: str
    pr: str
    sd_like: tuple[str, ...]
    progression: tuple[str, ...]  # worst first in the fallback order (e.g. iCPD before iUPD)
    stop: str  # the response that ends the assessment (PD, iCPD)


RECIST = Scheme(cr="CR", pr="PR", sd_like=("SD", "NON-CR/NON-PD"), progression=("PD",), stop="PD")
IRECIST = Scheme(
    cr="iCR", pr="iPR", sd_like=("iSD", "NON-iCR/NON-iUPD"), progression=("iCPD", "iUPD"), stop="iCPD"
)


def _until_stop(days: Sequence[int], responses: Sequence[str], scheme: Scheme) -> list[tuple[int, str]]:
    kept: list[tuple[int, str]] = []
    for ady, response in zip(days, responses, strict=True):
        kept.append((ady, response))
        if response == scheme.stop:
            break
    return kept


def _fallback(kept: list[tuple[int, str]], sd_ok: bool, scheme: Scheme, best_sd: str) -> str:
    if sd_ok:
        return best_sd
    seen = {r for _, r in kept}
    for progression in scheme.progression:
        if progression in seen:
            return progression
    return "NE"


def _sd_label(
    kept: list[tuple[int, str]], scheme: Scheme, sd_min_days: int, include_responses: bool, nontarget_only: bool = False
) -> str | None:
    """The SD-like label that counts (SD before NON-CR/NON-PD), or ``None`` when none lasted long enough."""
    eligible = set(scheme.sd_like) | ({scheme.cr, scheme.pr} if include_responses else set())
    qualifying = [r for ady, r in kept if r in eligible and ady - 1 >= sd_min_days]
    if not qualifying:
        return None
    for label in scheme.sd_like:
        if label in qualifying:
            return label
    # Only unconfirmed CR/PR qualified: SD for target disease; for non-target-only disease
    # Eisenhauer 2009 (Table 2 note) prefers NON-CR/NON-PD to SD.
    return scheme.sd_like[1] if nontarget_only else scheme.sd_like[0]


def best_overall_response(
    days: Sequence[int], responses: Sequence[str], scheme: Scheme, sd_min_days: int
) -> str:
    """Unconfirmed best overall response over the post-baseline visits up to the first ``scheme.stop``.

    Parameters
    ----------
    days : sequence of int
        Study days (ADY) of the post-baseline visits, ascending.
    responses : sequence of str
        Time-point responses of those visits.
    scheme : Scheme
        :data:`RECIST` or :data:`IRECIST`.
    sd_min_days : int
        Minimum days after the first dose for SD to count (protocol ``recist.sd_min_days``).
    """
    kept = _until_stop(days, responses, scheme)
    seen = {r for _, r in kept}
    for label in (scheme.cr, scheme.pr):
        if label in seen:
            return label
    sd = _sd_label(kept, scheme, sd_min_days, include_responses=False)
    return _fallback(kept, sd is not None, scheme, sd or "")


def _confirmed(kept: list[tuple[int, str]], accept: set[str], confirm_min_days: int) -> bool:
    """A visit in ``accept`` followed ≥ ``confirm_min_days`` later by another in ``accept``, with only
    ``accept`` or NE in between (Eisenhauer 2009 Table 3)."""
    for i, (day_i, resp_i) in enumerate(kept):
        if resp_i not in accept:
            continue
        for day_j, resp_j in kept[i + 1:]:
            if resp_j not in accept and resp_j != "NE":
                break
            if resp_j in accept and day_j - day_i >= confirm_min_days:
                return True
    return False


def confirmed_best_overall_response(
    days: Sequence[int], responses: Sequence[str], scheme: Scheme, sd_min_days: int, confirm_min_days: int,
    nontarget_only: bool = False,
) -> str:
    """Confirmed best overall response (Eisenhauer 2009 §4.4.2, Table 3).

    CR needs a later CR ≥ ``confirm_min_days`` after it; PR needs a later PR or CR (a CR followed by a
    PR counts as a confirmed PR, Table 3 note a). Unconfirmed CR/PR fall back to SD when they were
    seen ≥ ``sd_min_days`` after the first dose; otherwise to PD (if it followed) or NE.
    """
    kept = _until_stop(days, responses, scheme)
    if _confirmed(kept, {scheme.cr}, confirm_min_days):
        return scheme.cr
    if _confirmed(kept, {scheme.cr, scheme.pr}, confirm_min_days):
        return scheme.pr
    sd = _sd_label(kept, scheme, sd_min_days, include_responses=True, nontarget_only=nontarget_only)
    return _fallback(kept, sd is not None, scheme, sd or "")
