"""The central report names the sites the federation's handshake excluded (``run_summary.json`` ``excluded_sites``)."""

from __future__ import annotations

from evaluation.central_report import RENDERERS, excluded_line

SUMMARY = {"rounds_configured": 2, "rounds_planned": 2, "rounds_completed": 2, "stop_reason": "completed",
           "stop": "completed 2 of 2 rounds",
           "excluded_sites": [{"node": 11, "site": "S03", "reason": "malformed hello: accounting: budget is missing"},
                              {"node": 12, "site": None, "reason": "error reply: ledger row of round 1 <prv>."}]}


def test_the_excluded_sites_are_listed_with_their_reasons() -> None:
    assert excluded_line(SUMMARY) == ("Sites excluded at the handshake: S03 (malformed hello: accounting: budget is "
                                      "missing); node 12 (error reply: ledger row of round 1 <prv>).")
    assert excluded_line({**SUMMARY, "excluded_sites": []}) is None
    assert excluded_line({"rounds_completed": 3}) is None and excluded_line(None) is None


def test_the_privacy_section_shows_them_under_the_stop_line() -> None:
    metrics = {"handoff": {"sites": {}, "central_files": []}, "pooling": {"codec": "PlainCodec"},
               "run_summary": SUMMARY}
    html = RENDERERS["privacy"](metrics)
    assert html.index('id="stop-line"') < html.index('id="excluded-sites"')
    assert "node 12 (error reply: ledger row of round 1 &lt;prv&gt;)." in html  # escaped
    assert 'id="excluded-sites"' not in RENDERERS["privacy"]({**metrics, "run_summary": {**SUMMARY,
                                                                                        "excluded_sites": []}})
