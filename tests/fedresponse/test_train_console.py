"""What ``fedresponse train`` (federated) prints of ``RUN/run_summary.json``: the stop, and every excluded site."""

from __future__ import annotations

from fedresponse.federation import summary_lines

SUMMARY = {"stop": "stopped after round 1 of 3: privacy budget", "affordable_rounds": {"S01": 1, "S02": 1},
           "rounds_configured": 3, "rounds_planned": 1, "first_round": 1,
           "excluded_sites": [{"node": 11, "site": "S03", "reason": "malformed hello: accounting: budget is missing"},
                              {"node": 12, "site": None, "reason": "error reply: [prv] ledger row of round 1"}]}


def test_the_console_names_each_excluded_site_with_its_reason() -> None:
    lines = summary_lines(SUMMARY)
    assert lines[0] == "stopped after round 1 of 3: privacy budget (affordable rounds per site: {'S01': 1, 'S02': 1})"
    assert lines[1] == ("[yellow]excluded at the handshake:[/] node 11 (site S03): malformed hello: accounting: "
                        "budget is missing")
    assert lines[2].endswith(r"node 12: error reply: \[prv] ledger row of round 1")  # escaped for rich markup
    assert summary_lines({**SUMMARY, "stop": "completed 3 of 3 rounds", "excluded_sites": [],
                          "affordable_rounds": {}}) == ["completed 3 of 3 rounds (no privacy limit in this mode)"]


def test_a_budget_that_limits_no_site_is_not_shown_as_a_per_site_limit() -> None:
    """The plan caps each site's affordable count at the rounds asked for, so {S01: 3} of a 3-round run means
    "pays for all", not "limited to 3"; on resume from round 3 of 5 the rounds asked for are 3..5."""
    full = {**SUMMARY, "stop": "completed 3 of 3 rounds", "excluded_sites": [], "affordable_rounds": {"S01": 3},
            "rounds_planned": 3}
    assert summary_lines(full) == ["completed 3 of 3 rounds (every site's privacy budget pays for the 3 configured "
                                   "round(s))"]
    resumed = {**full, "rounds_configured": 5, "rounds_planned": 4, "first_round": 3,
               "affordable_rounds": {"S01": 3, "S02": 2}}
    assert summary_lines(resumed)[0].endswith("(affordable rounds per site: {'S01': 3, 'S02': 2})")
