"""``pull``: the enrolled patients' protocol studies, from the PACS into an ingest inbox, resumably.

Per patient (in USUBJID order): C-FIND / QIDO-RS the studies in each protocol date window, their series
(kept when their modality is configured) and instances; every listed instance whose file is not yet in
the inbox is requested (whole series in one request when none of it is there), at most ``concurrency``
series at a time; each received instance is written to a temporary file and renamed. ``pacs_pull.csv``
then accounts for every requested instance (RECEIVED or MISSING with the reason) and the site tables are
copied in, so the inbox is an export ``fedresponse ingest`` reads. A re-run fetches only what is missing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from evaluation.protocol import StudyProtocol, load_protocol
from fl_client.exceptions import PacsError
from fl_client.pacs.config import PacsConfig
from fl_client.pacs.inbox import (
    PulledInstance,
    clear_partials,
    copy_site_tables,
    instance_path,
    read_pull_manifest,
    write_instance,
    write_pull_manifest,
)
from fl_client.pacs.plan import PatientRequest, plan_pull
from fl_client.pacs.routes import InstanceHit, Route, SeriesHit
from fl_client.progress import NoProgress, ProgressSink

log = logging.getLogger(__name__)
_Hit = TypeVar("_Hit")
#: (how many entries the PACS counts but did not list, why): a listing shorter than the PACS's own count.
Shortfall = tuple[int, str]


@dataclass
class PullSummary:
    """What a pull did; ``missing`` > 0 means a re-run is needed (the reasons are in ``problems``)."""

    inbox: Path
    route: str
    patients: int = 0
    studies: int = 0
    series: int = 0
    requested: int = 0
    already_present: int = 0
    received: int = 0
    missing: int = 0
    unlisted: int = 0  # series and instances the PACS counts but did not list (no UID to fetch or account for)
    problems: list[str] = field(default_factory=list)
    series_problems: dict[str, str] = field(default_factory=dict)  # SeriesInstanceUID → the PACS's status
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return self.missing == 0 and self.unlisted == 0


class _Receiver:
    """Writes wanted instances into the inbox (called from the route's threads)."""

    def __init__(self, inbox: Path) -> None:
        self.inbox = inbox
        self.wanted: set[tuple[str, str, str]] = set()
        self.received = 0
        self._lock = threading.Lock()

    def want(self, study: str, series: str, sops: list[InstanceHit]) -> None:
        with self._lock:
            self.wanted.update((study, series, hit.sop_uid) for hit in sops)

    def __call__(self, study: str, series: str, sop: str, data: bytes) -> bool:
        with self._lock:
            if (study, series, sop) not in self.wanted:
                log.warning("refused an instance the pull did not ask for (series %s)", series[-12:])
                return False
        path = instance_path(self.inbox, study, series, sop)
        try:
            write_instance(path, data)
        except OSError as exc:
            raise PacsError(f"cannot write a received instance to {path} ({exc}): is the inbox's disk full or "
                            "read-only? Fix it and run the pull again") from exc
        with self._lock:
            self.received += 1
        return True


def make_route(config: PacsConfig, name: str, receive: _Receiver, retrieving: bool = True) -> Route:
    """The route called ``name`` (``dimse`` or ``dicomweb``) of the site configuration; ``retrieving=False``
    for queries only (no storage SCP is started)."""
    config.route(name)  # a clear error when it is not configured
    if name == "dimse":
        from fl_client.pacs.dimse import DimseRoute

        return DimseRoute(config, receive, retrieving)
    from fl_client.pacs.dicomweb import DicomWebRoute

    return DicomWebRoute(config, receive)


@contextmanager
def _exclusive(inbox: Path) -> Iterator[None]:
    """One pull per inbox at a time: an advisory lock on the inbox folder itself (no lock file, which ingest
    would have to account for)."""
    inbox.mkdir(parents=True, exist_ok=True)
    handle = os.open(inbox, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise PacsError(f"another pull is writing {inbox}; wait for it to finish and run again") from exc
        yield
    finally:
        os.close(handle)


def pull(config: PacsConfig, tables: Path, inbox: Path, route_name: str, protocol: StudyProtocol | None = None,
         progress: ProgressSink | None = None) -> PullSummary:
    """Pull the enrolled patients of ``tables/enrolment_log.csv`` into ``inbox`` over ``route_name``.

    Raises
    ------
    PacsError
        A fatal problem (bad configuration, refused association, unknown AE title, timeout); the instances
        received so far stay (each complete) and are accounted for in ``pacs_pull.csv``.
    """
    start = time.perf_counter()
    tables, inbox = Path(tables), Path(inbox)
    if inbox.resolve().is_relative_to(tables.resolve()) and inbox.resolve() != tables.resolve():
        raise PacsError(f"the inbox {inbox} must not lie inside the site tables folder {tables}")
    protocol = protocol or load_protocol()
    requests = plan_pull(tables, config.site, protocol, config.margin_days)
    summary = PullSummary(inbox=inbox, route=route_name)
    with _exclusive(inbox):
        stale = clear_partials(inbox)
        if stale:
            log.warning("removed %d partial file(s) of an interrupted pull; their instances are fetched again", stale)
        rows: list[PulledInstance] = []
        receiver = _Receiver(inbox)
        fatal = ""
        try:
            with make_route(config, route_name, receiver) as route:
                _pull_patients(route, config, requests, receiver, rows, summary, progress or NoProgress())
        except PacsError as exc:
            fatal = f"the pull stopped: {exc}"
            raise
        finally:
            summary.received = receiver.received
            _account(inbox, rows, summary, fatal)
        copy_site_tables(tables, inbox)
    summary.seconds = time.perf_counter() - start
    return summary


@dataclass(frozen=True)
class StudyHolding:
    """What the PACS holds of one study in a patient's protocol windows (``fedresponse pacs query``)."""

    usubjid: str
    visit: str
    study_date: str
    series: int
    instances: int
    in_inbox: int


def survey(config: PacsConfig, tables: Path, route_name: str, inbox: Path | None = None,
           protocol: StudyProtocol | None = None) -> list[StudyHolding]:
    """Query only: per enrolled patient and study in its windows, the series and instances the PACS lists."""
    requests = plan_pull(Path(tables), config.site, protocol or load_protocol(), config.margin_days)
    receiver = _Receiver(Path(inbox) if inbox else Path(tables) / ".no-inbox")
    out: dict[tuple[str, str], list[int]] = {}
    labels: dict[tuple[str, str], tuple[str, str]] = {}
    shortfalls: list[Shortfall] = []
    with make_route(config, route_name, receiver, retrieving=False) as route:
        for request in requests:
            for visit, study_date, series in _patient_series(route, config, request, shortfalls):
                listed = _instances(route, series, shortfalls)
                present = sum(instance_path(receiver.inbox, series.study_uid, series.series_uid, h.sop_uid).is_file()
                              for h in listed) if inbox else 0
                counts = out.setdefault((request.usubjid, series.study_uid), [0, 0, 0])
                counts[0], counts[1], counts[2] = counts[0] + 1, counts[1] + len(listed), counts[2] + present
                labels[(request.usubjid, series.study_uid)] = (visit, study_date)
    if shortfalls:
        raise PacsError("the PACS lists fewer entries than it counts, so these holdings would be incomplete: "
                        + "; ".join(why for _, why in shortfalls))
    return [StudyHolding(u, *labels[(u, s)], *c) for (u, s), c in out.items()]


def _pull_patients(route: Route, config: PacsConfig, requests: list[PatientRequest], receiver: _Receiver,
                   rows: list[PulledInstance], summary: PullSummary, progress: ProgressSink) -> None:
    progress.expect("patients", len(requests))
    with ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="pacs-pull") as pool:
        for request in requests:
            log.debug("pulling %s: %d window(s)", request.usubjid, len(request.windows))
            jobs = []
            shortfalls: list[Shortfall] = []
            for visit, study_date, series in _patient_series(route, config, request, shortfalls):
                summary.series += 1
                progress.expect("series", 1)
                listed = _instances(route, series, shortfalls)
                missing = [h for h in listed if not instance_path(receiver.inbox, series.study_uid,
                                                                  series.series_uid, h.sop_uid).is_file()]
                summary.requested += len(listed)
                summary.already_present += len(listed) - len(missing)
                receiver.want(series.study_uid, series.series_uid, missing)
                rows.extend(_row(request, visit, study_date, series, h, route.name) for h in listed)
                if missing:
                    everything = len(missing) == len(listed)
                    jobs.append((series, pool.submit(route.retrieve, series, missing, everything)))
                else:
                    progress.advance("series")
            for series, job in jobs:
                problem = job.result()
                progress.advance("series")
                if problem:
                    summary.problems.append(f"series …{series.series_uid[-12:]} of {series.study_uid[-12:]}: {problem}")
                    summary.series_problems[series.series_uid] = problem
            for count, why in shortfalls:
                summary.unlisted += count
                summary.problems.append(f"{request.usubjid}: {why}")
            summary.patients += 1
            progress.advance("patients")


def _patient_series(route: Route, config: PacsConfig, request: PatientRequest,
                    shortfalls: list[Shortfall]) -> Iterator[tuple[str, str, SeriesHit]]:
    """(visit window, study date, series) of the patient's studies in its windows, modality filtered; a study
    whose series listing stays short of the PACS's own count adds to ``shortfalls`` (:func:`_checked`)."""
    seen: set[str] = set()
    for window in request.windows:
        for study in route.find_studies(request.patient_id, window):
            if study.study_uid in seen:
                continue
            seen.add(study.study_uid)
            found = _checked(partial(route.find_series, study.study_uid), study.series_count,
                             f"series of study …{study.study_uid[-12:]}", shortfalls)
            for series in found:
                if not config.modalities or series.modality in config.modalities:
                    yield window.visit, study.study_date, series


def _instances(route: Route, series: SeriesHit, shortfalls: list[Shortfall]) -> list[InstanceHit]:
    return _checked(partial(route.find_instances, series.study_uid, series.series_uid), series.instance_count,
                    f"instances of series …{series.series_uid[-12:]}", shortfalls)


def _checked(query: Callable[[], list[_Hit]], expected: int | None, what: str,
             shortfalls: list[Shortfall]) -> list[_Hit]:
    """``query()``, cross-checked against the count the PACS returned one level up (``expected``; None: the
    PACS gave none). A shorter listing is queried once more — a lost response, or a PACS result limit, must not
    silently shrink what the pull asks for and accounts — and a listing still short adds to ``shortfalls``.
    A longer one (instances stored between the two queries) is taken as it is."""
    hits = query()
    if expected is None or len(hits) >= expected:
        return hits
    log.warning("the PACS listed %d of the %d %s it counts; querying again", len(hits), expected, what)
    again = query()
    if len(again) >= expected:
        return again
    best = max(hits, again, key=len)
    shortfalls.append((expected - len(best), f"the PACS counts {expected} {what} but lists {len(best)} (twice): "
                       "check its C-FIND/QIDO result limits (e.g. Orthanc LimitFindInstances) and run the pull again"))
    return best


def _row(request: PatientRequest, visit: str, study_date: str, series: SeriesHit, hit: InstanceHit,
         route: str) -> PulledInstance:
    return PulledInstance(USUBJID=request.usubjid, VISIT=visit, STUDY_DATE=study_date, STUDY_UID=series.study_uid,
                          SERIES_UID=series.series_uid, MODALITY=series.modality, SOP_UID=hit.sop_uid,
                          SOP_CLASS=hit.sop_class, ROUTE=route, STATUS="", PATH="", REASON="")


def _account(inbox: Path, rows: list[PulledInstance], summary: PullSummary, fatal: str = "") -> None:
    """Mark every requested instance RECEIVED or MISSING (by the file), keep earlier rows still on disk."""
    silent = fatal or "the PACS did not send it (no failure status): run the pull again"
    listed = set()
    for row in rows:
        path = instance_path(inbox, row.STUDY_UID, row.SERIES_UID, row.SOP_UID)
        listed.add(row.SOP_UID)
        row.PATH = path.relative_to(inbox).as_posix()
        reason = summary.series_problems.get(row.SERIES_UID, silent)
        row.STATUS, row.REASON = ("RECEIVED", "") if path.is_file() else ("MISSING", reason)
    summary.missing = sum(r.STATUS == "MISSING" for r in rows)
    summary.studies = len({r.STUDY_UID for r in rows})
    for old in read_pull_manifest(inbox):
        if old.SOP_UID not in listed and (inbox / old.PATH).is_file():
            old.REASON = "pulled by an earlier run; not listed by the PACS in this one"
            rows.append(old)
    write_pull_manifest(inbox, rows)
