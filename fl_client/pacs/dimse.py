"""The DIMSE route (pynetdicom): Study Root C-FIND at study, series and image level; C-MOVE to the
site's own storage SCP, or C-GET on the query association.

Every association states its AE titles from the site configuration; the storage SCP accepts only the
configured PACS as caller and only instances the pull asked for.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from fl_client.exceptions import PacsError
from fl_client.pacs.config import DimseNode, PacsConfig
from fl_client.pacs.plan import DateWindow
from fl_client.pacs.routes import InstanceHit, Receiver, SeriesHit, StudyHit, count_value

log = logging.getLogger(__name__)

_PENDING = (0xFF00, 0xFF01)
#: Storage SOP classes requested for C-GET (a C-GET association carries at most 128 contexts).
GET_STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2",  # CT, enhanced
    "1.2.840.10008.5.1.4.1.1.481.3", "1.2.840.10008.5.1.4.1.1.66.4",  # RTSTRUCT, SEG
    "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.88.67",  # secondary capture, X-ray dose SR
)
_MOVE_FAILURES = {
    0xA801: "the PACS does not know the move destination AE title {dest!r}: ask the PACS administrator to add "
            "AE {dest!r} at this server's address and port {port} (the site's storage SCP)",
    0xA701: "the PACS is out of resources (could not count the matches)",
    0xA702: "the PACS ran out of resources while sending",
    0xA900: "the PACS says the identifier does not match the query model",
    0xC000: "the PACS could not process the request",
}


def pause_reactor(assoc: Association, timeout_s: float = 2.0) -> None:
    """Block until the association's reactor thread is parked, so that it cannot take our responses.

    pynetdicom's requestor reactor loop marks itself paused and then waits on a checkpoint event; a ``send_*``
    call clears the event and waits for the mark. When the reactor has already passed the wait (the event was
    still set from the previous operation) but not yet cleared its stale mark, the send goes out while the
    reactor is about to poll the DIMSE queue; under load (GIL switches of a few ms) a fast PACS's first
    response arrives in that window and the reactor discards it ("Received unexpected C-FIND service message").
    One lost C-FIND response is one study, series or instance silently missing from a listing. Waiting until
    the reactor thread is actually blocked on the event (a waiter on its condition) closes the window; the
    ``send_*`` call that follows finds the event cleared and the reactor parked. Tied to CPython's
    ``threading.Event`` (``_cond._waiters``) and pynetdicom 3's ``_reactor_checkpoint``, both pinned; if
    either is absent this does nothing and the listing cross-check (:mod:`fl_client.pacs.pull`) still guards.
    """
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    waiters = getattr(getattr(checkpoint, "_cond", None), "_waiters", None)
    if checkpoint is None or waiters is None:
        return
    checkpoint.clear()
    deadline = time.monotonic() + timeout_s
    while not waiters and assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.0002)


def _status_text(status: int, dest: str, port: int) -> str:
    template = _MOVE_FAILURES.get(status)
    if template is None:
        kind = "refused" if 0xA000 <= status <= 0xAFFF else "failed"
        return f"the PACS {kind} the retrieve (status 0x{status:04X})"
    return template.format(dest=dest, port=port)


class DimseRoute:
    """Query/retrieve over DICOM networking; use as a context manager (it runs the storage SCP for C-MOVE)."""

    name = "dimse"

    def __init__(self, config: PacsConfig, receive: Receiver, retrieving: bool = True) -> None:
        node = config.route("dimse")
        assert isinstance(node, DimseNode)
        self.node, self.config, self.receive, self.retrieving = node, config, receive, retrieving
        self._server: Any = None
        self._query: Association | None = None  # one C-FIND association for every query of a pull
        self._attempts: dict[str, int] = {}  # series UID → C-STORE requests that reached us (written or not)
        self._lock = threading.Lock()

    def __enter__(self) -> DimseRoute:
        if self.node.retrieve == "move" and self.retrieving:
            self._server = self._start_scp()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._query is not None and self._query.is_established:
            self._query.release()
        self._query = None
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # -- associations --------------------------------------------------------------------------------
    def _ae(self) -> AE:
        ae = AE(ae_title=self.config.local.ae_title)
        timeouts = self.config.timeouts
        ae.connection_timeout, ae.acse_timeout = timeouts.connect_s, timeouts.acse_s
        ae.dimse_timeout, ae.network_timeout = timeouts.dimse_s, timeouts.network_s
        ae.maximum_pdu_size = 0  # no PDU limit: large instances in one P-DATA, much faster in pure Python
        return ae

    @contextmanager
    def _association(self, model: str, storage: bool = False) -> Iterator[Association]:
        ae = self._ae()
        ae.add_requested_context(model)
        handlers: list[Any] = []
        roles: list[Any] = []
        if storage:
            for sop_class in GET_STORAGE_CLASSES:
                ae.add_requested_context(sop_class)
                roles.append(build_role(sop_class, scp_role=True))
            handlers = [(evt.EVT_C_STORE, self._on_store)]
        node = self.node
        assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, ext_neg=roles or None,
                             evt_handlers=handlers or None)
        if not assoc.is_established:
            raise PacsError(self._refusal(assoc))
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def _reachable(self) -> bool:
        try:
            with socket.create_connection((self.node.host, self.node.port), timeout=self.config.timeouts.connect_s):
                return True
        except OSError:
            return False

    def _refusal(self, assoc: Association) -> str:
        node, me = self.node, self.config.local.ae_title
        where = f"PACS {node.ae_title!r} at {node.host}:{node.port}"
        if not assoc.is_rejected and not self._reachable():
            return (f"could not reach the {where} within {self.config.timeouts.connect_s:g} s (connection refused "
                    "or timed out): check dimse.host, dimse.port and the firewall, or raise timeouts.connect_s")
        if assoc.is_rejected:
            return (f"the {where} rejected the association from {me!r}: the called AE title (dimse.ae_title) is "
                    f"not the PACS's, or the PACS does not know the calling AE title {me!r} (local.ae_title); "
                    "check both with the PACS administrator")
        if assoc.is_aborted:
            return (f"the {where} aborted the association from {me!r} (it closed the connection during "
                    "negotiation): check that dimse.port is its DICOM port and local.ae_title is registered")
        return f"the association with the {where} failed (neither accepted, rejected nor aborted)"

    # -- queries -------------------------------------------------------------------------------------
    def _query_association(self) -> Association:
        if self._query is None or not self._query.is_established:
            ae = self._ae()
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
            node = self.node
            assoc = ae.associate(node.host, node.port, ae_title=node.ae_title)
            if not assoc.is_established:
                raise PacsError(self._refusal(assoc))
            self._query = assoc
        return self._query

    def _find(self, query: Dataset) -> list[Dataset]:
        out = []
        assoc = self._query_association()
        pause_reactor(assoc)
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if not status:
                raise PacsError(self._silence("C-FIND", assoc))
            if status.Status in _PENDING and identifier is not None:
                out.append(identifier)
            elif status.Status not in _PENDING and status.Status != 0x0000:
                raise PacsError(f"C-FIND at {query.QueryRetrieveLevel} level failed with status "
                                f"0x{status.Status:04X} from {self.node.ae_title!r}")
        return out

    def find_studies(self, patient_id: str, window: DateWindow) -> list[StudyHit]:
        """Studies of ``patient_id`` dated within ``window``."""
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientID = patient_id
        query.StudyDate = window.dicom_range()
        query.StudyInstanceUID = ""
        query.NumberOfStudyRelatedSeries = ""
        return [StudyHit(str(d.StudyInstanceUID), str(d.get("StudyDate", "") or ""),
                         count_value(d.get("NumberOfStudyRelatedSeries"))) for d in self._find(query)]

    def find_series(self, study_uid: str) -> list[SeriesHit]:
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = ""
        query.Modality = ""
        query.NumberOfSeriesRelatedInstances = ""
        return [SeriesHit(study_uid, str(d.SeriesInstanceUID), str(d.get("Modality", "") or ""),
                          count_value(d.get("NumberOfSeriesRelatedInstances"))) for d in self._find(query)]

    def find_instances(self, study_uid: str, series_uid: str) -> list[InstanceHit]:
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID, query.SeriesInstanceUID = study_uid, series_uid
        query.SOPInstanceUID = ""
        query.SOPClassUID = ""
        return [InstanceHit(str(d.SOPInstanceUID), str(d.get("SOPClassUID", "") or "")) for d in self._find(query)]

    # -- retrieval -----------------------------------------------------------------------------------
    def retrieve(self, series: SeriesHit, wanted: list[InstanceHit], everything: bool) -> str:
        """C-MOVE (or C-GET) the whole series, or each wanted instance at image level."""
        identifiers = []
        if everything:
            identifiers.append(self._identifier(series, None))
        else:
            identifiers.extend(self._identifier(series, hit.sop_uid) for hit in wanted)
        move = self.node.retrieve == "move"
        model = StudyRootQueryRetrieveInformationModelMove if move else StudyRootQueryRetrieveInformationModelGet
        problems: list[str] = []
        with self._association(model, storage=not move) as assoc:
            for identifier in identifiers:
                pause_reactor(assoc)
                responses = (assoc.send_c_move(identifier, self.config.local.destination, model) if move
                             else assoc.send_c_get(identifier, model))
                problem = self._final(responses, assoc, series.series_uid)
                if problem and problem not in problems:
                    problems.append(problem)
        return "; ".join(problems)

    @staticmethod
    def _identifier(series: SeriesHit, sop_uid: str | None) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES" if sop_uid is None else "IMAGE"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = series.study_uid, series.series_uid
        if sop_uid is not None:
            ds.SOPInstanceUID = sop_uid
        return ds

    def _silence(self, what: str, assoc: Association) -> str:
        me = self.config.local.ae_title
        if assoc.is_aborted:
            return (f"the PACS {self.node.ae_title!r} aborted the association during {what}: it does not allow the "
                    f"calling AE title {me!r} to query or retrieve; ask the PACS administrator to register {me!r} "
                    "(local.ae_title) with this server's address")
        return (f"{what} to {self.node.ae_title!r} got no answer within {self.config.timeouts.dimse_s:g} s: either "
                f"the PACS ignores requests from the unregistered AE title {me!r} (ask its administrator to register "
                "local.ae_title with this server's address) or it is stalled (raise timeouts.dimse_s, try later)")

    def _final(self, responses: Any, assoc: Association, series_uid: str) -> str:
        with self._lock:
            before = self._attempts.get(series_uid, 0)
        last = None
        for status, _identifier in responses:
            if not status:
                raise PacsError(self._silence("the retrieve", assoc))
            last = status
        if last is None or last.Status in (0x0000, *_PENDING):
            return ""
        if last.Status == 0xA801:
            raise PacsError(_status_text(0xA801, self.config.local.destination, self.config.local.port))
        counts = sum(int(last.get(k, 0) or 0) for k in ("NumberOfCompletedSuboperations",
                                                         "NumberOfFailedSuboperations", "NumberOfWarningSuboperations"))
        with self._lock:
            reached = self._attempts.get(series_uid, 0) > before
        if not counts and not reached:  # it sent nothing at all: not a partial retrieval but a refusal
            raise PacsError(self._nothing_sent(int(last.Status)))
        failed = int(last.get("NumberOfFailedSuboperations", 0) or 0)
        text = _status_text(int(last.Status), self.config.local.destination, self.config.local.port)
        return f"{text}; {failed} sub-operation(s) failed" if failed else text

    def _nothing_sent(self, status: int) -> str:
        local = self.config.local
        if self.node.retrieve == "move":
            return (f"the PACS {self.node.ae_title!r} failed the C-MOVE (status 0x{status:04X}) without sending a "
                    f"single instance: most likely it does not know the move destination AE title "
                    f"{local.destination!r}; ask the PACS administrator to add AE {local.destination!r} at this "
                    f"server's address and port {local.port} (the site's storage SCP)")
        return (f"the PACS {self.node.ae_title!r} failed the C-GET (status 0x{status:04X}) without sending a single "
                f"instance: check that it allows C-GET from {local.ae_title!r}, or use retrieve: move")

    # -- storage SCP ---------------------------------------------------------------------------------
    def _start_scp(self) -> Any:
        ae = self._ae()
        for sop_class in GET_STORAGE_CLASSES:
            ae.add_supported_context(sop_class)
        from pynetdicom import StoragePresentationContexts

        for context in StoragePresentationContexts:
            if context.abstract_syntax and context.abstract_syntax not in GET_STORAGE_CLASSES:
                ae.add_supported_context(context.abstract_syntax)
        ae.require_calling_aet = [self.node.ae_title]
        local = self.config.local
        try:
            return ae.start_server((local.host, local.port), block=False, evt_handlers=[(evt.EVT_C_STORE,
                                                                                        self._on_store)])
        except OSError as exc:
            raise PacsError(f"cannot start the site's storage SCP on {local.host}:{local.port} ({exc}): the port "
                            "is in use or not allowed; choose another local.port (and tell the PACS administrator)"
                            ) from exc

    def _on_store(self, event: Any) -> int:
        try:
            ds = event.dataset
            with self._lock:
                key = str(ds.SeriesInstanceUID)
                self._attempts[key] = self._attempts.get(key, 0) + 1
            wanted = self.receive(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID),
                                  event.encoded_dataset(include_meta=True))
        except Exception as exc:  # a failed write must reach the PACS as a failed sub-operation, and the log
            log.error("could not store an instance received from the PACS: %s", exc)
            return 0xA700
        return 0x0000 if wanted else 0xC001
