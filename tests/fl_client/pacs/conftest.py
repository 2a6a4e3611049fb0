"""A real PACS for the pull tests: Debian's Orthanc (with its DICOMweb plugin) on free localhost ports,
loaded with a small synthetic site export (site QY), its DICOMweb served over HTTPS with a self-signed
certificate made here. TLS is terminated by a small proxy thread in front of Orthanc's HTTP port, as a
hospital's reverse proxy would: the HTTPS server built into Debian's Orthanc 1.10.1 crashes on the first
request against OpenSSL 3 (civetweb segfault), so we do not use it.

Orthanc is started once per test session with a generated JSON configuration (storage in a tmp folder),
waited for with a bounded wait, and always killed. It knows one DICOM modality: the tests' storage SCP
(AE ``FEDRESP``), the C-MOVE destination.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pacs_fixtures import LOCAL_AET, PACS_AET, SITE, Pacs, free_port, require_orthanc, self_signed, tls_proxy


@pytest.fixture(scope="session")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-site, 2-patient quick cohort with site code QY (RTSTRUCT annotations): the folder export."""
    from synth.cohort import synthesize

    cohort = tmp_path_factory.mktemp("pacs_cohort") / "cohort"
    synthesize(cohort, 1, 2, seed=11, preset_name="quick", workers=1, site_codes=[SITE])
    return cohort / SITE


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory, export: Path) -> Iterator[Pacs]:
    binary, plugin = require_orthanc()
    folder = tmp_path_factory.mktemp("orthanc")
    server_pem, ca = self_signed(folder)
    dicom_port, http_port, scp_port = free_port(), free_port(), free_port()
    (folder / "db").mkdir()
    configuration = {
        "Name": "fedresponse-test-pacs", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "DicomAet": PACS_AET, "DicomPort": dicom_port, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True, "DicomModalities": {"site": [LOCAL_AET, "127.0.0.1", scp_port]},
        "Plugins": [str(plugin)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StorageCompression": False, "ConcurrentJobs": 2, "HttpThreadsCount": 4,
    }
    (folder / "orthanc.json").write_text(json.dumps(configuration, indent=1))
    log = (folder / "orthanc.log").open("wb")
    process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    proxy, https_port = tls_proxy(server_pem, http_port)
    url = f"https://127.0.0.1:{https_port}"
    try:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would override verify
        session.verify = str(ca)
        deadline = time.monotonic() + 30.0
        while True:
            if process.poll() is not None:
                pytest.fail(f"Orthanc exited with {process.returncode}: {(folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                if session.get(f"{url}/system", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Orthanc did not answer within 30 s: {(folder / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.2)
        for path in sorted(p for p in (export / "pacs").rglob("*") if p.is_file()):
            session.post(f"{url}/instances", data=path.read_bytes(), timeout=30).raise_for_status()
        yield Pacs(dicom_port, url, ca, scp_port, folder)
    finally:
        process.kill()
        process.wait(timeout=10)
        proxy.close()
        log.close()
