"""Budget-aware planning at the server: shorten up front, or refuse with the exact affordable number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fl_server.planning import PRIVACY_BUDGET, RoundsNotAffordable, plan_rounds, write_run_summary
from privacy.accounting import AccountingInputs, epsilon_of


def _site(site: str, steps: int, budget: float, history: tuple[tuple[float, float, int], ...] = ()) -> AccountingInputs:
    return AccountingInputs(site, steps, 0.25, 1.0, 1e-5, budget, "rdp", history)


def _budget_between(rounds: int, steps: int) -> float:
    """A budget that pays for exactly ``rounds`` rounds of ``steps`` steps (q 0.25, sigma 1, RDP)."""
    low = epsilon_of([(1.0, 0.25, steps)] * rounds, 1e-5, "rdp")
    high = epsilon_of([(1.0, 0.25, steps)] * (rounds + 1), 1e-5, "rdp")
    return (low + high) / 2


def test_plan_takes_the_poorest_site_and_shortens_the_run(tmp_path: Path) -> None:
    sites = {"S01": _site("S01", 8, _budget_between(4, 8)), "S02": _site("S02", 8, _budget_between(2, 8))}
    plan = plan_rounds(5, 1, sites)
    assert plan.affordable == {"S01": 4, "S02": 2} and plan.last_round == 2 and plan.shortened
    summary = write_run_summary(tmp_path, plan, 2, PRIVACY_BUDGET, epsilon={"S01": 1.0})
    assert json.loads((tmp_path / "run_summary.json").read_text()) == summary
    assert summary["stop"] == "stopped after round 2 of 5: privacy budget"
    assert (summary["rounds_planned"], summary["rounds_completed"], summary["stop_reason"]) == (2, 2, "privacy budget")


def test_strict_rounds_refuses_with_the_affordable_number() -> None:
    sites = {"S01": _site("S01", 8, _budget_between(3, 8)), "S02": _site("S02", 8, _budget_between(3, 8))}
    with pytest.raises(RoundsNotAffordable, match=r"allow 3 more round\(s\).*num-server-rounds = 3"):
        plan_rounds(4, 1, sites, strict=True)
    assert plan_rounds(3, 1, sites, strict=True).last_round == 3  # affordable: strict is silent


def test_resumed_run_counts_what_was_spent() -> None:
    spent = ((1.0, 0.25, 8), (1.0, 0.25, 8))
    plan = plan_rounds(5, 3, {"S01": _site("S01", 8, _budget_between(3, 8), spent)})
    assert plan.affordable == {"S01": 1} and plan.last_round == 3
    exhausted = plan_rounds(5, 3, {"S01": _site("S01", 8, _budget_between(2, 8), spent)})
    assert exhausted.last_round == 2  # nothing more to train: the checkpoint's model is the run's final one


def test_a_run_no_site_can_pay_for_is_refused_before_round_one() -> None:
    with pytest.raises(RoundsNotAffordable, match="allow 0 more round"):
        plan_rounds(3, 1, {"S01": _site("S01", 8, 0.01)})


def test_without_dp_there_is_no_budget_limit() -> None:
    plan = plan_rounds(3, 1, {})
    assert plan.last_round == 3 and not plan.shortened and plan.stop_sentence(3, "completed") == \
        "completed 3 of 3 rounds"
