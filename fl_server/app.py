"""Flower ServerApp (Message API, flwr 1.41): the coordinating centre's adapter.

``app`` is what ``flwr run`` loads (``[tool.flwr.app.components] serverapp``); :func:`make_server_app`
builds the same app around explicit settings for ``fedresponse train``. Either way :func:`serve` runs
the rounds: send the round's config and the *encrypted* global model to every node, collect replies
within the round timeout, hand them to :func:`fl_server.strategy.aggregate_round`, and persist what the
server holds (checkpoint, privacy ledger, per-round summary, audit entry). A restarted server resumes
from the last completed round's checkpoint. The server loads only a public context (no secret key).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from evaluation.atomic import write_text_atomic
from fl_server import pooling
from fl_server.checkpoint import load_latest, save_checkpoint
from fl_server.handshake import Admission, Reply, admit
from fl_server.planning import COMPLETED, FAILED, PRIVACY_BUDGET, RunPlan, plan_rounds, write_run_summary
from fl_server.strategy import NotEnoughUpdates, RoundReport, aggregate_round
from fl_server.validation import Expectation
from privacy.accounting import LedgerRow, append_ledger
from privacy.audit import AuditLog
from privacy.ckks import PUBLIC_CONTEXT, CkksParameters, KeyInfo, load_public_context
from privacy.update import GlobalModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    """Run-wide knobs of the coordinating centre (``[tool.flwr.app.config]``, kebab-case there)."""

    run_dir: Path
    num_rounds: int = 3
    mode: str = "dp-he"
    min_updates: int = 2
    min_nodes: int = 2
    round_timeout: float = 600.0
    node_wait: float = 300.0
    server_keys: Path | None = None
    epsilon_budget: float | None = None
    strict_rounds: bool = False
    cutoff_source: str = "protocol"

    @property
    def encoding(self) -> str:
        return "ckks" if self.mode in ("he", "dp-he") else "plain"

    @property
    def dp(self) -> bool:
        """The sites train with DP-SGD: each reports its accounting inputs and the rounds are planned within them."""
        return self.mode in ("dp", "dp-he")

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> ServerSettings:
        keys = str(config.get("server-keys", ""))
        return cls(run_dir=Path(str(config.get("run-dir", "runs/flwr"))),
                   num_rounds=int(config.get("num-server-rounds", 3)), mode=str(config.get("mode", "dp-he")),
                   min_updates=int(config.get("min-updates", 2)), min_nodes=int(config.get("min-nodes", 2)),
                   round_timeout=float(config.get("round-timeout", 600.0)),
                   node_wait=float(config.get("node-wait", 300.0)), server_keys=Path(keys) if keys else None,
                   epsilon_budget=float(config["epsilon-budget"]) if "epsilon-budget" in config else None,
                   strict_rounds=_flag(config.get("strict-rounds", False)),
                   cutoff_source=str(config.get("cutoff-source", "protocol")))


def _flag(value: Any) -> bool:
    """A boolean run-config value (TOML/YAML give a bool; a string from the command line reads true/false)."""
    if isinstance(value, str):
        if value.strip().lower() not in ("true", "false", "1", "0", ""):
            raise ValueError(f"strict-rounds must be true or false, but was {value!r}.")
        return value.strip().lower() in ("true", "1")
    return bool(value)


def _keys(settings: ServerSettings) -> tuple[Any, KeyInfo | None]:
    if settings.encoding != "ckks":
        return None, None
    if settings.server_keys is None:
        raise FileNotFoundError(f"mode {settings.mode!r} needs server-keys (KEYDIR/server) with {PUBLIC_CONTEXT.name}.")
    info = KeyInfo.read(settings.server_keys / "keyinfo.json")
    return load_public_context(settings.server_keys / PUBLIC_CONTEXT.name), info


def wait_for_nodes(grid: Grid, minimum: int, timeout: float) -> list[int]:
    """Node ids once at least ``minimum`` nodes are connected; raise ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < minimum:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} node(s) connected after {timeout:.0f} s; {minimum} are required. "
                               "Start the sites' SuperNodes or lower min-nodes.")
        time.sleep(0.5)
    return nodes


def handshake(grid: Grid, nodes: list[int], settings: ServerSettings, info: KeyInfo | None,
              state: dict[str, Any]) -> Admission:
    """Ask every node for its key id, model layout and privacy accounting inputs before any privacy is spent.

    Each reply is judged on its own (:func:`fl_server.handshake.admit`): the nodes that match take part (the
    majority layout is the run's layout), every other one is excluded with its reason — logged as a warning and
    kept for ``RUN/run_summary.json`` and the audit log. The replies also warm the sites' runtimes (imports,
    simulation workers), so that the first round's timeout measures training, not start-up.
    """
    content = RecordDict({"config": ConfigRecord({"round": 0, "mode": settings.mode})})
    messages = [Message(content, node, MessageType.QUERY, group_id="handshake") for node in nodes]
    replies: dict[int, Reply] = {}
    for reply in grid.send_and_receive(messages, timeout=settings.node_wait):
        replies[reply.metadata.src_node_id] = str(reply.error.reason) if reply.has_error() else \
            {name: dict(record) for name, record in reply.content.config_records.items()}
    admission = admit(nodes, replies, key_id=info.key_id if info else "none", encoding=settings.encoding,
                      dp=settings.dp, node_wait=settings.node_wait, state=state)
    for exclusion in admission.excluded:
        log.warning("handshake: %s; excluded", exclusion)
    log.info("handshake: %d of %d node(s) ready (%s)", len(admission.ready), len(nodes), ", ".join(admission.sites))
    return admission


def _round_content(round_: int, settings: ServerSettings, global_model: GlobalModel | None,
                   **extra: str) -> RecordDict:
    records: dict[str, Any] = {"config": ConfigRecord({"round": round_, "num-rounds": settings.num_rounds,
                                                       "mode": settings.mode, **extra})}
    if global_model is not None:
        records["global"] = ConfigRecord(global_model.to_record())
    return RecordDict(records)


def _collect(replies: list[Message]) -> tuple[list[dict[str, Any]], list[str]]:
    records, errors = [], []
    for reply in replies:
        if reply.has_error():
            errors.append(f"node {reply.metadata.src_node_id}: {reply.error.reason}")
        elif "update" in reply.content:
            records.append(dict(reply.content["update"]))
        else:
            errors.append(f"node {reply.metadata.src_node_id}: reply without an update")
    return records, errors


def _expectation(round_: int, state: dict[str, Any], settings: ServerSettings, info: KeyInfo | None) -> Expectation:
    """The round's expectations (the layout was fixed by the handshake and is kept in the checkpoint state)."""
    return Expectation(round=round_, layout_digest=str(state.get("layout_digest", "")),
                       length=int(state.get("length", 0)), key_id=info.key_id if info else "none",
                       encoding=settings.encoding, params=info.params if info else CkksParameters())


def _persist(settings: ServerSettings, report: RoundReport, state: dict[str, Any], audit: AuditLog) -> None:
    assert report.global_model is not None
    save_checkpoint(settings.run_dir, report.global_model, state)
    if report.ledger:
        rows = append_ledger(settings.run_dir / "privacy_ledger.csv", report.ledger)
        _write_privacy_summary(settings, rows)
    with (settings.run_dir / "rounds.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(report.summary()) + "\n")
    digest = hashlib.sha256(b"".join(report.global_model.chunks)).hexdigest()
    audit.append("fl.round.aggregated", why="federated round completed (ciphertexts added without any secret key)",
                 who="server", details={**report.summary(), "sha256_global": digest})


def _write_privacy_summary(settings: ServerSettings, rows: list[LedgerRow]) -> None:
    """``RUN/privacy.json``: ε spent (last ledger row) and the configured budget per site, for the report."""
    latest: dict[str, LedgerRow] = {}
    for row in sorted(rows, key=lambda r: r.round):
        latest[row.site] = row
    summary = {"delta": next(iter(latest.values())).delta if latest else None,
               "sites": {site: {"epsilon": row.epsilon, "budget": settings.epsilon_budget, "rounds": row.round,
                                "accountant": row.accountant} for site, row in sorted(latest.items())}}
    write_text_atomic(settings.run_dir / "privacy.json", lambda stream: json.dump(summary, stream, indent=1))


def _record_failed_round(settings: ServerSettings, exc: NotEnoughUpdates, audit: AuditLog) -> None:
    """Audit a round that got too few updates, and keep in the ledger the ε its updating sites spent.

    The sites whose valid update did arrive trained and released it (an encrypted update the server holds),
    whether or not it was aggregated: ``privacy_ledger.csv`` and ``privacy.json`` count that round for them, as
    their own ledgers do, so that the report does not understate what was spent.
    """
    audit.append("fl.round.failed", why=str(exc), who="server", details=exc.report.summary())
    if exc.report.ledger:
        _write_privacy_summary(settings, append_ledger(settings.run_dir / "privacy_ledger.csv", exc.report.ledger))


def _budget_refusals(errors: list[str]) -> list[str]:
    """The error replies that are a site's own budget refusal (``PrivacyBudgetExhausted``, the last defence)."""
    return [e for e in errors if "PrivacyBudgetExhausted" in e or "over the configured budget" in e]


def _record_stop(settings: ServerSettings, plan: RunPlan, completed: int, reason: str, audit: AuditLog,
                 detail: str = "") -> None:
    """``RUN/run_summary.json``, the stop sentence in ``RUN/privacy.json`` (read by the report), an audit entry."""
    privacy_path = settings.run_dir / "privacy.json"
    privacy = json.loads(privacy_path.read_text(encoding="utf-8")) if privacy_path.exists() else {"sites": {}}
    epsilon = {site: float(row["epsilon"]) for site, row in privacy.get("sites", {}).items()}
    summary = write_run_summary(settings.run_dir, plan, completed, reason, detail, epsilon)
    privacy.update(stop=summary["stop"], stop_reason=reason, rounds_configured=plan.configured,
                   rounds_completed=completed)
    write_text_atomic(privacy_path, lambda stream: json.dump(privacy, stream, indent=1))
    (log.warning if reason != COMPLETED else log.info)("run: %s", summary["stop"])
    audit.append("fl.run.stopped", why=summary["stop"], who="server",
                 details={k: summary[k] for k in ("rounds_configured", "rounds_planned", "rounds_completed",
                                                  "stop_reason", "affordable_rounds")})


def _start(grid: Grid, settings: ServerSettings, info: KeyInfo | None, audit: AuditLog) -> tuple[Any, list[int],
                                                                                               RunPlan]:
    """Checkpoint, handshake and the budget plan, all before any privacy is spent."""
    checkpoint = load_latest(settings.run_dir)
    state: dict[str, Any] = dict(checkpoint.state) if checkpoint else {}
    state["settings"] = {k: str(v) for k, v in asdict(settings).items()}
    first = checkpoint.round + 1 if checkpoint else 1
    if checkpoint:
        log.info("resuming after round %d from %s", checkpoint.round, settings.run_dir / "checkpoints")
        audit.append("fl.run.resumed", why="server restarted", who="server", details={"after_round": checkpoint.round})
    admission = handshake(grid, wait_for_nodes(grid, settings.min_nodes, settings.node_wait), settings, info, state)
    excluded = [e.to_dict() for e in admission.excluded]
    for exclusion in admission.excluded:
        audit.append("fl.site.excluded", why=exclusion.reason, who="server", details=exclusion.to_dict())
    if len(admission.ready) < settings.min_updates:
        listed = "; ".join(str(e) for e in admission.excluded) or "none"
        raise RuntimeError(f"only {len(admission.ready)} node(s) passed the handshake, {settings.min_updates} are "
                           f"needed (excluded: {listed}); check the sites' keys (KEYDIR/site) and model settings.")
    try:
        plan = plan_rounds(settings.num_rounds, first, admission.accounting, settings.strict_rounds, excluded)
    except RuntimeError as exc:
        audit.append("fl.run.refused", why=str(exc), who="server", details={"configured": settings.num_rounds})
        raise
    audit.append("fl.run.planned", why="rounds fixed before any privacy is spent (every site can afford them)",
                 who="server", details={"configured": plan.configured, "first_round": plan.first_round,
                                        "last_round": plan.last_round, "affordable_rounds": plan.affordable,
                                        "sites": admission.sites, "excluded_sites": excluded})
    return (checkpoint, state), admission.ready, plan


def serve(grid: Grid, settings: ServerSettings) -> list[RoundReport]:
    """Run (or resume) the federated rounds; returns the reports of the rounds run by this call.

    The run trains the rounds the budget plan allows (:mod:`fl_server.planning`); a round that fails because
    the sites refused it on their budget ends the run successfully at the previous round. Either way the last
    global model is evaluated and ``RUN/run_summary.json`` says how the run ended.
    """
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    ctx, info = _keys(settings)
    audit = AuditLog(settings.run_dir / "server_audit.jsonl")
    (checkpoint, state), nodes, plan = _start(grid, settings, info, audit)
    global_model = checkpoint.global_model if checkpoint else None
    completed = checkpoint.round if checkpoint else 0
    reason = PRIVACY_BUDGET if plan.shortened else COMPLETED
    reports = []
    for round_ in range(plan.first_round, plan.last_round + 1):
        began = time.perf_counter()
        content = _round_content(round_, settings, global_model)
        messages = [Message(content, node, MessageType.TRAIN, group_id=str(round_)) for node in nodes]
        records, errors = _collect(list(grid.send_and_receive(messages, timeout=settings.round_timeout)))
        try:
            report = aggregate_round(records, errors, len(nodes), _expectation(round_, state, settings, info), ctx,
                                     settings.min_updates)
        except NotEnoughUpdates as exc:
            _record_failed_round(settings, exc, audit)
            if global_model is None or not _budget_refusals(errors):
                _record_stop(settings, plan, completed, FAILED, audit, str(exc))
                raise
            reason = PRIVACY_BUDGET  # the sites' own last line of defence: end at the last completed round
            log.warning("round %d refused by site budgets (%s); ending after round %d", round_,
                        "; ".join(_budget_refusals(errors)), completed)
            break
        report.bytes_out = (global_model.nbytes if global_model else 0) * len(nodes)
        report.seconds = time.perf_counter() - began
        _persist(settings, report, state, audit)
        global_model, completed = report.global_model, round_
        reports.append(report)
    if global_model is not None:
        _final_evaluation(grid, settings, global_model, nodes, (ctx, info), audit)
    _record_stop(settings, plan, completed, reason, audit)
    return reports


def _evaluate_phase(grid: Grid, nodes: list[int], content: RecordDict,
                    settings: ServerSettings) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Send one evaluation phase to ``nodes``; return each replying site's records and the error descriptions."""
    messages = [Message(content, node, MessageType.EVALUATE, group_id="final") for node in nodes]
    replies: dict[str, dict[str, Any]] = {}
    errors = []
    for reply in grid.send_and_receive(messages, timeout=settings.round_timeout):
        if reply.has_error():
            errors.append(f"node {reply.metadata.src_node_id}: {reply.error.reason}")
            continue
        records = {name: dict(reply.content[name]) for name in ("metrics", "aggregate", "cutoffs")
                   if name in reply.content}
        site = str(records.get("metrics", {}).get("site", reply.metadata.src_node_id))
        replies[site] = {**records, "node": reply.metadata.src_node_id}
    return replies, errors


def _final_evaluation(grid: Grid, settings: ServerSettings, global_model: GlobalModel, nodes: list[int],
                      keys: tuple[Any, KeyInfo | None], audit: AuditLog) -> None:
    """Send the final encrypted model for local evaluation, then pool the sites' encrypted aggregates.

    ``RUN/site_metrics.json`` keeps the site-level scalars only (numbers, e.g. ``n``, ``n_test``).
    """
    content = _round_content(global_model.round, settings, global_model, phase="score")
    replies, errors = _evaluate_phase(grid, nodes, content, settings)
    metrics = {}
    for site, records in replies.items():
        scalars = {k: v for k, v in records.get("metrics", {}).items()
                   if k != "site" and isinstance(v, int | float) and not isinstance(v, bool)}
        # NaN (e.g. an AUC on a one-class local test set) is written as null: strict JSON
        metrics[site] = {k: (None if isinstance(v, float) and v != v else v) for k, v in scalars.items()}
    write_text_atomic(settings.run_dir / "site_metrics.json",
                      lambda stream: json.dump(metrics, stream, indent=1, sort_keys=True))
    log.info("final evaluation: %s", metrics)
    try:
        _pool_evaluation(grid, settings, global_model.round, replies, errors, keys, audit)
    except NotEnoughUpdates as exc:
        log.warning("pooled evaluation not written: %s", exc)
        audit.append("fl.evaluation.failed", why=str(exc), who="server", details=exc.report.summary())


def _first_phase(grid: Grid, settings: ServerSettings, round_: int, replies: dict[str, dict[str, Any]],
                 errors: list[str], keys: tuple[Any, KeyInfo | None], audit: AuditLog) -> tuple[RecordDict, list[int]]:
    """The ``pool`` phase's content and nodes: with the summed training histograms, or (protocol cut-offs) without.

    With ``cutoff-source: protocol`` (the default) the sites send no histogram and fix the same protocol
    cut-off; every site that scored its patients (``n_test`` among its scalars) is asked for its aggregate.
    """
    ctx, info = keys
    config = ConfigRecord({"round": round_, "mode": settings.mode, "phase": "pool"})
    histograms = [r["aggregate"] for r in replies.values() if "aggregate" in r]
    layout = pooling.majority_layout(histograms)
    if layout is None:
        scored = [site for site, r in sorted(replies.items()) if "n_test" in r.get("metrics", {})]
        if settings.cutoff_source != "protocol" or not scored:
            raise _NoPooling("the sites sent no evaluation aggregates (their task has no train/test split)")
        log.info("pooled evaluation: protocol cut-offs, no histogram released (%s)", ", ".join(scored))
        return RecordDict({"config": config}), [int(replies[site]["node"]) for site in scored]
    exp = pooling.expectation(round_, layout, info, settings.encoding)
    log.info("pooled evaluation, phase 'score': adding %d encrypted training-histogram vector(s)", len(histograms))
    first = aggregate_round(histograms, errors, len(replies) + len(errors), exp, ctx, settings.min_updates)
    assert first.global_model is not None
    audit.append("fl.evaluation.histograms_added", why="pooled cut-offs (encrypted training-patient histograms)",
                 who="server", details=first.summary())
    content = RecordDict({"config": config, "histograms": ConfigRecord(first.global_model.to_record())})
    return content, [int(replies[site]["node"]) for site in first.accepted]


class _NoPooling(Exception):  # noqa: N818 (a reason to skip, not an error)
    """The run has nothing to pool (logged, not raised to the caller)."""


def _pool_evaluation(grid: Grid, settings: ServerSettings, round_: int, replies: dict[str, dict[str, Any]],
                     errors: list[str], keys: tuple[Any, KeyInfo | None], audit: AuditLog) -> None:
    """Fix the cut-offs (protocol, or the sum of the encrypted training histograms), sum the held-out aggregates."""
    ctx, info = keys
    try:
        content, nodes = _first_phase(grid, settings, round_, replies, errors, keys, audit)
    except _NoPooling as why:
        log.info("%s: no pooled metrics", why)
        return
    second, second_errors = _evaluate_phase(grid, nodes, content, settings)
    cutoffs, refused = pooling.agreed_cutoffs({site: r.get("cutoffs", {}) for site, r in second.items()})
    for site, reason in refused.items():
        log.warning("pooled evaluation: aggregate of %s refused: %s", site, reason)
    records = [r["aggregate"] for site, r in second.items() if "aggregate" in r and site not in refused]
    exp = pooling.expectation(round_, pooling.aggregate_layout(), info, settings.encoding)
    log.info("pooled evaluation, phase 'pool': adding %d encrypted held-out aggregate(s)", len(records))
    report = aggregate_round(records, second_errors, len(nodes), exp, ctx, settings.min_updates)
    report.rejected.update(refused)
    assert report.global_model is not None
    source = pooling.CUTOFF_SOURCE if "histograms" in content else pooling.PROTOCOL_SOURCE
    pooling.save_pooled_aggregate(settings.run_dir, report.global_model, cutoffs, source)
    audit.append("fl.evaluation.pooled", why="pooled evaluation aggregate of the held-out patients (encrypted)",
                 who="server", details={**report.summary(), "cutoffs": cutoffs, "cutoff_source": source,
                                        "sha256": hashlib.sha256(b"".join(report.global_model.chunks)).hexdigest()})


def make_server_app(settings: ServerSettings) -> ServerApp:
    """A ServerApp bound to explicit settings (used by ``fedresponse train`` and the tests)."""
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        serve(grid, settings)

    return server


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for ``flwr run``: settings come from the run config."""
    logging.basicConfig(level=logging.INFO)
    serve(grid, ServerSettings.from_run_config(dict(context.run_config)))
