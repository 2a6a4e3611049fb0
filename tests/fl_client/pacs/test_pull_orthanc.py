"""Pulling from a real PACS (Orthanc, tests/fl_client/pacs/conftest.py) over both routes: the pulled and
ingested store equals the store ingested from the folder export; re-runs fetch only what is missing;
refused associations, unknown AE titles, timeouts, TLS and partial retrievals fail clearly."""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from pacs_fixtures import Pacs, free_port
from typer.testing import CliRunner

from evaluation.protocol import load_protocol
from fedresponse.cli import app
from fl_client.exceptions import PacsError
from fl_client.ingest.pipeline import IngestConfig, ingest_site
from fl_client.ingest.store_tables import TABLES
from fl_client.pacs.config import PacsConfig
from fl_client.pacs.inbox import PULL_MANIFEST, read_pull_manifest
from fl_client.pacs.plan import plan_pull
from fl_client.pacs.pull import pull, survey
from fl_client.pacs.routes import InstanceHit, Route

PASSPHRASE = "correct horse battery staple"
pytestmark = pytest.mark.slow  # one Orthanc, two pulls and three ingests: ~40 s on an idle 2-core machine


def _ingest(src: Path, out: Path, key: Path) -> None:
    ingest_site(src, out, IngestConfig(site="QY", passphrase=PASSPHRASE, who="pytest", scrypt_n=2**12, key_file=key))


@pytest.fixture(scope="module")
def pulled(orthanc: Pacs, export: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Inboxes pulled over C-MOVE and over DICOMweb (HTTPS), and the three stores (folder, move, web)."""
    root = tmp_path_factory.mktemp("pulled")
    config = PacsConfig.model_validate(orthanc.config())
    out = {}
    for route in ("dimse", "dicomweb"):
        summary = pull(config, export, root / f"inbox_{route}", route)
        assert summary.complete and summary.received == summary.requested > 0, summary
        out[f"inbox_{route}"] = root / f"inbox_{route}"
    key = root / "QY.reid.enc"  # one key: the same pseudonyms, UIDs and date shifts in every store
    for name, src in (("folder", export), ("dimse", out["inbox_dimse"]), ("dicomweb", out["inbox_dicomweb"])):
        _ingest(src, root / "stores" / name, key)
        out[name] = root / "stores" / name
    return out


def _dicom_files(export: Path) -> int:
    return sum(1 for p in (export / "pacs").rglob("*") if p.is_file())


@pytest.mark.parametrize("route", ["dimse", "dicomweb"])
def test_every_instance_accounted_for(pulled: dict[str, Path], export: Path, route: str) -> None:
    rows = read_pull_manifest(pulled[f"inbox_{route}"])
    assert len(rows) == _dicom_files(export)  # every file the PACS was loaded with was requested ...
    assert {r.STATUS for r in rows} == {"RECEIVED"}  # ... and received
    assert all((pulled[f"inbox_{route}"] / r.PATH).is_file() for r in rows)
    assert {r.VISIT for r in rows} == {"T0", "T1", "T2"} and {r.ROUTE for r in rows} == {route}
    assert not any("MRN" in r.PATH or r.SOP_UID in r.PATH for r in rows)  # names are keyed hashes


@pytest.mark.parametrize("route", ["dimse", "dicomweb"])
def test_pulled_store_equals_folder_store(pulled: dict[str, Path], route: str) -> None:
    folder, store = pulled["folder"], pulled[route]
    for name in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(folder / f"{name}.parquet").reset_index(drop=True),
                                      pd.read_parquet(store / f"{name}.parquet").reset_index(drop=True))
    volumes = sorted(p.relative_to(folder) for p in folder.rglob("*.nii.gz"))
    assert volumes and volumes == sorted(p.relative_to(store) for p in store.rglob("*.nii.gz"))
    for rel in volumes:
        a, b = nib.load(folder / rel), nib.load(store / rel)  # type: ignore[attr-defined]
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        assert np.allclose(a.affine, b.affine)
    counts = [pd.read_parquet(s / "manifest.parquet").groupby(["KIND", "STATUS"]).size() for s in (folder, store)]
    manifest = pd.read_parquet(store / "manifest.parquet")
    pull_row = manifest[manifest["SOURCE_PATH"] == PULL_MANIFEST]
    assert list(pull_row["STATUS"]) == ["INGESTED"]  # the pull's accounting is the one extra (table) row
    counts[1][("TABLE", "INGESTED")] -= 1
    pd.testing.assert_series_equal(counts[0], counts[1])


def test_rerun_over_c_get_fetches_only_what_is_missing(orthanc: Pacs, pulled: dict[str, Path], export: Path,
                                                       tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    shutil.copytree(pulled["inbox_dimse"], inbox)
    rows = read_pull_manifest(inbox)
    series = rows[0].SERIES_UID
    gone = [r for r in rows if r.SERIES_UID == series] + [r for r in rows if r.SERIES_UID != series][:3]
    for row in gone:
        (inbox / row.PATH).unlink()
    stale = inbox / Path(rows[-1].PATH).parent / ".x.dcm.tmp"
    stale.write_bytes(b"half a file")  # what an interrupted pull leaves
    config = PacsConfig.model_validate(orthanc.config(dimse={"ae_title": "HOSPPACS", "host": "127.0.0.1",
                                                             "port": orthanc.dicom_port, "retrieve": "get"}))
    summary = pull(config, export, inbox, "dimse")
    assert (summary.received, summary.already_present, summary.missing) == (len(gone), len(rows) - len(gone), 0)
    assert not stale.exists()
    assert {r.STATUS for r in read_pull_manifest(inbox)} == {"RECEIVED"}
    again = pull(config, export, inbox, "dimse")
    assert (again.received, again.already_present) == (0, len(rows))
    holdings = survey(config, export, "dicomweb", inbox)
    assert sum(h.instances for h in holdings) == sum(h.in_inbox for h in holdings) == len(rows)


def test_partial_retrieval_is_accounted_for_and_completed_by_a_rerun(orthanc: Pacs, pulled: dict[str, Path],
                                                                     export: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    shutil.copytree(pulled["inbox_dimse"], inbox)
    rows = read_pull_manifest(inbox)
    for row in rows[:2]:
        (inbox / row.PATH).unlink()
    blocked = inbox / rows[0].PATH
    blocked.mkdir()  # the received instance cannot be written there: the storage SCP fails that sub-operation
    config_file = tmp_path / "pacs.yaml"
    config_file.write_text(yaml.safe_dump(orthanc.config()))
    args = ["pacs", "pull", "--config", str(config_file), "--tables", str(export), "--inbox", str(inbox)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    assert "1 instance(s) missing" in " ".join(result.output.split())
    missing = [r for r in read_pull_manifest(inbox) if r.STATUS == "MISSING"]
    assert [r.SOP_UID for r in missing] == [rows[0].SOP_UID] and "the PACS" in missing[0].REASON  # its status
    assert (inbox / rows[1].PATH).is_file()
    blocked.rmdir()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert {r.STATUS for r in read_pull_manifest(inbox)} == {"RECEIVED"}


def _silent_server() -> tuple[socket.socket, int]:
    """A TCP server that accepts and never answers (a stalled PACS)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.extend(server.accept()[0] for _ in range(4)), daemon=True).start()
    return server, int(server.getsockname()[1])


def test_refusals_and_timeouts_say_what_to_fix(orthanc: Pacs, export: Path, tmp_path: Path) -> None:
    port = orthanc.dicom_port
    cases = [
        ("dimse", {"dimse": {"ae_title": "NOTTHEPACS", "host": "127.0.0.1", "port": port}}, "rejected the association"),
        ("dimse", {"local": {"ae_title": "FEDRESP", "host": "127.0.0.1", "port": orthanc.scp_port,
                             "move_destination": "NOWHERE"}}, "does not know the move destination AE title 'NOWHERE'"),
        ("dimse", {"local": {"ae_title": "STRANGER", "host": "127.0.0.1", "port": orthanc.scp_port},
                   "timeouts": {"dimse_s": 2}}, "unregistered AE title 'STRANGER'"),
        ("dimse", {"dimse": {"ae_title": "HOSPPACS", "host": "127.0.0.1", "port": free_port()}}, "could not reach"),
        ("dicomweb", {"dicomweb": {"url": f"{orthanc.url}/dicom-web"}}, "TLS verification"),
    ]
    for route, overrides, message in cases:
        config = PacsConfig.model_validate(orthanc.config(**overrides))
        with pytest.raises(PacsError, match=message):
            pull(config, export, tmp_path / "inbox", route)
    server, silent = _silent_server()
    try:
        config = PacsConfig.model_validate(orthanc.config(
            dicomweb={"url": f"http://127.0.0.1:{silent}/dicom-web", "allow_plain_http": True},
            timeouts={"http_s": 1, "http_attempts": 1}))
        with pytest.raises(PacsError, match="timed out after 1 s"):
            pull(config, export, tmp_path / "inbox", "dicomweb")
    finally:
        server.close()
    assert not list((tmp_path / "inbox").rglob("*.dcm"))  # nothing half-written


@pytest.mark.parametrize("route", ["dimse", "dicomweb"])
def test_the_pacs_counts_cross_check_every_listing(orthanc: Pacs, export: Path, route: str) -> None:
    """Both routes read Orthanc's own Number of Study Related Series / Series Related Instances, so the pull's
    cross-check (a lost C-FIND response, a result limit) is live, and the counts agree with the listings."""
    from fl_client.pacs.pull import _Receiver, make_route

    config = PacsConfig.model_validate(orthanc.config())
    studies: set[str] = set()
    seen = 0
    with make_route(config, route, _Receiver(Path("/nonexistent")), retrieving=False) as pacs:
        for request in plan_pull(export, config.site, load_protocol(), config.margin_days):
            for window in request.windows:
                for study in pacs.find_studies(request.patient_id, window):
                    if study.study_uid in studies:
                        continue
                    studies.add(study.study_uid)
                    series = pacs.find_series(study.study_uid)
                    assert study.series_count == len(series) > 0
                    for hit in series:
                        assert hit.instance_count == len(pacs.find_instances(study.study_uid, hit.series_uid)) > 0
                        seen += hit.instance_count or 0
    assert seen == _dicom_files(export)


class _ShortListing:
    """The real route, whose instance listings lose their last entry (``times`` times per series): what a lost
    C-FIND response or a PACS result limit does."""

    def __init__(self, route: Route, times: int) -> None:
        self.route, self.times, self.calls = route, times, {}

    def __getattr__(self, name: str) -> object:
        return getattr(self.route, name)

    def __enter__(self) -> _ShortListing:
        self.route.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.route.__exit__(*exc)

    def find_instances(self, study_uid: str, series_uid: str) -> list[InstanceHit]:
        hits = self.route.find_instances(study_uid, series_uid)
        self.calls[series_uid] = self.calls.get(series_uid, 0) + 1
        return hits[:-1] if self.calls[series_uid] <= self.times else hits


@pytest.mark.parametrize("times", [1, 2])
def test_a_short_listing_is_queried_again_and_never_silently_shrinks_the_pull(
        orthanc: Pacs, pulled: dict[str, Path], export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        times: int) -> None:
    import fl_client.pacs.pull as pull_module

    real = pull_module.make_route
    monkeypatch.setattr(pull_module, "make_route", lambda *a, **k: _ShortListing(real(*a, **k), times))
    inbox = tmp_path / "inbox"
    shutil.copytree(pulled["inbox_dicomweb"], inbox)
    rows = read_pull_manifest(inbox)
    config = PacsConfig.model_validate(orthanc.config())
    summary = pull(config, export, inbox, "dicomweb")
    n_series = len({r.SERIES_UID for r in rows})
    if times == 1:  # the second query is whole: nothing lost
        assert (summary.requested, summary.unlisted, summary.complete) == (len(rows), 0, True)
    else:  # short twice: the pull is incomplete, says by how much and why, and keeps the earlier rows
        assert (summary.requested, summary.unlisted, summary.complete) == (len(rows) - n_series, n_series, False)
        assert len(summary.problems) == n_series and "but lists" in summary.problems[0]
        assert len(read_pull_manifest(inbox)) == len(rows)


def test_the_query_reactor_is_parked_before_each_request(orthanc: Pacs, export: Path) -> None:
    """The guard against pynetdicom's reactor taking a C-FIND response (fl_client.pacs.dimse.pause_reactor):
    after it the association's reactor thread is blocked on its checkpoint, and a query still works."""
    from fl_client.pacs.dimse import DimseRoute, pause_reactor
    from fl_client.pacs.pull import _Receiver

    config = PacsConfig.model_validate(orthanc.config())
    with DimseRoute(config, _Receiver(Path("/nonexistent")), retrieving=False) as route:
        request = plan_pull(export, config.site, load_protocol(), config.margin_days)[0]
        studies = route.find_studies(request.patient_id, request.windows[0])
        assoc = route._query_association()
        for _ in range(20):
            pause_reactor(assoc)
            assert assoc._is_paused and len(assoc._reactor_checkpoint._cond._waiters) == 1  # type: ignore[attr-defined]
            assoc._reactor_checkpoint.set()
        assert route.find_studies(request.patient_id, request.windows[0]) == studies and studies
