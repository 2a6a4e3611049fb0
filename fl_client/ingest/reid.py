"""The encrypted re-identification key, written outside the store for the PI.

Choice (documented in docs/site-setup.md): a passphrase held by the PI, stretched with scrypt
(n = 2**15, r = 8, p = 1, random 16-byte salt) into a Fernet key (AES-128-CBC + HMAC-SHA256,
authenticated). A passphrase rather than a PI public key because ingest must also *read* the key on
every re-run (the keyed-hash secret and date shifts must stay the same), and the PI (or the delegate
who types the passphrase) is present at ingest anyway; the store never sees the passphrase.

File format (JSON): ``{"format": "fedresponse-reid/1", "kdf": "scrypt", "n", "r", "p",
"salt": base64, "token": Fernet token}``. The decrypted payload is JSON:
``{"site": "S01", "secret": base64 (32 bytes, keyed-hash secret), "subjects": {USUBJID:
{"PatientID", "PatientName", "PatientBirthDate", "SUBJID", "DATE_SHIFT_DAYS"}}}``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from fl_client.exceptions import ReidKeyError

FORMAT = "fedresponse-reid/1"
SCRYPT_N = 2**15
PASSPHRASE_ENV = "FEDRESPONSE_REID_PASSPHRASE"
MIN_PASSPHRASE = 12


@dataclass
class ReidKey:
    """The decrypted key: the site's keyed-hash secret and the subject ↔ identity table."""

    site: str
    secret: bytes
    subjects: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def new(cls, site: str) -> ReidKey:
        """A fresh key with a 256-bit secret from the operating system's CSPRNG."""
        return cls(site=site, secret=secrets.token_bytes(32))


def _fernet(passphrase: str, salt: bytes, n: int) -> Fernet:
    if len(passphrase) < MIN_PASSPHRASE:
        raise ReidKeyError(f"the re-identification passphrase must have at least {MIN_PASSPHRASE} characters, "
                           f"but has {len(passphrase)}; choose a longer one (docs/site-setup.md)")
    raw = Scrypt(salt=salt, length=32, n=n, r=8, p=1).derive(passphrase.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(raw))


def save_key(key: ReidKey, path: Path, passphrase: str, *, n: int = SCRYPT_N) -> None:
    """Encrypt and write the key atomically (temp file, fsync, rename; mode 0600)."""
    salt = secrets.token_bytes(16)
    payload = json.dumps({"site": key.site, "secret": base64.b64encode(key.secret).decode(),
                          "subjects": key.subjects}, sort_keys=True).encode()
    token = _fernet(passphrase, salt, n).encrypt(payload)
    body = json.dumps({"format": FORMAT, "kdf": "scrypt", "n": n, "r": 8, "p": 1,
                       "salt": base64.b64encode(salt).decode(), "token": token.decode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_key(path: Path, passphrase: str) -> ReidKey:
    """Read and decrypt the key; :class:`ReidKeyError` on a wrong passphrase or a damaged file."""
    try:
        outer = json.loads(path.read_text(encoding="utf-8"))
        if outer.get("format") != FORMAT:
            raise ReidKeyError(f"{path} has format {outer.get('format')!r}, expected {FORMAT!r}")
        fernet = _fernet(passphrase, base64.b64decode(outer["salt"]), int(outer["n"]))
        inner = json.loads(fernet.decrypt(outer["token"].encode()))
    except InvalidToken as exc:
        raise ReidKeyError(f"cannot decrypt {path}: wrong passphrase or the file was altered") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise ReidKeyError(f"cannot read the re-identification key {path}: {exc}") from exc
    return ReidKey(site=inner["site"], secret=base64.b64decode(inner["secret"]), subjects=inner["subjects"])


def passphrase_from(passphrase_file: Path | None) -> str:
    """The passphrase from a file (first line) or from ``$FEDRESPONSE_REID_PASSPHRASE``."""
    if passphrase_file is not None:
        try:
            return passphrase_file.read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise ReidKeyError(f"cannot read a passphrase from {passphrase_file}: {exc}") from exc
    value = os.environ.get(PASSPHRASE_ENV)
    if not value:
        raise ReidKeyError(f"no re-identification passphrase: set ${PASSPHRASE_ENV} or pass --passphrase-file "
                           "(the PI holds it; see docs/site-setup.md)")
    return value
