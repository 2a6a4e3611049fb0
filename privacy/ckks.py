"""CKKS keys and the one shared packing of parameter vectors into ciphertexts (TenSEAL).

Sites and the coordinating centre must agree, bit for bit, on how a model's parameters become
ciphertexts; this module is the only place that says how:

1. :class:`ParameterLayout` fixes the order, names and shapes of the parameters and hashes them
   (``digest``), so that an update built for another model is recognised and refused.
2. :func:`encrypt_vector` cuts the flat float64 vector into chunks of ``N / 2`` slots, encrypts each
   chunk as a CKKS vector, brings it down to the last prime of the modulus chain (the only level an
   addition-only aggregation needs; it cuts the bytes on the wire) and serializes it.
3. The server deserializes with a context that holds no secret key (:func:`load_public_context`
   refuses anything else), adds, and serializes again; sites decrypt with :func:`decrypt_vector`.

Parameters (:class:`CkksParameters`, defaults documented in ``docs/key-ceremony.md``): ring degree
N = 8192, coefficient modulus ``(60, 60)`` bits (one data prime plus the special prime; 120 bits in
all), scale 2^40. The HE standard (Albrecht et al., *Homomorphic Encryption Security Standard*,
HomomorphicEncryption.org 2018, Table 1, ternary secret, classical attacks) allows at most 218 bits of
modulus for 128-bit security at N = 8192; 120 bits is also under the 152-bit bound for 192-bit security.
Aggregation only adds ciphertexts, so no multiplicative level is needed; a longer chain such as
``(60, 40, 40, 60)`` is accepted and its ciphertexts are brought down to the last prime before sending.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from privacy.exceptions import InsecureParametersError, KeyFileError, PackingError, SecretKeyPresentError

if TYPE_CHECKING:  # tenseal is imported lazily: importing privacy must stay cheap
    import tenseal as ts

log = logging.getLogger(__name__)

#: Largest total coefficient-modulus size (bits) for 128-bit classical security, ternary secret,
#: per ring degree N (HE standard 2018, Table 1; the same bounds SEAL enforces by default).
HE_STANDARD_MAX_LOGQ_128: dict[int, int] = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}

SECRET_CONTEXT = Path("site") / "secret.ctx"
PUBLIC_CONTEXT = Path("server") / "public.ctx"
KEY_INFO = "keyinfo.json"


@dataclass(frozen=True)
class CkksParameters:
    """CKKS encryption parameters shared by every party of a federation.

    Attributes
    ----------
    poly_modulus_degree : int
        Ring degree N (a power of two); a ciphertext holds ``N / 2`` real slots.
    coeff_mod_bit_sizes : tuple of int
        Bit sizes of the coefficient-modulus primes; the last one is SEAL's special (key-switching) prime.
    scale_bits : int
        log2 of the CKKS scale (fixed-point precision of the encoded values).
    max_sites : int
        Largest number of updates that may be summed; bounds the range a single update may use.
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 60)
    scale_bits: int = 40
    max_sites: int = 32

    def __post_init__(self) -> None:
        n = self.poly_modulus_degree
        if n not in HE_STANDARD_MAX_LOGQ_128:
            raise InsecureParametersError(
                f"poly_modulus_degree must be one of {sorted(HE_STANDARD_MAX_LOGQ_128)}, but was {n!r}."
            )
        total = sum(self.coeff_mod_bit_sizes)
        if total > HE_STANDARD_MAX_LOGQ_128[n]:
            raise InsecureParametersError(
                f"coefficient modulus of {total} bits at N={n} is below 128-bit security (HE standard allows at "
                f"most {HE_STANDARD_MAX_LOGQ_128[n]} bits); use fewer/smaller primes or a larger N."
            )
        if len(self.coeff_mod_bit_sizes) < 2:
            raise InsecureParametersError(
                f"coeff_mod_bit_sizes needs a data prime and the special prime, but was {self.coeff_mod_bit_sizes!r}."
            )
        if self.coeff_mod_bit_sizes[0] <= self.scale_bits + 8:
            raise InsecureParametersError(
                f"the first prime ({self.coeff_mod_bit_sizes[0]} bits) leaves no room above the scale "
                f"(2^{self.scale_bits}); make it at least scale_bits + 9 bits."
            )
        if self.max_sites < 1:
            raise InsecureParametersError(f"max_sites must be at least 1, but was {self.max_sites!r}.")

    @property
    def slots(self) -> int:
        """Real values per ciphertext (``N / 2``)."""
        return self.poly_modulus_degree // 2

    @property
    def sum_bound(self) -> float:
        """Largest magnitude a *sum* of updates may reach at the last prime (2 bits of margin)."""
        return float(2 ** (self.coeff_mod_bit_sizes[0] - self.scale_bits - 2))

    @property
    def value_bound(self) -> float:
        """Largest magnitude one update's entries may have so that ``max_sites`` of them still sum safely."""
        return self.sum_bound / self.max_sites

    @property
    def max_ciphertext_bytes(self) -> int:
        """Upper bound on one serialized ciphertext at the last prime (2 polynomials, 8-byte words, + slack)."""
        return 2 * self.poly_modulus_degree * 8 + 64 * 1024

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CkksParameters:
        return cls(
            poly_modulus_degree=int(data["poly_modulus_degree"]),
            coeff_mod_bit_sizes=tuple(int(b) for b in data["coeff_mod_bit_sizes"]),
            scale_bits=int(data["scale_bits"]),
            max_sites=int(data.get("max_sites", 32)),
        )


@dataclass(frozen=True)
class KeyInfo:
    """The non-secret facts of one key ceremony, written next to both context files.

    ``key_id`` is random per ceremony; updates carry it so the server refuses ciphertexts made under
    another ceremony's key before trying to add them.
    """

    key_id: str
    params: CkksParameters
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def to_json(self) -> str:
        return json.dumps({"key_id": self.key_id, "params": self.params.to_json(), "created": self.created}, indent=2)

    @classmethod
    def read(cls, path: Path) -> KeyInfo:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(key_id=str(data["key_id"]), params=CkksParameters.from_json(data["params"]),
                       created=str(data["created"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyFileError(f"cannot read key info {path}: {exc}. Re-run `fedresponse keys init`.") from exc


def create_context(params: CkksParameters) -> ts.Context:
    """Create a fresh CKKS context with a new secret key (symmetric encryption: only sites encrypt).

    No Galois or relinearisation keys are kept: aggregation only adds, and leaving them out keeps the
    server's context tiny (the parameters only; ≈ 35 MB with Galois keys). Symmetric encryption is
    2-4× faster than public-key encryption and only key holders (the sites) ever encrypt.
    """
    import tenseal as ts

    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=params.poly_modulus_degree,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
    )
    ctx.global_scale = 2.0**params.scale_bits
    return ctx


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_key_files(out: Path, params: CkksParameters | None = None, *, overwrite: bool = False) -> KeyInfo:
    """Run the key ceremony: write ``out/site/secret.ctx`` (0600) and ``out/server/public.ctx``.

    Parameters
    ----------
    out : Path
        Key directory; ``site/`` goes to every hospital (offline), ``server/`` to the coordinating centre.
    params : CkksParameters, optional
        Encryption parameters (defaults documented in the module docstring).
    overwrite : bool
        Replace existing key files. Off by default: a new key makes every earlier ciphertext unreadable.

    Returns
    -------
    KeyInfo
        The ceremony's id and parameters (also written as ``keyinfo.json`` beside both contexts).
    """
    params = params or CkksParameters()
    secret_path, public_path = out / SECRET_CONTEXT, out / PUBLIC_CONTEXT
    if not overwrite and (secret_path.exists() or public_path.exists()):
        raise KeyFileError(
            f"key files already exist under {out}; a new ceremony would orphan every ciphertext made with them. "
            "Choose another --out, or pass --overwrite when you mean it."
        )
    ctx = create_context(params)
    secret_bytes = ctx.serialize(save_public_key=True, save_secret_key=True, save_galois_keys=False,
                                 save_relin_keys=False)
    # Symmetric contexts have no public key; the server's copy is the parameters alone. It can add
    # ciphertexts but can neither encrypt nor decrypt.
    public_bytes = ctx.serialize(save_public_key=False, save_secret_key=False, save_galois_keys=False,
                                 save_relin_keys=False)
    info = KeyInfo(key_id=secrets.token_hex(16), params=params)
    _atomic_write(secret_path, secret_bytes, 0o600)
    _atomic_write(secret_path.parent / KEY_INFO, info.to_json().encode("utf-8"), 0o644)
    _atomic_write(public_path, public_bytes, 0o644)
    _atomic_write(public_path.parent / KEY_INFO, info.to_json().encode("utf-8"), 0o644)
    log.info("key ceremony %s: secret context %s (%d bytes), public context %s (%d bytes)",
             info.key_id, secret_path, len(secret_bytes), public_path, len(public_bytes))
    return info


def _read_context(path: Path) -> ts.Context:
    import tenseal as ts

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read CKKS context {path}: {exc}. Check the --keys directory.") from exc
    try:
        return ts.context_from(data)
    except Exception as exc:  # TenSEAL raises bare ValueError/RuntimeError from C++
        raise KeyFileError(f"{path} is not a serialized TenSEAL context ({exc}).") from exc


def load_site_context(path: Path) -> ts.Context:
    """Load the sites' secret context, refusing a file that others than its owner can read.

    Raises
    ------
    KeyFileError
        Missing, unreadable, group/other-readable (``chmod 600`` fixes it) or without a secret key.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise KeyFileError(f"cannot stat site key {path}: {exc}. Copy KEYDIR/site/ from the PI's medium.") from exc
    if mode & 0o077:
        raise KeyFileError(f"site key {path} has mode {oct(mode)}; it must be readable by its owner only: "
                           f"run `chmod 600 {path}`.")
    ctx = _read_context(path)
    if not ctx.has_secret_key():
        raise KeyFileError(f"{path} holds no secret key; sites need KEYDIR/site/secret.ctx, not the server's file.")
    return ctx


def load_public_context(path: Path) -> ts.Context:
    """Load the coordinating centre's context; it must not hold a secret key.

    Raises
    ------
    SecretKeyPresentError
        The file carries the secret key (someone copied the site file to the server): nothing is loaded.
    """
    ctx = _read_context(path)
    return ensure_public(ctx, source=str(path))


def public_context_from_bytes(data: bytes, *, source: str = "<bytes>") -> ts.Context:
    """Deserialize a public context (for example one shipped inside a Flower run) and check it is public."""
    import tenseal as ts

    try:
        ctx = ts.context_from(data)
    except Exception as exc:
        raise KeyFileError(f"{source} is not a serialized TenSEAL context ({exc}).") from exc
    return ensure_public(ctx, source=source)


def ensure_public(ctx: ts.Context, *, source: str) -> ts.Context:
    """Return ``ctx`` if it holds no secret key, else raise :class:`SecretKeyPresentError`."""
    if ctx.has_secret_key():
        raise SecretKeyPresentError(
            f"{source} carries the CKKS secret key; the coordinating centre must only ever hold "
            "KEYDIR/server/public.ctx. Remove this file from the server and re-check the key distribution."
        )
    return ctx


@dataclass(frozen=True)
class ParameterLayout:
    """Names and shapes of the parameters, in packing order.

    Attributes
    ----------
    entries : tuple of (str, tuple of int)
        ``(name, shape)`` per tensor, in the order they are concatenated.
    """

    entries: tuple[tuple[str, tuple[int, ...]], ...]

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any]) -> ParameterLayout:
        """Layout of a name → array mapping (for example a model's ``named_parameters``), in its order."""
        return cls(tuple((name, tuple(int(d) for d in np.shape(a))) for name, a in arrays.items()))

    @property
    def size(self) -> int:
        """Total number of scalar parameters."""
        return sum(math.prod(shape) for _, shape in self.entries)

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of the layout; equal digests mean interchangeable updates."""
        payload = json.dumps([[name, list(shape)] for name, shape in self.entries], separators=(",", ":"))
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def flatten(self, arrays: Mapping[str, Any]) -> np.ndarray:
        """Concatenate arrays in layout order into one float64 vector of length :attr:`size`."""
        parts = []
        for name, shape in self.entries:
            if name not in arrays:
                raise PackingError(f"parameter {name!r} of the layout is missing; got {sorted(arrays)[:5]}...")
            value = np.asarray(arrays[name], dtype=np.float64)
            if value.shape != shape:
                raise PackingError(f"parameter {name!r} has shape {value.shape}, the layout says {shape}.")
            parts.append(value.ravel())
        return np.concatenate(parts) if parts else np.zeros(0)

    def unflatten(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """Split a flat vector back into named arrays (inverse of :meth:`flatten`)."""
        if vector.shape != (self.size,):
            raise PackingError(f"vector has shape {vector.shape}, the layout needs ({self.size},).")
        out, start = {}, 0
        for name, shape in self.entries:
            count = math.prod(shape)
            out[name] = vector[start:start + count].reshape(shape)
            start += count
        return out


def chunk_count(length: int, params: CkksParameters) -> int:
    """Number of ciphertexts that carry a vector of ``length`` values."""
    return max(1, math.ceil(length / params.slots))


def to_last_level(vector: ts.CKKSVector) -> ts.CKKSVector:
    """Bring a ciphertext down to the last prime of the chain, in place, and return it.

    TenSEAL exposes no ``mod_switch`` on vectors, so each extra level is dropped by multiplying with
    the plaintext 1.0 and rescaling (one prime per step; the value is unchanged up to CKKS noise).
    A fresh ciphertext of a ``(data, special)`` chain is already there and is returned untouched.
    """
    while vector.ciphertext()[0].coeff_modulus_size() > 1:
        vector.mul_(1.0)
    return vector


def encrypt_vector(ctx: ts.Context, vector: np.ndarray, params: CkksParameters) -> list[bytes]:
    """Encrypt a flat parameter vector into serialized ciphertexts at the last prime.

    Parameters
    ----------
    ctx : tenseal.Context
        A context holding the secret key (sites only).
    vector : ndarray, shape (P,)
        Finite values with ``|v| <= params.value_bound``.
    params : CkksParameters
        The ceremony's parameters (slot count, range).

    Returns
    -------
    list of bytes
        ``chunk_count(P)`` serialized CKKS vectors; the last one may hold fewer than ``N / 2`` values.
    """
    import tenseal as ts

    vector = np.asarray(vector, dtype=np.float64)
    if vector.ndim != 1:
        raise PackingError(f"expected a flat vector, got shape {vector.shape}.")
    if not np.all(np.isfinite(vector)):
        raise PackingError(f"vector holds {int(np.sum(~np.isfinite(vector)))} non-finite values; refusing to encrypt.")
    peak = float(np.max(np.abs(vector))) if vector.size else 0.0
    if peak > params.value_bound:
        raise PackingError(
            f"largest |value| {peak:.4g} exceeds the encodable bound {params.value_bound:.4g} for up to "
            f"{params.max_sites} sites; lower max_sites or check the update for divergence."
        )
    out = []
    for start in range(0, max(vector.size, 1), params.slots):
        chunk = vector[start:start + params.slots]
        enc = to_last_level(ts.ckks_vector(ctx, chunk.tolist()))
        out.append(enc.serialize())
    return out


def load_ciphertext(ctx: ts.Context, data: bytes) -> ts.CKKSVector:
    """Deserialize one ciphertext under ``ctx`` (public or secret)."""
    import tenseal as ts

    try:
        return ts.ckks_vector_from(ctx, data)
    except Exception as exc:
        raise PackingError(f"bytes are not a CKKS vector for this context ({exc}).") from exc


def decrypt_vector(ctx: ts.Context, chunks: Sequence[bytes], length: int) -> np.ndarray:
    """Decrypt serialized ciphertexts into a flat float64 vector of ``length`` values (sites only)."""
    values: list[float] = []
    for data in chunks:
        values.extend(load_ciphertext(ctx, data).decrypt())
    if len(values) < length:
        raise PackingError(f"ciphertexts hold {len(values)} values, expected at least {length}.")
    return np.asarray(values[:length], dtype=np.float64)
