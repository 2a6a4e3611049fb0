"""One round of homomorphic FedAvg at the coordinating centre, as a plain function over the replies.

The Flower adapter (:mod:`fl_server.app`) sends the round, collects what came back within the round
timeout and hands the records here. Malformed updates are rejected with a logged reason; error replies
(a site that crashed or refused, e.g. on an exhausted privacy budget) and silent sites (dropped or
straggling past the timeout) are counted; the round succeeds when at least ``min_updates`` valid
updates remain, else :class:`NotEnoughUpdates` is raised and the previous global model stays in force.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fl_server.aggregate import weighted_fedavg
from fl_server.validation import CheckedUpdate, Expectation, UpdateRejected, check_update
from privacy.accounting import LedgerRow
from privacy.update import GlobalModel

if TYPE_CHECKING:
    import tenseal as ts

log = logging.getLogger(__name__)


@dataclass
class RoundReport:
    """What happened in one round (written to ``RUN/rounds.jsonl`` and the server's audit log)."""

    round: int
    sent: int
    accepted: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    missing: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    train_loss: float = math.nan
    ledger: list[LedgerRow] = field(default_factory=list)
    global_model: GlobalModel | None = None
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable view (no ciphertexts)."""
        return {"round": self.round, "sent": self.sent, "accepted": self.accepted, "rejected": self.rejected,
                "errors": self.errors, "missing": self.missing, "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "train_loss": self.train_loss if math.isfinite(self.train_loss) else None,
                "seconds": round(self.seconds, 3),
                "epsilon": {r.site: r.epsilon for r in self.ledger}}


class NotEnoughUpdates(RuntimeError):  # noqa: N818 (reads as the event it reports)
    """Fewer valid updates than the configured minimum arrived in a round."""

    def __init__(self, report: RoundReport, minimum: int) -> None:
        self.report = report
        super().__init__(
            f"round {report.round}: {len(report.accepted)} valid update(s) of {report.sent} requested, the minimum is "
            f"{minimum} (rejected: {report.rejected or 'none'}; error replies: {len(report.errors)}; no reply: "
            f"{report.missing}). The last completed round's checkpoint is intact: fix the sites and resume the run."
        )


def _ledger_row(checked: CheckedUpdate) -> LedgerRow | None:
    meta = checked.update.meta
    if meta.accountant == "none":
        return None
    return LedgerRow(meta.site, meta.round, meta.steps, meta.sample_rate, meta.noise_multiplier, meta.delta,
                     meta.epsilon, meta.accountant)


def aggregate_round(
    records: Sequence[Mapping[str, Any]],
    errors: Sequence[str],
    sent: int,
    exp: Expectation,
    ctx: ts.Context | None,
    min_updates: int,
) -> RoundReport:
    """Validate the round's update records and aggregate the valid ones.

    Parameters
    ----------
    records : sequence of mapping
        Update records of the replies that carried content.
    errors : sequence of str
        Error replies, one description each.
    sent : int
        Number of sites asked; ``sent - len(records) - len(errors)`` did not reply in time.
    exp : Expectation
        What the round's updates must match.
    ctx : tenseal.Context or None
        The server's public context (no secret key).
    min_updates : int
        Fewest valid updates that make a round.
    """
    report = RoundReport(round=exp.round, sent=sent, errors=list(errors),
                         missing=max(0, sent - len(records) - len(errors)))
    accepted: list[CheckedUpdate] = []
    seen: set[str] = set()
    for record in records:
        try:
            checked = check_update(record, exp, ctx)
            if checked.update.meta.site in seen:
                raise UpdateRejected(checked.update.meta.site, "a second update from the same site in this round")
        except UpdateRejected as exc:
            log.warning("round %d: %s", exp.round, exc)
            report.rejected[exc.site] = exc.reason
            continue
        seen.add(checked.update.meta.site)
        accepted.append(checked)
        report.bytes_in += checked.update.nbytes
    report.accepted = sorted(seen)
    report.ledger = [row for row in map(_ledger_row, accepted) if row is not None]
    if len(accepted) < min_updates:
        raise NotEnoughUpdates(report, min_updates)
    losses = [c.update.meta.train_loss for c in accepted if math.isfinite(c.update.meta.train_loss)]
    report.train_loss = sum(losses) / len(losses) if losses else math.nan
    report.global_model = weighted_fedavg(accepted, exp)
    log.info("round %d: aggregated %d update(s) from %s (%d rejected, %d error(s), %d silent)", exp.round,
             len(accepted), ", ".join(report.accepted), len(report.rejected), len(report.errors), report.missing)
    return report
