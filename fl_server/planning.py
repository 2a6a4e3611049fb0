"""Budget-aware planning of a federated run, before any privacy is spent, and the run's summary.

In the handshake every DP site reports its :class:`privacy.accounting.AccountingInputs` (the mechanism of
one round, δ, accountant, budget, and what it already spent). :func:`plan_rounds` composes them with the
sites' own accountant (:func:`privacy.accounting.affordable_rounds`) and fixes how many rounds the run
trains: the configured number, or fewer when some site cannot afford them (the run is then *shortened up
front* and ends at the budget, successfully), or — with ``strict-rounds`` — not at all
(:class:`RoundsNotAffordable`, naming the exact affordable number). The sites keep their own refusal
(:class:`privacy.exceptions.PrivacyBudgetExhausted`) as the last line of defence.

``RUN/run_summary.json`` (:func:`write_run_summary`) records the plan and how the run ended:
``rounds_configured``, ``rounds_planned``, ``rounds_completed``, ``stop_reason`` (``completed``,
``privacy budget`` or ``failed``), ``stop`` (a sentence: "stopped after round k of n: privacy budget"),
``affordable_rounds`` per site (rounds from the run's first round on, capped at the configured number),
``excluded_sites`` (the nodes the handshake left out, ``{node, site, reason}``: :mod:`fl_server.handshake`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.atomic import write_text_atomic
from privacy.accounting import AccountingInputs, affordable_rounds

log = logging.getLogger(__name__)

RUN_SUMMARY = "run_summary.json"
COMPLETED, PRIVACY_BUDGET, FAILED = "completed", "privacy budget", "failed"


class RoundsNotAffordable(RuntimeError):  # noqa: N818 (reads as the event it reports)
    """The configured rounds exceed what some site's privacy budget allows (``strict-rounds``), or no round fits."""

    def __init__(self, configured: int, affordable: Mapping[str, int], first_round: int, strict: bool) -> None:
        self.configured, self.affordable = configured, dict(affordable)
        fewest = min(affordable.values()) if affordable else 0
        last = first_round - 1 + fewest
        per_site = ", ".join(f"{site} {k}" for site, k in sorted(affordable.items()))
        if strict and fewest > 0:
            remedy = (f"set num-server-rounds = {last} (or drop --strict-rounds to shorten the run automatically), "
                      "or lower the per-round cost (larger noise-multiplier, fewer local-epochs, larger batch-size)")
        else:
            remedy = ("lower the per-round cost (larger noise-multiplier, fewer local-epochs, larger batch-size) or "
                      "have the PI raise epsilon-budget (a protocol decision)")
        super().__init__(
            f"the sites' privacy budgets allow {fewest} more round(s) from round {first_round} (per site: "
            f"{per_site}), the run is configured for rounds {first_round}..{configured}; {remedy}.")


@dataclass
class RunPlan:
    """How many rounds the run trains, and why."""

    configured: int
    first_round: int
    last_round: int
    affordable: dict[str, int] = field(default_factory=dict)
    strict: bool = False
    #: the nodes the handshake left out (``{node, site, reason}``, :class:`fl_server.handshake.Exclusion`)
    excluded: list[dict[str, Any]] = field(default_factory=list)

    @property
    def shortened(self) -> bool:
        """True when the budget, not the configuration, decides the last round."""
        return self.last_round < self.configured

    def stop_sentence(self, completed: int, reason: str) -> str:
        """``stopped after round k of n: privacy budget`` (or ``completed n of n rounds``)."""
        if reason == COMPLETED:
            return f"completed {completed} of {self.configured} rounds"
        return f"stopped after round {completed} of {self.configured}: {reason}"


def plan_rounds(configured: int, first_round: int, inputs: Mapping[str, AccountingInputs],
                strict: bool = False, excluded: Sequence[Mapping[str, Any]] = ()) -> RunPlan:
    """Fix the run's last round so that every site can afford every round.

    Parameters
    ----------
    configured : int
        ``num-server-rounds``.
    first_round : int
        The next round to train (1, or the round after the checkpoint when resuming).
    inputs : mapping of site → AccountingInputs
        The DP sites' handshake figures; empty in the non-DP modes (no limit then).
    strict : bool
        Refuse (:class:`RoundsNotAffordable`) instead of shortening.
    excluded : sequence of mappings
        The handshake's exclusions (``{node, site, reason}``): not planned for, kept for the run's summary.
    """
    wanted = max(0, configured - first_round + 1)
    affordable = {site: affordable_rounds(item, wanted) for site, item in sorted(inputs.items())}
    fewest = min(affordable.values(), default=wanted)
    plan = RunPlan(configured, first_round, first_round - 1 + fewest, affordable, strict, [dict(e) for e in excluded])
    if fewest < wanted and (strict or (fewest == 0 and first_round == 1)):
        raise RoundsNotAffordable(configured, affordable, first_round, strict)
    if plan.shortened:
        log.warning("privacy budget: the run is shortened to %d of %d configured round(s) (affordable per site: %s)",
                    plan.last_round, configured, affordable)
    else:
        log.info("privacy budget: every site can afford rounds %d..%d (%s)", first_round, configured, affordable)
    return plan


def write_run_summary(run_dir: Path, plan: RunPlan, completed: int, reason: str, detail: str = "",
                      epsilon: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Write ``RUN/run_summary.json`` atomically and return it."""
    summary: dict[str, Any] = {
        "rounds_configured": plan.configured, "rounds_planned": plan.last_round, "rounds_completed": completed,
        "stop_reason": reason, "stop": plan.stop_sentence(completed, reason), "affordable_rounds": plan.affordable,
        "first_round": plan.first_round, "strict_rounds": plan.strict, "epsilon": dict(epsilon or {}),
        "excluded_sites": list(plan.excluded)}
    if detail:
        summary["detail"] = detail
    write_text_atomic(run_dir / RUN_SUMMARY, lambda stream: json.dump(summary, stream, indent=1, sort_keys=True))
    return summary
