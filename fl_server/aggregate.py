"""Weighted FedAvg on what the sites sent: ciphertext additions the server cannot read.

Each validated update carries ``Enc(n_i · θ_i)`` and ``n_i`` (see :mod:`privacy.update`). The server
adds the ciphertexts chunk by chunk and the counts in the clear; the sites turn the sum into the
weighted mean. No multiplicative level is consumed, so the updates can arrive at the last prime.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fl_server.validation import CheckedUpdate, Expectation
from privacy.update import GlobalModel


def add_ckks(updates: Sequence[CheckedUpdate]) -> list[bytes]:
    """Chunk-wise homomorphic sum of already-loaded ciphertext vectors; returns serialized sums.

    The first update's loaded vectors are used as accumulators (TenSEAL refuses ``copy`` without a
    secret key); they are not used afterwards.
    """
    sums = list(updates[0].vectors)
    for checked in updates[1:]:
        for total, vector in zip(sums, checked.vectors, strict=True):
            total.add_(vector)
    return [total.serialize() for total in sums]


def add_plain(updates: Sequence[CheckedUpdate]) -> list[bytes]:
    """Sum of float32 payloads (plaintext and DP-only baselines), accumulated in float64."""
    total = np.zeros(len(updates[0].update.chunks[0]) // 4, dtype=np.float64)
    for checked in updates:
        total += np.frombuffer(checked.update.chunks[0], dtype="<f4")
    return [total.astype("<f4").tobytes()]


def weighted_fedavg(updates: Sequence[CheckedUpdate], exp: Expectation) -> GlobalModel:
    """Aggregate validated updates of one round into the (encoded) global model.

    Parameters
    ----------
    updates : sequence of CheckedUpdate
        At least one; all matched ``exp``.
    exp : Expectation
        The round's expectations (layout, key, encoding).

    Returns
    -------
    GlobalModel
        ``Σ n_i θ_i`` (ciphertexts for ``ckks``) with ``total_examples = Σ n_i`` and the contributing sites.
    """
    if not updates:
        raise ValueError("weighted_fedavg needs at least one validated update, but got none.")
    chunks = add_ckks(updates) if exp.encoding == "ckks" else add_plain(updates)
    return GlobalModel(
        round=exp.round,
        total_examples=sum(u.update.meta.num_examples for u in updates),
        layout_digest=exp.layout_digest,
        length=exp.length,
        key_id=exp.key_id,
        encoding=exp.encoding,
        chunks=chunks,
        contributors=sorted(u.update.meta.site for u in updates),
    )
