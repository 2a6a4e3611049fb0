"""``flwr run`` (the Flower CLI) drives the same ServerApp/ClientApp in the simulation runtime.

A SuperLink is started with ``--simulation`` and ``--disable-runtime-dependency-installation`` (without the
latter it tries to install the app's dependencies from the network, which a hospital machine may not have:
docs/federation.md), and ``flwr run . sim`` submits a 2-round DP+HE run of the toy task on two nodes, each
node mapped to its site by its partition id. The run must leave the same artefacts as ``fedresponse train``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from privacy.accounting import read_ledger
from privacy.audit import verify_chain
from privacy.ckks import write_key_files

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_flwr_run_simulation_two_sites(tmp_path: Path) -> None:
    port, keys, run = _free_port(), tmp_path / "keys", tmp_path / "run"
    write_key_files(keys)
    (tmp_path / "flwr").mkdir()
    (tmp_path / "toy").mkdir()
    (tmp_path / "flwr" / "config.toml").write_text(
        f'[superlink]\ndefault = "sim"\n\n[superlink.sim]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
    run_config = tmp_path / "run.toml"
    run_config.write_text(
        'num-server-rounds = 2\nmode = "dp-he"\nmin-nodes = 2\nmin-updates = 2\nlocal-epochs = 1\nbatch-size = 8\n'
        'accountant = "prv"\nepsilon-budget = 30.0\nround-timeout = 300.0\nnode-wait = 300.0\n'
        f'task = "federated_toy:toy_task"\nsites = "S01,S02"\nrun-dir = "{run}"\nsite-root = "{tmp_path / "sites"}"\n'
        f'server-keys = "{keys / "server"}"\nsite-keys = "{keys / "site"}"\n')
    env = dict(os.environ)
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", FLWR_HOME=str(tmp_path / "flwr"),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")]),
               FEDRESPONSE_TOY_STATE=str(tmp_path / "toy"))
    log = (tmp_path / "superlink.log").open("ab")
    superlink = subprocess.Popen(
        [str(BIN / "flower-superlink"), "--insecure", "--simulation", "--disable-runtime-dependency-installation",
         "--port", str(port), "--database", str(tmp_path / "superlink.db")],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _port_open(port):
            assert superlink.poll() is None, (tmp_path / "superlink.log").read_text()
            assert time.monotonic() < deadline, "the SuperLink did not open its port within 120 s"
            time.sleep(1.0)
        result = subprocess.run(
            [str(BIN / "flwr"), "run", str(REPO), "sim", "--run-config", str(run_config),
             "--federation-config", "num-supernodes=2", "--stream"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    finally:
        os.killpg(superlink.pid, signal.SIGKILL)
        superlink.wait(timeout=30)
        log.close()

    rounds = [json.loads(line)["round"] for line in (run / "rounds.jsonl").read_text().splitlines()]
    assert rounds == [1, 2]
    ledger = read_ledger(run / "privacy_ledger.csv")
    assert sorted({r.site for r in ledger}) == ["S01", "S02"] and {r.round for r in ledger} == {1, 2}
    for site in ("S01", "S02"):  # the site-local ledger is the one the server was sent
        assert read_ledger(tmp_path / "sites" / site / "privacy_ledger.csv") == [r for r in ledger if r.site == site]
    assert verify_chain(run / "server_audit.jsonl") == []
    index = json.loads((run / "pooled_aggregate.json").read_text())
    assert index["aggregate"]["contributors"] == ["S01", "S02"] and index["aggregate"]["encoding"] == "ckks"
