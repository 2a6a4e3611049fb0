"""The model update and the global model on the wire, shared by sites and the coordinating centre.

ARCHITECTURE.md contract: an update is a list of serialized CKKS ciphertexts plus plaintext metadata
(example count, parameter-layout hash, round); never plaintext weights in DP+HE mode.

Weighted FedAvg without any multiplicative level: a site sends ``Enc(n_i · θ_i)`` (it scales its own
parameters by its example count ``n_i`` before encrypting) and ``n_i`` in the clear; the server adds the
ciphertexts and the counts; a site decrypts ``Σ n_i θ_i`` and divides by ``Σ n_i``. The result is exactly
the weighted FedAvg ``Σ (n_i / Σ n_j) θ_i``; the only plaintext the server learns is the example counts,
which FedAvg needs anyway.

``encoding`` is ``"ckks"`` (the product) or ``"plain"`` (float32 bytes, for the plaintext and DP-only
baselines of the benchmark; a run configured for HE refuses plain updates).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from privacy.ckks import CkksParameters, decrypt_vector, encrypt_vector
from privacy.exceptions import PackingError

if TYPE_CHECKING:
    import tenseal as ts

ENCODINGS = ("ckks", "plain")


class UpdateFormatError(PackingError):
    """A message does not carry a well-formed update or global model (missing or mistyped fields)."""


@dataclass(frozen=True)
class UpdateMeta:
    """Plaintext facts sent with a site's update (no patient-level value among them).

    ``epsilon``…``accountant`` are the site's ledger row for this round, so the server can keep the
    run's privacy ledger. ``train_loss`` exists for non-DP baselines only: sites leave it NaN, because a
    loss computed on the private training data carries no DP noise.
    """

    site: str
    round: int
    num_examples: int
    layout_digest: str
    length: int
    key_id: str
    encoding: str
    steps: int = 0
    sample_rate: float = 0.0
    noise_multiplier: float = 0.0
    delta: float = 0.0
    epsilon: float = 0.0
    accountant: str = "none"
    train_loss: float = math.nan


_META_TYPES: dict[str, type] = {"site": str, "round": int, "num_examples": int, "layout_digest": str, "length": int,
                                "key_id": str, "encoding": str, "steps": int, "sample_rate": float,
                                "noise_multiplier": float, "delta": float, "epsilon": float, "accountant": str,
                                "train_loss": float}


def _typed(record: Mapping[str, Any], name: str, kind: type) -> Any:
    if name not in record:
        raise UpdateFormatError(f"field {name!r} is missing; got fields {sorted(record)}.")
    value = record[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UpdateFormatError(f"field {name!r} must be {kind.__name__}, but was {type(value).__name__} {value!r}.")
    return value


def _chunks(record: Mapping[str, Any]) -> list[bytes]:
    chunks = record.get("chunks")
    if not isinstance(chunks, list) or not all(isinstance(c, bytes) for c in chunks):
        raise UpdateFormatError("field 'chunks' must be a list of bytes (serialized ciphertexts).")
    return list(chunks)


@dataclass(frozen=True)
class ModelUpdate:
    """What one site sends after a round: its weighted, encoded parameters and their metadata."""

    meta: UpdateMeta
    chunks: list[bytes]

    @property
    def nbytes(self) -> int:
        """Bytes of payload on the wire (ciphertexts only)."""
        return sum(len(c) for c in self.chunks)

    def to_record(self) -> dict[str, Any]:
        """Flat mapping of Flower ``ConfigRecord``-compatible values."""
        return {**asdict(self.meta), "chunks": list(self.chunks)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ModelUpdate:
        meta = UpdateMeta(**{name: _typed(record, name, kind) for name, kind in _META_TYPES.items()})
        return cls(meta=meta, chunks=_chunks(record))


@dataclass(frozen=True)
class GlobalModel:
    """The aggregate the server returns: ``Σ n_i θ_i`` (encoded) and ``Σ n_i`` in the clear."""

    round: int
    total_examples: int
    layout_digest: str
    length: int
    key_id: str
    encoding: str
    chunks: list[bytes]
    contributors: list[str] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(len(c) for c in self.chunks)

    def to_record(self) -> dict[str, Any]:
        return {"round": self.round, "total_examples": self.total_examples, "layout_digest": self.layout_digest,
                "length": self.length, "key_id": self.key_id, "encoding": self.encoding,
                "chunks": list(self.chunks), "contributors": list(self.contributors)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> GlobalModel:
        contributors = record.get("contributors", [])
        if not isinstance(contributors, list) or not all(isinstance(c, str) for c in contributors):
            raise UpdateFormatError("field 'contributors' must be a list of site ids.")
        return cls(round=_typed(record, "round", int), total_examples=_typed(record, "total_examples", int),
                   layout_digest=_typed(record, "layout_digest", str), length=_typed(record, "length", int),
                   key_id=_typed(record, "key_id", str), encoding=_typed(record, "encoding", str),
                   chunks=_chunks(record), contributors=list(contributors))


def encode_vector(vector: np.ndarray, encoding: str, ctx: ts.Context | None, params: CkksParameters) -> list[bytes]:
    """Encode a flat vector for the wire: CKKS ciphertexts, or float32 bytes for the plain baselines."""
    if encoding == "ckks":
        if ctx is None:
            raise PackingError("encoding 'ckks' needs the site's CKKS context, but none was given.")
        return encrypt_vector(ctx, vector, params)
    if encoding == "plain":
        if not np.all(np.isfinite(vector)):
            raise PackingError("vector holds non-finite values; refusing to send it.")
        return [np.asarray(vector, dtype="<f4").tobytes()]
    raise PackingError(f"encoding must be one of {ENCODINGS}, but was {encoding!r}.")


def decode_vector(chunks: Sequence[bytes], encoding: str, ctx: ts.Context | None, length: int) -> np.ndarray:
    """Inverse of :func:`encode_vector` (CKKS needs the secret context: sites only)."""
    if encoding == "ckks":
        if ctx is None:
            raise PackingError("encoding 'ckks' needs the site's CKKS context, but none was given.")
        return decrypt_vector(ctx, chunks, length)
    if encoding == "plain":
        vector = np.frombuffer(b"".join(chunks), dtype="<f4").astype(np.float64)
        if vector.size != length:
            raise PackingError(f"plain payload holds {vector.size} values, expected {length}.")
        return vector
    raise PackingError(f"encoding must be one of {ENCODINGS}, but was {encoding!r}.")
