"""Update validation at the coordinating centre: refuse a malformed update, never fail the round for it.

Every reply is checked before it is added: the metadata types and finiteness, the round, the
key-ceremony id, the parameter-layout hash and length, the encoding the run is configured for, the
number of chunks, each chunk's size, and (CKKS) that each chunk deserializes under the server's public
context at the last prime and holds the expected number of slots. A failed check raises
:class:`UpdateRejected` with the reason; the strategy logs it and carries on with the other updates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from privacy.ckks import CkksParameters, chunk_count, load_ciphertext
from privacy.exceptions import PrivacyError
from privacy.update import ModelUpdate

if TYPE_CHECKING:
    import tenseal as ts

log = logging.getLogger(__name__)


class UpdateRejected(ValueError):  # noqa: N818 (reads as the event it reports)
    """One site's update failed validation; ``reason`` says which check and the value seen."""

    def __init__(self, site: str, reason: str) -> None:
        self.site, self.reason = site, reason
        super().__init__(f"update from {site} rejected: {reason}")


@dataclass(frozen=True)
class Expectation:
    """What every update of one round must match."""

    round: int
    layout_digest: str
    length: int
    key_id: str
    encoding: str
    params: CkksParameters
    max_examples: int = 10_000_000


@dataclass
class CheckedUpdate:
    """An update that passed every check, with its ciphertexts already loaded (CKKS) for aggregation."""

    update: ModelUpdate
    vectors: list[Any]


def _check_meta(update: ModelUpdate, exp: Expectation) -> str | None:
    meta = update.meta
    numbers = {"sample_rate": meta.sample_rate, "noise_multiplier": meta.noise_multiplier, "delta": meta.delta,
               "epsilon": meta.epsilon}
    bad = {k: v for k, v in numbers.items() if not math.isfinite(v) or v < 0}
    checks = [
        (meta.round != exp.round, f"round {meta.round}, expected {exp.round}"),
        (meta.key_id != exp.key_id, f"key id {meta.key_id[:12]}…, this run uses {exp.key_id[:12]}… (other ceremony)"),
        (meta.layout_digest != exp.layout_digest,
         f"layout hash {meta.layout_digest[:12]}…, expected {exp.layout_digest[:12]}… (different model)"),
        (meta.length != exp.length, f"{meta.length} parameters, expected {exp.length}"),
        (meta.encoding != exp.encoding, f"encoding {meta.encoding!r}, the run requires {exp.encoding!r}"),
        (not 0 < meta.num_examples <= exp.max_examples,
         f"num_examples {meta.num_examples} outside 1..{exp.max_examples}"),
        (bool(bad), f"non-finite or negative privacy metadata {bad}"),
        (meta.steps < 0, f"negative step count {meta.steps}"),
    ]
    return next((reason for failed, reason in checks if failed), None)


def _check_ckks_chunks(update: ModelUpdate, exp: Expectation, ctx: ts.Context) -> list[Any]:
    params, site = exp.params, update.meta.site
    vectors = []
    for index, data in enumerate(update.chunks):
        if not 0 < len(data) <= params.max_ciphertext_bytes:
            raise UpdateRejected(site, f"chunk {index} is {len(data)} bytes, allowed 1..{params.max_ciphertext_bytes}")
        try:
            vector = load_ciphertext(ctx, data)
        except PrivacyError as exc:
            raise UpdateRejected(site, f"chunk {index} does not load under the run's context: {exc}") from None
        expected_slots = min(params.slots, exp.length - index * params.slots)
        if vector.size() != expected_slots:
            raise UpdateRejected(site, f"chunk {index} holds {vector.size()} values, expected {expected_slots}")
        level = vector.ciphertext()[0].coeff_modulus_size()
        if level != 1:
            raise UpdateRejected(site, f"chunk {index} is at a level with {level} primes; sites send at the last prime")
        vectors.append(vector)
    return vectors


def check_update(record: Mapping[str, Any], exp: Expectation, ctx: ts.Context | None) -> CheckedUpdate:
    """Validate one reply's update record; raise :class:`UpdateRejected` with the first failed check.

    Parameters
    ----------
    record : mapping
        The flat update record (see :meth:`privacy.update.ModelUpdate.to_record`).
    exp : Expectation
        The round's expectations.
    ctx : tenseal.Context or None
        The server's public context (needed for ``encoding == "ckks"``).
    """
    site = str(record.get("site", "?"))
    try:
        update = ModelUpdate.from_record(record)
    except PrivacyError as exc:
        raise UpdateRejected(site, str(exc)) from None
    reason = _check_meta(update, exp)
    if reason:
        raise UpdateRejected(site, reason)
    expected_chunks = chunk_count(exp.length, exp.params) if exp.encoding == "ckks" else 1
    if len(update.chunks) != expected_chunks:
        raise UpdateRejected(site, f"{len(update.chunks)} chunks, expected {expected_chunks}")
    if exp.encoding == "plain":
        if len(update.chunks[0]) != 4 * exp.length:
            raise UpdateRejected(site, f"plain payload of {len(update.chunks[0])} bytes, expected {4 * exp.length}")
        return CheckedUpdate(update, [])
    if ctx is None:
        raise UpdateRejected(site, "the server has no CKKS context for a ckks run")
    return CheckedUpdate(update, _check_ckks_chunks(update, exp, ctx))
