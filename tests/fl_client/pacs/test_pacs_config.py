"""The site's PACS configuration is validated data, and the pull plan follows the protocol windows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from evaluation.protocol import load_protocol
from fl_client.exceptions import PacsError
from fl_client.ingest.visits import ady_date, study_day
from fl_client.pacs.config import load_pacs_config
from fl_client.pacs.plan import plan_pull, protocol_windows

GOOD = {"site": "QY", "local": {"ae_title": "FEDRESP_QY", "port": 11113},
        "dimse": {"ae_title": "HOSPPACS", "host": "pacs.local", "port": 104},
        "dicomweb": {"url": "https://pacs.local/dicom-web"}}


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "pacs.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_good_configuration_loads(tmp_path: Path) -> None:
    config = load_pacs_config(_write(tmp_path, GOOD))
    assert config.dimse is not None and config.dimse.retrieve == "move"
    assert config.local.destination == "FEDRESP_QY" and config.concurrency == 2


@pytest.mark.parametrize(("change", "message"), [
    ({"site": "qy"}, "site: Value error, site code must be 2-8 capital letters"),
    ({"dimse": {"ae_title": "A" * 17, "host": "h", "port": 104}}, "dimse.ae_title: .*1-16 printable ASCII"),
    ({"dimse": {"ae_title": "PACS", "host": "h", "port": 0}}, "dimse.port"),
    ({"dicomweb": {"url": "http://pacs.local/dicom-web"}}, "plain HTTP: patient images would cross"),
    ({"dicomweb": {"url": "https://p", "ca_bundle": "/nonexistent/ca.pem"}}, "ca_bundle '/nonexistent/ca.pem' is not"),
    ({"concurrency": 0}, "concurrency"),
    ({"dimse": {"ae_title": "PACS", "host": "h", "port": 104, "retrieve": "push"}}, "dimse.retrieve"),
    ({"unknown_key": 1}, "unknown_key"),
])
def test_bad_configurations_name_the_field(tmp_path: Path, change: dict[str, object], message: str) -> None:
    with pytest.raises(PacsError, match=message):
        load_pacs_config(_write(tmp_path, {**GOOD, **change}))


def test_unconfigured_route_and_unreadable_file(tmp_path: Path) -> None:
    config = load_pacs_config(_write(tmp_path, {"site": "QY"}))
    with pytest.raises(PacsError, match="route 'dimse' is not configured"):
        config.route("dimse")
    with pytest.raises(PacsError, match="cannot read the PACS configuration"):
        load_pacs_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("ady", [-28, -1, 1, 55, 112])
def test_ady_date_inverts_study_day(ady: int) -> None:
    first = dt.date(2026, 3, 1)
    assert study_day(ady_date(ady, first), first) == ady


def test_windows_follow_the_protocol(tmp_path: Path) -> None:
    protocol = load_protocol()
    first = dt.date(2026, 3, 10)
    windows = protocol_windows(first, protocol, margin_days=2)
    assert [w.visit for w in windows] == ["T0", "T1", "T2"]
    t0 = protocol.timepoints["T0"].window
    assert windows[0].start == first + dt.timedelta(days=t0[0] - 2) and windows[0].end == first + dt.timedelta(
        days=t0[1] + 2)
    t1_start, t1_end = first + dt.timedelta(days=54 - 2), first + dt.timedelta(days=69 + 2)  # ADY 55..70
    assert windows[1].dicom_range() == f"{t1_start:%Y%m%d}-{t1_end:%Y%m%d}"
    assert [w.dicom_range() for w in protocol_windows(None, protocol)] == [""]
    (tmp_path / "enrolment_log.csv").write_text(
        "PatientID,PatientName,PatientBirthDate,SUBJID,USUBJID\nMRN2,B^B,19500101,0002,FEDRESP-QY-0002\n"
        "MRN1,A^A,19500101,0001,FEDRESP-QY-0001\n")
    (tmp_path / "crf.csv").write_text("USUBJID,FIRST_DOSE_DATE\nFEDRESP-QY-0001,2026-03-10\n")
    plan = plan_pull(tmp_path, "QY", protocol)
    assert [(p.patient_id, len(p.windows)) for p in plan] == [("MRN1", 3), ("MRN2", 1)]
    with pytest.raises(PacsError, match="no enrolment log"):
        plan_pull(tmp_path / "nowhere", "QY", protocol)
