"""Deployment for real: SuperLink and SuperNodes as separate processes on loopback, TLS + node authentication.

The slow test provisions certificates and node keys, starts a SuperLink (TLS, ``--enable-supernode-auth``,
state in a database file), registers two SuperNodes' keys with ``flwr supernode register``, starts the
SuperNodes, submits a 3-round DP+HE run with ``flwr run``, kills the SuperLink (with its ServerApp) after
the first checkpoint, restarts it and submits again: the server resumes from the last completed round.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedresponse.commands.deploy import provision, superlink_command, supernode_command
from privacy.accounting import read_ledger
from privacy.audit import AuditLog, verify_chain
from privacy.ckks import write_key_files

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SITES = ("S01", "S02")


def test_refuses_to_start_without_tls(tmp_path: Path) -> None:
    from fedresponse.cli import app

    with pytest.raises(ValueError, match="without TLS"):
        superlink_command(None, 9093, None, insecure=False)
    with pytest.raises(ValueError, match="without TLS"):
        supernode_command(tmp_path, "S01", "127.0.0.1:9093", 9094, "", insecure=False)
    assert "--insecure" in superlink_command(None, 9093, None, insecure=True)
    result = CliRunner().invoke(app, ["deploy", "superlink"])
    assert result.exit_code == 2 and "without TLS" in result.output


def test_provision_writes_tls_and_node_keys(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

    paths = provision(tmp_path, list(SITES), ["127.0.0.1", "localhost"])
    ca = x509.load_pem_x509_certificate(paths["ca"].read_bytes())
    server = x509.load_pem_x509_certificate(paths["server_cert"].read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert oct(paths["server_key"].stat().st_mode & 0o777) == "0o600"
    for site in SITES:
        private = load_ssh_private_key((paths[site] / "node.key").read_bytes(), None)
        public = load_ssh_public_key((paths[site] / "node.pub").read_bytes())
        assert private.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(1.0)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Processes:
    """Processes this test started, each in its own session; stopped by their own process group id."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.procs = env, logs, {}  # type: ignore[var-annotated]

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        handle = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(cmd, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.kill(name)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    env = dict(os.environ)
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", FLWR_HOME=str(tmp_path / "flwr"),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")]),
               FEDRESPONSE_TOY_STATE=str(tmp_path / "toy"))
    (tmp_path / "toy").mkdir()
    (tmp_path / "logs").mkdir()
    procs = Processes(env, tmp_path / "logs")
    yield procs
    procs.stop_all()


def _flwr(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    result = subprocess.run([str(BIN / "flwr"), *args], env=env, capture_output=True, text=True, timeout=timeout,
                            cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _latest(run: Path) -> int:
    pointer = run / "checkpoints" / "LATEST"
    return int(pointer.read_text()) if pointer.exists() else 0


@pytest.mark.slow
def test_tls_deployment_two_sites_survives_server_kill(tmp_path: Path, processes: Processes) -> None:
    certs, keys, run, port = tmp_path / "certs", tmp_path / "keys", tmp_path / "run", _free_port()
    provision(certs, list(SITES), ["127.0.0.1", "localhost"])
    write_key_files(keys)
    (tmp_path / "flwr").mkdir()
    (tmp_path / "flwr" / "config.toml").write_text(
        f'[superlink]\ndefault = "fedtest"\n\n[superlink.fedtest]\naddress = "127.0.0.1:{port}"\n'
        f'root-certificates = "{certs / "ca" / "ca.crt"}"\n')
    run_config = tmp_path / "run.toml"
    run_config.write_text(
        'num-server-rounds = 3\nmode = "dp-he"\nmin-nodes = 2\nmin-updates = 2\nlocal-epochs = 1\nbatch-size = 8\n'
        'accountant = "prv"\nepsilon-budget = 30.0\nround-timeout = 300.0\nnode-wait = 300.0\n'
        f'task = "federated_toy:toy_task"\nrun-dir = "{run}"\nserver-keys = "{keys / "server"}"\n')
    superlink = superlink_command(certs, port, tmp_path / "superlink.db", insecure=False)
    processes.start("superlink", superlink)
    _wait(lambda: _port_open(port), 120, "the SuperLink")
    for site in SITES:
        _flwr(processes.env, "supernode", "register", str(certs / "sites" / site / "node.pub"), "fedtest")
    for index, site in enumerate(SITES):
        node_config = f'site-id="{site}" site-dir="{tmp_path / "state" / site}" site-keys="{keys / "site"}"'
        processes.start(site, supernode_command(certs, site, f"127.0.0.1:{port}", _free_port() + index, node_config,
                                                insecure=False))
    _flwr(processes.env, "run", str(REPO), "fedtest", "--run-config", str(run_config))
    _wait(lambda: _latest(run) >= 1, 600, "round 1's checkpoint")
    processes.kill("superlink")  # the coordinating centre dies mid-run (its ServerApp child with it)
    after_kill = _latest(run)
    assert 1 <= after_kill < 3
    processes.start("superlink", superlink)
    _wait(lambda: _port_open(port), 120, "the restarted SuperLink")
    _flwr(processes.env, "run", str(REPO), "fedtest", "--run-config", str(run_config))
    _wait(lambda: (run / "site_metrics.json").exists() and _latest(run) == 3, 900, "the resumed run to finish")

    rounds = [json.loads(line)["round"] for line in (run / "rounds.jsonl").read_text().splitlines()]
    assert sorted(set(rounds)) == [1, 2, 3] and rounds == sorted(rounds)  # resumed, not restarted from round 1
    actions = [e.action for e in AuditLog(run / "server_audit.jsonl").entries()]
    assert "fl.run.resumed" in actions and verify_chain(run / "server_audit.jsonl") == []
    ledger = read_ledger(run / "privacy_ledger.csv")
    for site in SITES:
        rows = [r for r in ledger if r.site == site]
        assert [r.round for r in rows] == [1, 2, 3]
        assert all(a.epsilon < b.epsilon for a, b in itertools.pairwise(rows))
        assert read_ledger(tmp_path / "state" / site / "privacy_ledger.csv") == rows
        assert verify_chain(tmp_path / "state" / site / "federation_audit.jsonl") == []
    metrics = json.loads((run / "site_metrics.json").read_text())
    assert set(metrics) == set(SITES)
    # the two encrypted evaluate phases run across the real processes too
    _wait(lambda: (run / "pooled_aggregate.json").exists(), 600, "the pooled evaluation")
    index = json.loads((run / "pooled_aggregate.json").read_text())
    assert index["aggregate"]["contributors"] == sorted(SITES) and index["aggregate"]["encoding"] == "ckks"
    assert set(json.loads((run / "cutoffs.json").read_text())) >= {"early", "full"}
