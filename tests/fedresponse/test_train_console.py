"""What ``fedresponse train`` (federated) prints of ``RUN/run_summary.json``: the stop, and every excluded site."""

from __future__ import annotations

from fedresponse.federation import summary_lines

SUMMARY = {"stop": "stopped after round 1 of 3: privacy budget", "affordable_rounds": {"S01": 1, "S02": 1},
           "excluded_sites": [{"node": 11, "site": "S03", "reason": "malformed hello: accounting: budget is missing"},
                              {"node": 12, "site": None, "reason": "error reply: [prv] ledger row of round 1"}]}


def test_the_console_names_each_excluded_site_with_its_reason() -> None:
    lines = summary_lines(SUMMARY)
    assert lines[0] == "stopped after round 1 of 3: privacy budget (affordable rounds per site: {'S01': 1, 'S02': 1})"
    assert lines[1] == ("[yellow]excluded at the handshake:[/] node 11 (site S03): malformed hello: accounting: "
                        "budget is missing")
    assert lines[2].endswith(r"node 12: error reply: \[prv] ledger row of round 1")  # escaped for rich markup
    assert summary_lines({**SUMMARY, "excluded_sites": [], "affordable_rounds": {}}) == [
        "stopped after round 1 of 3: privacy budget (affordable rounds per site: no limit)"]
