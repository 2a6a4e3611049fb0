"""The handshake before round 1: every node's reply judged on its own, the unusable ones excluded with a reason.

The server asks each connected node (``MessageType.QUERY``, :func:`fl_server.app.handshake`) for its ceremony
``key_id``, its model layout (``layout_digest``, ``length``) and, in the DP modes, its
:class:`privacy.accounting.AccountingInputs`. :func:`admit` sorts the replies into the nodes that take part and
the :class:`Exclusion` of every other one — no reply within ``node-wait``, an error reply (its reason), a
malformed hello (:func:`parse_hello`: which field, what was wrong), a key of another ceremony, another model
layout, a site id another node already holds. One bad site costs the run that site, not the run: the server
goes on when at least ``min-updates`` nodes remain. The exclusions are written to ``RUN/run_summary.json``
(``excluded_sites``) and to the server audit log (``fl.site.excluded``).

Plain functions over the records' contents (mappings), so that a test can call them without a Flower grid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from privacy.accounting import AccountingInputs
from privacy.exceptions import PrivacyError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: a node's reply: its config records by name (``{"hello": {...}, "accounting": {...}}``) or an error reason
Reply = Mapping[str, Mapping[str, Any]] | str


class MalformedHelloError(ValueError):
    """A handshake reply whose ``hello`` or ``accounting`` record lacks a field or carries an unusable value."""

    def __init__(self, field_name: str, problem: str) -> None:
        self.field_name, self.problem = field_name, problem
        super().__init__(f"malformed hello: {field_name}: {problem}")


@dataclass(frozen=True)
class Hello:
    """One node's validated handshake reply."""

    node: int
    site: str
    key_id: str
    layout_digest: str
    length: int
    accounting: AccountingInputs | None = None


@dataclass(frozen=True)
class Exclusion:
    """A node left out of the run before any privacy is spent, and why (``site`` is None when it is unknown)."""

    node: int
    site: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The ``excluded_sites`` entry of ``RUN/run_summary.json``."""
        return {"node": self.node, "site": self.site, "reason": self.reason}

    def __str__(self) -> str:
        return f"node {self.node}" + (f" (site {self.site})" if self.site else "") + f": {self.reason}"


@dataclass
class Admission:
    """The handshake's outcome: the nodes that take part, their hellos, and every exclusion."""

    ready: list[int] = field(default_factory=list)
    hellos: dict[int, Hello] = field(default_factory=dict)
    excluded: list[Exclusion] = field(default_factory=list)

    @property
    def accounting(self) -> dict[str, AccountingInputs]:
        """Site → accounting inputs of the ready DP sites (the planner's input, :mod:`fl_server.planning`)."""
        return {h.site: h.accounting for n in self.ready if (h := self.hellos[n]).accounting is not None}

    @property
    def sites(self) -> list[str]:
        """The ready sites' ids, sorted."""
        return sorted(self.hellos[n].site for n in self.ready)


def _text(hello: Mapping[str, Any], name: str) -> str:
    value = hello.get(name)
    if not isinstance(value, str) or not value:
        problem = "missing" if name not in hello else f"must be non-empty text, but was {value!r}"
        raise MalformedHelloError(f"hello.{name}", problem)
    return value


def parse_hello(node: int, reply: Mapping[str, Mapping[str, Any]], dp: bool) -> Hello:
    """Validate one node's handshake records; raise :class:`MalformedHelloError` naming the field and the problem.

    Parameters
    ----------
    node : int
        The Flower node id the reply came from.
    reply : mapping
        The reply's config records by name: ``hello`` (``site``, ``key_id``, ``layout_digest``, ``length``) and,
        when ``dp``, ``accounting`` (:meth:`privacy.accounting.AccountingInputs.to_record`).
    dp : bool
        The run is a DP run: the accounting inputs are required (the rounds are planned within every budget).
    """
    if "hello" not in reply:
        held = ", ".join(sorted(reply)) or "no record"
        raise MalformedHelloError("hello", f"missing (the reply holds {held})")
    hello = reply["hello"]
    site, key_id, digest = _text(hello, "site"), _text(hello, "key_id"), _text(hello, "layout_digest")
    length = hello.get("length")
    if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
        problem = "missing" if "length" not in hello else f"must be a positive int (parameters), but was {length!r}"
        raise MalformedHelloError("hello.length", problem)
    accounting = None
    if dp:
        if "accounting" not in reply:
            raise MalformedHelloError("accounting", "missing in a DP run (the server plans the rounds within "
                                      "every site's budget)")
        try:
            accounting = AccountingInputs.from_record(reply["accounting"])
        except PrivacyError as exc:
            raise MalformedHelloError("accounting", str(exc).removeprefix("malformed accounting inputs: ")) from None
        if accounting.site != site:
            raise MalformedHelloError("accounting.site", f"{accounting.site!r} is not the hello's site {site!r}")
    return Hello(node, site, key_id, digest, length, accounting)


def error_message(reason: str, limit: int = 400) -> str:
    """The site's own message out of a Flower error reason (the simulation runtime wraps it in a Ray traceback).

    ``<class 'ZeroDivisionError'>:<'division by zero'>`` (a SuperNode) stays as it is; a traceback with
    ``... occurred. Message: <text>'>`` (the simulation runtime) becomes ``<text>``; colour codes are dropped
    and the result is cut at ``limit`` characters.
    """
    text = _ANSI.sub("", reason).strip()
    if "Message: " in text:
        text = text.rsplit("Message: ", 1)[1].strip().removesuffix("'>").strip()
    elif "\n" in text:
        text = [line for line in text.splitlines() if line.strip()][-1].strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _hellos(nodes: Sequence[int], replies: Mapping[int, Reply], dp: bool,
            node_wait: float) -> tuple[dict[int, Hello], list[Exclusion]]:
    """Parse every reply on its own: the well-formed hellos, and an exclusion for each node without one."""
    hellos: dict[int, Hello] = {}
    excluded: list[Exclusion] = []
    holders: dict[str, int] = {}
    for node in sorted(nodes):
        reply = replies.get(node)
        if reply is None:
            excluded.append(Exclusion(node, None, f"no reply within node-wait ({node_wait:g} s)"))
            continue
        if isinstance(reply, str):
            excluded.append(Exclusion(node, None, f"error reply: {error_message(reply)}"))
            continue
        try:
            hello = parse_hello(node, reply, dp)
        except MalformedHelloError as exc:
            site = reply.get("hello", {}).get("site")
            excluded.append(Exclusion(node, site if isinstance(site, str) and site else None, str(exc)))
            continue
        if hello.site in holders:
            excluded.append(Exclusion(node, hello.site, f"site {hello.site} is already taken by node "
                                                        f"{holders[hello.site]}; give each node its own site-id"))
            continue
        holders[hello.site] = node
        hellos[node] = hello
    return hellos, excluded


def admit(nodes: Sequence[int], replies: Mapping[int, Reply], *, key_id: str, encoding: str, dp: bool,
          node_wait: float, state: dict[str, Any]) -> Admission:
    """Sort the handshake replies into the run's nodes and the exclusions.

    Parameters
    ----------
    nodes : sequence of int
        The nodes asked.
    replies : mapping of node → Reply
        What each node answered (absent: no reply within ``node_wait`` seconds).
    key_id : str
        The ceremony the run uses (``"none"`` without CKKS); checked only when ``encoding`` is ``"ckks"``.
    encoding : {"ckks", "plain"}
    dp : bool
        A DP run: every site must send its accounting inputs.
    node_wait : float
        Seconds the server waited (for the "no reply" reason).
    state : dict
        The server's checkpoint state. Without a ``layout_digest`` (a new run) the majority layout of the nodes
        with the run's key becomes the run's (``layout_digest``, ``length`` set here); a resumed run keeps its own.
    """
    hellos, excluded = _hellos(nodes, replies, dp, node_wait)
    keyed = {n: h for n, h in hellos.items() if encoding != "ckks" or h.key_id == key_id}
    votes: dict[tuple[str, int], int] = {}
    for hello in keyed.values():
        votes[(hello.layout_digest, hello.length)] = votes.get((hello.layout_digest, hello.length), 0) + 1
    if votes and "layout_digest" not in state:
        (state["layout_digest"], state["length"]), _ = max(votes.items(), key=lambda kv: kv[1])
    admission = Admission(hellos=hellos)
    run_layout = (state.get("layout_digest"), state.get("length"))
    for node, hello in sorted(hellos.items()):
        if node not in keyed:
            reason = (f"holds key {hello.key_id[:12]}…, the run uses {key_id[:12]}…; install the current KEYDIR/site/ "
                      "from the PI")
        elif (hello.layout_digest, hello.length) != run_layout:
            reason = (f"runs another model layout ({hello.layout_digest[:12]}…, {hello.length} parameters; the run's "
                      f"is {str(run_layout[0])[:12]}…, {run_layout[1]}); run the same model settings at every site")
        else:
            admission.ready.append(node)
            continue
        excluded.append(Exclusion(node, hello.site, reason))
    admission.excluded = sorted(excluded, key=lambda e: e.node)
    return admission
