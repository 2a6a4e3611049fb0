"""The handshake judges every node's reply on its own: unusable ones are excluded with a reason, the run goes on."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from fl_server.handshake import Exclusion, MalformedHelloError, admit, parse_hello
from fl_server.planning import COMPLETED, plan_rounds, write_run_summary
from privacy.accounting import AccountingInputs

KEY, DIGEST = "k" * 64, "d" * 64


def _reply(site: str = "S01", dp: bool = True, **hello: Any) -> dict[str, dict[str, Any]]:
    """A well-formed reply (the records :func:`fl_client.app.handle_query` sends), with ``hello`` fields replaced."""
    records: dict[str, dict[str, Any]] = {"hello": {"site": site, "key_id": KEY, "layout_digest": DIGEST,
                                                    "length": 57, **hello}}
    if dp:
        records["accounting"] = AccountingInputs(site, 4, 0.25, 1.0, 1e-5, 8.0, "rdp").to_record()
    return records


def _hello(**fields: Any) -> dict[str, dict[str, Any]]:
    reply = _reply()
    reply["hello"].update(fields)
    return reply


def _accounting(**fields: Any) -> dict[str, dict[str, Any]]:
    reply = _reply()
    reply["accounting"].update(fields)
    return reply


def _without(record: str, name: str) -> dict[str, dict[str, Any]]:
    reply = _reply()
    del reply[record][name]
    return reply


MALFORMED = [  # (reply, field named in the reason, words of the problem)
    ({"accounting": _reply()["accounting"]}, "hello", "missing"),
    (_without("hello", "layout_digest"), "hello.layout_digest", "missing"),
    (_without("hello", "key_id"), "hello.key_id", "missing"),
    (_hello(site=""), "hello.site", "non-empty text"),
    (_hello(key_id=3), "hello.key_id", "must be non-empty text, but was 3"),
    (_reply(length="57"), "hello.length", "positive int"),
    (_reply(length=-3), "hello.length", "-3"),
    (_reply(length=True), "hello.length", "True"),
    ({"hello": _reply()["hello"]}, "accounting", "missing in a DP run"),
    (_without("accounting", "budget"), "accounting", "budget is missing"),
    (_accounting(steps=-2), "accounting", "steps must be >= 0, but was -2"),
    (_accounting(steps=2.5), "accounting", "steps must be an int, but was 2.5"),
    (_accounting(sample_rate=1.5), "accounting", "sample_rate must be in (0, 1]"),
    (_accounting(sample_rate=0.0), "accounting", "sample_rate must be in (0, 1]"),
    (_accounting(noise_multiplier=math.nan), "accounting", "noise_multiplier must be a positive finite number"),
    (_accounting(noise_multiplier="1.0"), "accounting", "noise_multiplier must be a number, but was '1.0'"),
    (_accounting(budget=0.0), "accounting", "budget must be a positive finite epsilon"),
    (_accounting(budget=math.inf), "accounting", "budget must be a positive finite epsilon"),
    (_accounting(delta=1.0), "accounting", "delta must be in (0, 1)"),
    (_accounting(accountant="moments"), "accounting", "accountant must be one of"),
    (_accounting(spent=-1.0), "accounting", "spent must be a finite epsilon >= 0"),
    (_accounting(history_sigma=[1.0], history_rate=[], history_steps=[4]), "accounting", "unequal length"),
    (_accounting(history_sigma=[math.nan], history_rate=[0.25], history_steps=[4]), "accounting",
     "history entry 1 (round 1 of the site's ledger): noise_multiplier must be a positive finite number"),
    (_accounting(site="S02"), "accounting.site", "'S02' is not the hello's site 'S01'"),
]


@pytest.mark.parametrize(("reply", "field_name", "problem"), MALFORMED)
def test_a_malformed_hello_names_the_field_and_the_problem(reply: dict[str, dict[str, Any]], field_name: str,
                                                            problem: str) -> None:
    with pytest.raises(MalformedHelloError) as caught:
        parse_hello(7, reply, dp=True)
    assert caught.value.field_name == field_name
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"malformed hello: {field_name}: ")


def test_a_well_formed_hello_parses_and_non_dp_runs_need_no_accounting() -> None:
    hello = parse_hello(7, _reply(), dp=True)
    assert (hello.node, hello.site, hello.length) == (7, "S01", 57)
    assert hello.accounting == AccountingInputs("S01", 4, 0.25, 1.0, 1e-5, 8.0, "rdp")
    assert parse_hello(7, _reply(dp=False), dp=False).accounting is None


def test_each_unusable_node_is_excluded_with_its_reason_and_the_rest_take_part() -> None:
    replies: dict[int, Any] = {
        1: _reply("S01"), 2: _reply("S02"), 3: _reply("S03", length=-1),
        4: "<class 'flwr.clientapp.ClientAppException'>:<'PrivacyError: ledger row of round 1 used accountant prv'>",
        6: _reply("S06", key_id="x" * 64), 7: _reply("S07", layout_digest="e" * 64), 8: _reply("S01")}
    state: dict[str, Any] = {}
    admission = admit([1, 2, 3, 4, 5, 6, 7, 8], replies, key_id=KEY, encoding="ckks", dp=True, node_wait=300.0,
                      state=state)
    assert admission.ready == [1, 2] and admission.sites == ["S01", "S02"]
    assert sorted(admission.accounting) == ["S01", "S02"]
    assert state == {"layout_digest": DIGEST, "length": 57}  # the majority layout is the run's
    reasons = {e.node: (e.site, e.reason) for e in admission.excluded}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8]
    assert reasons[3] == ("S03", "malformed hello: hello.length: must be a positive int (parameters), but was -1")
    assert reasons[4][0] is None and reasons[4][1].startswith("error reply: ") and "accountant prv" in reasons[4][1]
    assert reasons[5] == (None, "no reply within node-wait (300 s)")
    assert reasons[6][0] == "S06" and "holds key xxxxxxxxxxxx…" in reasons[6][1] and "KEYDIR/site/" in reasons[6][1]
    assert reasons[7][0] == "S07" and "another model layout (eeeeeeeeeeee…, 57 parameters" in reasons[7][1]
    assert reasons[8] == ("S01", "site S01 is already taken by node 1; give each node its own site-id")
    assert str(Exclusion(5, None, "no reply")) == "node 5: no reply"
    assert str(admission.excluded[0]) == f"node 3 (site S03): {reasons[3][1]}"


def test_keys_are_checked_only_under_ckks_and_a_resumed_run_keeps_its_layout() -> None:
    replies: dict[int, Any] = {1: _reply("S01", dp=False, key_id="none"), 2: _reply("S02", dp=False, key_id="none")}
    assert admit([1, 2], replies, key_id="none", encoding="plain", dp=False, node_wait=1.0, state={}).ready == [1, 2]
    resumed = {"layout_digest": "e" * 64, "length": 57}  # the checkpoint's layout outvotes today's majority
    admission = admit([1, 2], replies, key_id="none", encoding="plain", dp=False, node_wait=1.0, state=resumed)
    assert admission.ready == [] and [e.node for e in admission.excluded] == [1, 2]
    assert resumed == {"layout_digest": "e" * 64, "length": 57}


def test_the_run_summary_lists_the_exclusions(tmp_path: Path) -> None:
    excluded = [Exclusion(3, "S03", "malformed hello: hello.length: missing").to_dict()]
    plan = plan_rounds(2, 1, {}, excluded=excluded)
    summary = write_run_summary(tmp_path, plan, 2, COMPLETED)
    assert json.loads((tmp_path / "run_summary.json").read_text())["excluded_sites"] == excluded == \
        summary["excluded_sites"]
    assert write_run_summary(tmp_path, plan_rounds(2, 1, {}), 2, COMPLETED)["excluded_sites"] == []


RAY_REASON = ("<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::ClientAppActor.run()\x1b[39m "
              "(pid=1)\n  File \"ray_actor.py\", line 65, in run\n    raise ClientAppException(str(ex)) from ex\n"
              "flwr.clientapp.client_app.ClientAppException: \nException ClientAppException occurred. Message: "
              "ledger row of round 1 for S04 used accountant='prv'; resume with the original settings.'>")


@pytest.mark.parametrize(("reason", "message"), [
    ("<class 'ZeroDivisionError'>:<'division by zero'>", "<class 'ZeroDivisionError'>:<'division by zero'>"),
    (RAY_REASON, "ledger row of round 1 for S04 used accountant='prv'; resume with the original settings."),
    ("Traceback (most recent call last):\n  File \"x.py\"\nValueError: bad\n\n", "ValueError: bad"),
    ("x" * 500, "x" * 399 + "…"),
])
def test_an_error_reply_keeps_the_sites_own_message(reason: str, message: str) -> None:
    from fl_server.handshake import error_message

    assert error_message(reason) == message
    admission = admit([1], {1: reason}, key_id="none", encoding="plain", dp=False, node_wait=1.0, state={})
    assert admission.excluded == [Exclusion(1, None, f"error reply: {message}")]
