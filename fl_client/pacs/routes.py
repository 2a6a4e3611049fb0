"""What a route to the PACS can do, whichever protocol carries it: query three levels, retrieve a series."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from fl_client.pacs.plan import DateWindow


@dataclass(frozen=True)
class StudyHit:
    """A study the PACS holds for a patient (``study_date`` as DICOM DA; ``series_count`` the PACS's own
    Number of Study Related Series, None where it does not return it)."""

    study_uid: str
    study_date: str
    series_count: int | None = None


@dataclass(frozen=True)
class SeriesHit:
    """A series of a study (``instance_count``: the PACS's Number of Series Related Instances, or None)."""

    study_uid: str
    series_uid: str
    modality: str
    instance_count: int | None = None


def count_value(value: object) -> int | None:
    """A returned Number of ... Related ... attribute as a count, None when absent or not a count."""
    try:
        count = int(str(value).strip())
    except ValueError:
        return None
    return count if count >= 0 else None


@dataclass(frozen=True)
class InstanceHit:
    """An instance (SOP) of a series, as the PACS lists it."""

    sop_uid: str
    sop_class: str


#: Called with each received instance's study, series and SOP instance UIDs and its Part 10 bytes; returns
#: whether the instance was wanted (an unrequested one is refused). Routes call it from their threads.
Receiver = Callable[[str, str, str, bytes], bool]


class Route(Protocol):
    """One way to the PACS (DIMSE or DICOMweb). Methods raise :class:`~fl_client.exceptions.PacsError`."""

    name: str

    def __enter__(self) -> Route: ...

    def __exit__(self, *exc: object) -> None: ...

    def find_studies(self, patient_id: str, window: DateWindow) -> list[StudyHit]: ...

    def find_series(self, study_uid: str) -> list[SeriesHit]: ...

    def find_instances(self, study_uid: str, series_uid: str) -> list[InstanceHit]: ...

    def retrieve(self, series: SeriesHit, wanted: list[InstanceHit], everything: bool) -> str:
        """Fetch ``wanted`` of ``series`` (the whole series in one request when ``everything``), handing each
        instance to the route's receiver; returns '' or why some were not sent (the PACS's status)."""
        ...
