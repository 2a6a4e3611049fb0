"""``fedresponse deploy``: provision TLS certificates and SuperNode keys, start SuperLink / SuperNodes.

``deploy provision --sites N --out DIR`` writes (docs/deployment.md):

* ``DIR/ca/ca.crt`` (+ ``ca.key``, 0600, stays with the operator): a private CA;
* ``DIR/superlink/server.crt``, ``server.key`` (0600): the SuperLink's TLS certificate, signed by the CA,
  with the given host names / IPs as subject alternative names;
* ``DIR/sites/<SITE>/node.key`` (0600, OpenSSH EC P-384) and ``node.pub``: each SuperNode's
  authentication key pair; the public keys are registered at the SuperLink with
  ``flwr supernode register`` and only registered nodes may connect (``--enable-supernode-auth``).

``deploy superlink`` / ``deploy supernode`` start the Flower processes with those files and refuse to
start without TLS unless ``--insecure`` is given explicitly.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import typer
from rich.console import Console

deploy_app = typer.Typer(help="Deployment: certificates, node keys, SuperLink and SuperNodes.", no_args_is_help=True)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _san(hosts: list[str]) -> list[object]:
    from cryptography import x509

    names: list[object] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def provision(out: Path, sites: list[str], hosts: list[str], days: int = 365) -> dict[str, Path]:
    """Create the CA, the SuperLink certificate and one authentication key pair per site.

    Returns
    -------
    dict
        ``ca``, ``server_cert``, ``server_key`` and ``<SITE>`` → the site's folder.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedresponse federation CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .sign(ca_key, hashes.SHA384()))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
                   .issuer_name(ca_name).public_key(server_key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=days))
                   .add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)  # type: ignore[arg-type]
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .sign(ca_key, hashes.SHA384()))
    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    paths = {"ca": out / "ca" / "ca.crt", "server_cert": out / "superlink" / "server.crt",
             "server_key": out / "superlink" / "server.key"}
    _write(paths["ca"], ca_cert.public_bytes(pem), 0o644)
    _write(out / "ca" / "ca.key", ca_key.private_bytes(pem, pkcs8, none), 0o600)
    _write(paths["server_cert"], server_cert.public_bytes(pem), 0o644)
    _write(paths["server_key"], server_key.private_bytes(pem, pkcs8, none), 0o600)
    for site in sites:
        node_key = ec.generate_private_key(ec.SECP384R1())
        folder = out / "sites" / site
        _write(folder / "node.key", node_key.private_bytes(pem, serialization.PrivateFormat.OpenSSH, none), 0o600)
        _write(folder / "node.pub", node_key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                                       serialization.PublicFormat.OpenSSH), 0o644)
        paths[site] = folder
    return paths


def superlink_command(deploy_dir: Path | None, port: int, state_db: Path | None, insecure: bool) -> list[str]:
    """The ``flower-superlink`` command line; raises ``ValueError`` without TLS files unless ``insecure``."""
    exe = str(Path(sys.executable).with_name("flower-superlink"))
    cmd = [exe, "--host", "127.0.0.1", "--port", str(port), "--disable-runtime-dependency-installation"]
    if state_db is not None:
        cmd += ["--database", str(state_db)]
    if insecure:
        return [*cmd, "--insecure"]
    if deploy_dir is None or not (deploy_dir / "superlink" / "server.crt").exists():
        raise ValueError("refusing to start the SuperLink without TLS: pass --certs DIR from `fedresponse deploy "
                         "provision`, or --insecure to run unencrypted on purpose (testing only).")
    return [*cmd, "--ssl-ca-certfile", str(deploy_dir / "ca" / "ca.crt"),
            "--ssl-certfile", str(deploy_dir / "superlink" / "server.crt"),
            "--ssl-keyfile", str(deploy_dir / "superlink" / "server.key"), "--enable-supernode-auth"]


def supernode_command(deploy_dir: Path | None, site: str, superlink: str, port: int, node_config: str,
                      insecure: bool) -> list[str]:
    """The ``flower-supernode`` command line for one site; TLS + node key unless ``insecure``."""
    exe = str(Path(sys.executable).with_name("flower-supernode"))
    cmd = [exe, "--superlink", superlink, "--port", str(port), "--node-config", node_config]
    if insecure:
        return [*cmd, "--insecure"]
    if deploy_dir is None or not (deploy_dir / "sites" / site / "node.key").exists():
        raise ValueError(f"refusing to start SuperNode {site} without TLS and its node key: pass --certs DIR from "
                         "`fedresponse deploy provision`, or --insecure (testing only).")
    return [*cmd, "--root-certificates", str(deploy_dir / "ca" / "ca.crt"),
            "--auth-supernode-private-key", str(deploy_dir / "sites" / site / "node.key")]


@deploy_app.command("provision")
def provision_cmd(
    out: Path = typer.Option(..., "--out", help="Folder for the CA, SuperLink certificate and node keys."),
    sites: int = typer.Option(..., "--sites", min=1, help="Number of sites (S01..SNN)."),
    host: list[str] = typer.Option(["127.0.0.1", "localhost"], "--host", help="SuperLink host names / IPs (SAN)."),
) -> None:
    """Create TLS certificates for the SuperLink and authentication keys for N SuperNodes."""
    names = [f"S{i:02d}" for i in range(1, sites + 1)]
    paths = provision(out, names, host)
    Console().print(f"[green]provisioned[/] CA {paths['ca']}, SuperLink certificate for {host}, node keys for {names}")


@deploy_app.command("superlink")
def superlink_cmd(
    certs: Path | None = typer.Option(None, "--certs", help="Folder written by `deploy provision`."),
    port: int = typer.Option(9093, "--port"),
    database: Path | None = typer.Option(None, "--database", help="SuperLink state file (survives restarts)."),
    insecure: bool = typer.Option(False, "--insecure", help="Run WITHOUT TLS and node authentication (testing)."),
) -> None:
    """Start the SuperLink (TLS + SuperNode authentication; refuses plain text unless --insecure)."""
    try:
        cmd = superlink_command(certs, port, database, insecure)
    except ValueError as exc:
        Console().print(f"[red]{exc}")
        raise typer.Exit(code=2) from None
    raise typer.Exit(code=subprocess.call(cmd))


@deploy_app.command("supernode")
def supernode_cmd(
    site: str = typer.Option(..., "--site", help="Site id, e.g. S01."),
    site_dir: Path = typer.Option(..., "--site-dir", help="Site-local state (ledger, audit, predictions)."),
    site_keys: Path = typer.Option(..., "--site-keys", help="KEYDIR/site (secret.ctx, mode 0600)."),
    site_input: Path | None = typer.Option(None, "--site-input", help="The site's model inputs."),
    certs: Path | None = typer.Option(None, "--certs", help="Folder written by `deploy provision`."),
    superlink: str = typer.Option("127.0.0.1:9093", "--superlink"),
    port: int = typer.Option(9094, "--port", help="Local ClientApp runtime port (one per SuperNode on a host)."),
    insecure: bool = typer.Option(False, "--insecure", help="Run WITHOUT TLS and node authentication (testing)."),
) -> None:
    """Start one site's SuperNode."""
    node_config = f'site-id="{site}" site-dir="{site_dir}" site-keys="{site_keys}" site-input="{site_input or ""}"'
    try:
        cmd = supernode_command(certs, site, superlink, port, node_config, insecure)
    except ValueError as exc:
        Console().print(f"[red]{exc}")
        raise typer.Exit(code=2) from None
    raise typer.Exit(code=subprocess.call(cmd))


def register(app: typer.Typer) -> None:
    app.add_typer(deploy_app, name="deploy")
