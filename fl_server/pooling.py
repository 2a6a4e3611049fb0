"""Pooled evaluation at the coordinating centre: add the sites' encrypted site-level vectors, nothing more.

Two sums after the last round (docs/federation.md "Pooled evaluation"), both through the model path
(:func:`fl_server.strategy.aggregate_round`: the same validation of layout hash, length, chunk count
and sizes, ceremony id, level and finite metadata, then ciphertext additions with the public context):

1. the sites' training-patient score histograms (phase ``score``); their layout is the one most sites
   report (:func:`majority_layout`, as the handshake fixes the model's), a site with another is refused;
   the encrypted sum goes back to the sites;
2. the sites' held-out aggregates (phase ``pool``) in :class:`evaluation.pooled.AggregateLayout`, sent
   with the cut-offs each site fixed; sites whose cut-offs differ from the majority's are refused
   (:func:`agreed_cutoffs`). The encrypted sum is written as ``RUN/pooled_aggregate.ckks`` with
   ``RUN/pooled_aggregate.json`` (layout digest, length, key id, chunk offsets, contributors, cut-offs)
   for a key holder; the cut-offs (not patient-level) also as ``RUN/cutoffs.json``.

The server never turns a ciphertext back into numbers: it has no secret key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evaluation.atomic import write_bytes_atomic, write_text_atomic
from evaluation.pooled import MODES, AggregateLayout
from fl_server.validation import Expectation
from privacy.ckks import CkksParameters, KeyInfo
from privacy.update import GlobalModel, UpdateFormatError

log = logging.getLogger(__name__)

AGGREGATE_BIN = "pooled_aggregate.ckks"
AGGREGATE_META = "pooled_aggregate.json"
CUTOFFS = "cutoffs.json"
CUTOFF_SOURCE = ("Youden on the sites' training patients: binned_youden on the sum of their encrypted score "
                 "histograms, fixed identically at every site")
PROTOCOL_SOURCE = ("protocol: a responder is called at a predicted response probability >= 0.5 (no patient data "
                   "used; fl_client.pooled_evaluation.PROTOCOL_CUTOFF)")


def majority_layout(records: Sequence[Mapping[str, Any]]) -> tuple[str, int] | None:
    """The ``(layout_digest, length)`` most records carry (ties: the first seen); None without records."""
    votes: dict[tuple[str, int], int] = {}
    for record in records:
        digest, length = record.get("layout_digest"), record.get("length")
        if isinstance(digest, str) and isinstance(length, int) and not isinstance(length, bool):
            votes[(digest, length)] = votes.get((digest, length), 0) + 1
    return max(votes.items(), key=lambda kv: kv[1])[0] if votes else None


def expectation(round_: int, layout: tuple[str, int], info: KeyInfo | None, encoding: str) -> Expectation:
    """What every site vector of one evaluation phase must match."""
    return Expectation(round=round_, layout_digest=layout[0], length=layout[1], key_id=info.key_id if info else "none",
                       encoding=encoding, params=info.params if info else CkksParameters())


def aggregate_layout() -> tuple[str, int]:
    """Digest and length of the held-out aggregate (:class:`evaluation.pooled.AggregateLayout`, the default)."""
    layout = AggregateLayout()
    return layout.digest, layout.size


def agreed_cutoffs(reported: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, str]]:
    """The cut-offs most sites report, and the sites that reported others (site → reason).

    Every site derives its cut-offs from the same pooled histograms, so they must agree to the bit; a
    disagreement means a site holds another key or runs other code, and its aggregate is not added.
    """
    parsed: dict[str, tuple[float, ...]] = {}
    refused: dict[str, str] = {}
    for site, values in reported.items():
        try:
            numbers = tuple(float(values[mode]) for mode in MODES)
        except (KeyError, TypeError, ValueError):
            refused[site] = f"cut-offs {dict(values)} lack a number for each of {list(MODES)}"
            continue
        if not all(0.0 <= v <= 1.0 for v in numbers):
            refused[site] = f"cut-offs {numbers} are not all in [0, 1]"
            continue
        parsed[site] = numbers
    if not parsed:
        return {}, refused
    votes: dict[tuple[float, ...], int] = {}
    for numbers in parsed.values():
        votes[numbers] = votes.get(numbers, 0) + 1
    agreed = max(votes.items(), key=lambda kv: kv[1])[0]
    for site, numbers in parsed.items():
        if numbers != agreed:
            refused[site] = f"cut-offs {numbers} differ from the other sites' {agreed}"
    return dict(zip(MODES, agreed, strict=True)), refused


def save_pooled_aggregate(run_dir: Path, summed: GlobalModel, cutoffs: Mapping[str, float],
                          source: str = CUTOFF_SOURCE) -> Path:
    """Write the encrypted pooled aggregate, its index and ``cutoffs.json`` (each file atomically).

    ``pooled_aggregate.ckks`` holds the serialized ciphertexts back to back; ``pooled_aggregate.json``
    (written last, so it never points at a partial blob) holds ``offsets`` and the aggregate's metadata.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    offsets, position = [], 0
    for chunk in summed.chunks:
        offsets.append([position, len(chunk)])
        position += len(chunk)
    write_bytes_atomic(run_dir / AGGREGATE_BIN, b"".join(summed.chunks))
    meta = {k: v for k, v in summed.to_record().items() if k != "chunks"}
    index = {"aggregate": meta, "offsets": offsets, "cutoffs": dict(cutoffs), "blob": AGGREGATE_BIN,
             "n_test": summed.total_examples}
    cutoff_doc = {**dict(cutoffs), "source": source, "sites": summed.contributors}
    write_text_atomic(run_dir / CUTOFFS, lambda stream: json.dump(cutoff_doc, stream, indent=2))
    write_text_atomic(run_dir / AGGREGATE_META, lambda stream: json.dump(index, stream, indent=1))
    log.info("pooled aggregate of %s written to %s (%d bytes, encrypted)", ", ".join(summed.contributors),
             run_dir / AGGREGATE_BIN, position)
    return run_dir / AGGREGATE_META


def load_pooled_aggregate(run_dir: Path) -> tuple[GlobalModel, dict[str, float]]:
    """The encrypted pooled aggregate and the cut-offs it was built at (for a key holder)."""
    try:
        index = json.loads((run_dir / AGGREGATE_META).read_text(encoding="utf-8"))
        blob = (run_dir / str(index["blob"])).read_bytes()
        chunks = [blob[start:start + size] for start, size in index["offsets"]]
        if sum(size for _, size in index["offsets"]) != len(blob):
            raise ValueError(f"{AGGREGATE_BIN} is {len(blob)} bytes, its index says otherwise")
        summed = GlobalModel.from_record({**index["aggregate"], "chunks": chunks})
        cutoffs = {mode: float(index["cutoffs"][mode]) for mode in MODES}
    except (OSError, ValueError, KeyError, TypeError, UpdateFormatError) as exc:
        raise FileNotFoundError(f"no readable pooled aggregate in {run_dir} ({exc}); the run's final evaluation did "
                                "not complete: re-run training or check RUN/server_audit.jsonl.") from exc
    return summed, cutoffs
