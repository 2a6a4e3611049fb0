"""The site's PACS connection as configuration (a YAML file validated by a typed model), not code.

Example (``site-pacs.yaml``)::

    site: QY
    local: {ae_title: FEDRESP_QY, host: 0.0.0.0, port: 11113}     # this node; its storage SCP (C-MOVE)
    dimse: {ae_title: HOSPPACS, host: pacs.hospital.local, port: 104, retrieve: move}
    dicomweb: {url: "https://pacs.hospital.local/dicom-web", ca_bundle: /etc/fedresponse/pacs-ca.pem}
    timeouts: {connect_s: 10, acse_s: 30, dimse_s: 120, network_s: 120, http_s: 120, http_attempts: 3}
    concurrency: 2
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evaluation.protocol import check_site_code
from fl_client.exceptions import PacsError


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _ae_title(value: str) -> str:
    """PS3.5 AE (an application entity title): 1-16 printable ASCII characters, no backslash, not all spaces."""
    if not (1 <= len(value) <= 16) or not value.strip() or "\\" in value or not value.isascii() \
            or not value.isprintable():
        raise ValueError(f"an AE title is 1-16 printable ASCII characters without '\\', but was {value!r}")
    return value.strip()


AeTitle = Annotated[str, AfterValidator(_ae_title)]


class LocalNode(_Strict):
    """The site's own DICOM node: its AE title, and where its storage SCP listens for C-MOVE."""

    ae_title: AeTitle = "FEDRESPONSE"
    host: str = "0.0.0.0"
    port: int = Field(default=11113, ge=1, le=65535)
    move_destination: AeTitle | None = None  # C-MOVE destination AE, when the storage SCP has its own title

    @property
    def destination(self) -> str:
        """The AE title the PACS sends C-MOVE results to (``move_destination`` or ``ae_title``)."""
        return self.move_destination or self.ae_title


class DimseNode(_Strict):
    """The hospital PACS over DICOM networking (Study Root query/retrieve)."""

    ae_title: AeTitle
    host: str
    port: int = Field(ge=1, le=65535)
    retrieve: Literal["move", "get"] = "move"


class DicomWebNode(_Strict):
    """The hospital PACS over DICOMweb (QIDO-RS / WADO-RS base URL), TLS by default."""

    url: str
    ca_bundle: Path | None = None
    client_cert: Path | None = None
    bearer_token_file: Path | None = None
    allow_plain_http: bool = False

    @model_validator(mode="after")
    def _tls(self) -> DicomWebNode:
        if not self.url.startswith(("https://", "http://")):
            raise ValueError(f"dicomweb.url must start with https://, but was {self.url!r}")
        if self.url.startswith("http://") and not self.allow_plain_http:
            raise ValueError(f"dicomweb.url {self.url!r} is plain HTTP: patient images would cross the network "
                             "unencrypted; use https:// (set allow_plain_http: true only on an isolated test bench)")
        for name in ("ca_bundle", "client_cert", "bearer_token_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"dicomweb.{name} {str(path)!r} is not a file; fix the path in the site configuration")
        return self


class Timeouts(_Strict):
    """Seconds: TCP connect, association negotiation, one DIMSE message, network silence, one HTTP request;
    ``http_attempts``: tries of one DICOMweb request (exponential back-off, 1 s, 2 s, ...) before giving up."""

    connect_s: float = Field(default=10.0, gt=0)
    acse_s: float = Field(default=30.0, gt=0)
    dimse_s: float = Field(default=120.0, gt=0)
    network_s: float = Field(default=120.0, gt=0)
    http_s: float = Field(default=120.0, gt=0)
    http_attempts: int = Field(default=3, ge=1, le=10)


class PacsConfig(_Strict):
    """One site's PACS configuration (see the module docstring for a full example)."""

    site: str
    local: LocalNode = LocalNode()
    dimse: DimseNode | None = None
    dicomweb: DicomWebNode | None = None
    timeouts: Timeouts = Timeouts()
    concurrency: int = Field(default=2, ge=1, le=16)
    margin_days: int = Field(default=0, ge=0, le=60)
    modalities: list[str] = Field(default_factory=list)

    @field_validator("site")
    @classmethod
    def _site(cls, value: str) -> str:
        return check_site_code(value)

    def route(self, name: str) -> DimseNode | DicomWebNode:
        """The configured node of route ``name`` (``dimse`` or ``dicomweb``)."""
        node = {"dimse": self.dimse, "dicomweb": self.dicomweb}.get(name, "unknown")
        if node == "unknown":
            raise PacsError(f"route must be 'dimse' or 'dicomweb', but was {name!r}")
        if node is None:
            raise PacsError(f"route {name!r} is not configured: add a '{name}:' section to the site's PACS "
                            "configuration (docs/pacs.md)")
        return node  # type: ignore[return-value]


def load_pacs_config(path: Path) -> PacsConfig:
    """Read and validate a site's PACS configuration; every problem is one :class:`PacsError` naming the field."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PacsError(f"cannot read the PACS configuration {path}: {exc}") from exc
    try:
        return PacsConfig.model_validate(data or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
        raise PacsError(f"invalid PACS configuration {path}: {problems}") from None
