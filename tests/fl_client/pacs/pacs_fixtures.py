"""Helpers of the PACS tests: free ports, a self-signed certificate, a TLS front, the running PACS's facts."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

SITE = "QY"
PACS_AET, LOCAL_AET = "HOSPPACS", "FEDRESP"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _plugin() -> Path | None:
    for candidate in ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so"):
        if Path(candidate).exists():
            return Path(candidate)
    return None


def require_orthanc() -> tuple[str, Path]:
    binary, plugin = shutil.which("Orthanc") or (Path("/usr/sbin/Orthanc").exists() and "/usr/sbin/Orthanc"), _plugin()
    if not binary or plugin is None:
        if os.environ.get("CI"):
            pytest.fail("Orthanc and its DICOMweb plugin are required on CI (make test installs orthanc, "
                        "orthanc-dicomweb with apt-get)")
        pytest.skip("Orthanc / orthanc-dicomweb not installed (apt-get install orthanc orthanc-dicomweb)")
    return str(binary), plugin


def self_signed(folder: Path) -> tuple[Path, Path]:
    """(PEM with key + certificate for the TLS server, PEM certificate for the client's CA bundle), 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    (folder / "server.pem").write_bytes(key_pem + cert_pem)
    (folder / "ca.pem").write_bytes(cert_pem)
    return folder / "server.pem", folder / "ca.pem"


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def tls_proxy(server_pem: Path, backend_port: int) -> tuple[socket.socket, int]:
    """An HTTPS front for ``127.0.0.1:backend_port`` (daemon threads; close the returned socket to stop)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_pem)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                secure = context.wrap_socket(client, server_side=True)
            except (OSError, ssl.SSLError):
                client.close()  # a client that refused our certificate (the TLS error test)
                continue
            try:
                backend = socket.create_connection(("127.0.0.1", backend_port))
            except OSError:  # Orthanc not up yet
                secure.close()
                continue
            for a, b in ((secure, backend), (backend, secure)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return listener, int(listener.getsockname()[1])


@dataclass(frozen=True)
class Pacs:
    """A running Orthanc: its DICOM port, HTTPS base URL, CA bundle, and the port its C-MOVE destination uses."""

    dicom_port: int
    url: str
    ca_bundle: Path
    scp_port: int
    folder: Path

    def config(self, **overrides: object) -> dict[str, object]:
        """A site PACS configuration (the dict form of the YAML file) pointing at this Orthanc."""
        base: dict[str, object] = {
            "site": SITE, "local": {"ae_title": LOCAL_AET, "host": "127.0.0.1", "port": self.scp_port},
            "dimse": {"ae_title": PACS_AET, "host": "127.0.0.1", "port": self.dicom_port, "retrieve": "move"},
            "dicomweb": {"url": f"{self.url}/dicom-web", "ca_bundle": str(self.ca_bundle)},
            "timeouts": {"connect_s": 3, "acse_s": 5, "dimse_s": 30, "network_s": 30, "http_s": 30},
            "concurrency": 2, "modalities": [],
        }
        base.update(overrides)
        return base
