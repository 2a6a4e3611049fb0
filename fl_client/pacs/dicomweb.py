"""The DICOMweb route (dicomweb-client): QIDO-RS at study, series and instance level; WADO-RS retrieval.

HTTPS with the site's CA bundle (and client certificate) by default; plain HTTP only where the site
configuration allows it explicitly. A whole series streams as one multipart response written instance
by instance; missing instances of a partial series are fetched one by one.
"""

from __future__ import annotations

import io
from typing import Any

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from fl_client.exceptions import PacsError
from fl_client.pacs.config import DicomWebNode, PacsConfig
from fl_client.pacs.plan import DateWindow
from fl_client.pacs.routes import InstanceHit, Receiver, SeriesHit, StudyHit, count_value

_STUDY_UID, _SERIES_UID, _SOP_UID = "0020000D", "0020000E", "00080018"
_SOP_CLASS, _MODALITY, _STUDY_DATE = "00080016", "00080060", "00080020"
_STUDY_SERIES, _SERIES_INSTANCES = "00201206", "00201209"  # Number of Study Related Series / Series Related Instances


def _value(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value", [])
    return str(values[0]) if values else ""


def _session(node: DicomWebNode) -> requests.Session:
    session = requests.Session()
    # The configuration alone decides whom we trust: with trust_env, requests lets REQUESTS_CA_BUNDLE /
    # CURL_CA_BUNDLE override session.verify (psf/requests#3829), and would route through environment proxies.
    session.trust_env = False
    session.verify = str(node.ca_bundle) if node.ca_bundle else True
    if node.client_cert:
        session.cert = str(node.client_cert)
    if node.bearer_token_file:
        token = node.bearer_token_file.read_text(encoding="utf-8").strip()
        session.headers["Authorization"] = f"Bearer {token}"
    return session


def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class DicomWebRoute:
    """Query/retrieve over DICOMweb (a context manager for symmetry with the DIMSE route)."""

    name = "dicomweb"

    def __init__(self, config: PacsConfig, receive: Receiver) -> None:
        node = config.route("dicomweb")
        assert isinstance(node, DicomWebNode)
        self.node, self.config, self.receive = node, config, receive
        self.client = DICOMwebClient(url=node.url.rstrip("/"), session=_session(node),
                                     timeout=config.timeouts.http_s)
        self.client.set_http_retry_params(retry=config.timeouts.http_attempts > 1,
                                          max_attempts=config.timeouts.http_attempts)

    def __enter__(self) -> DicomWebRoute:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client._session.close()

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise PacsError(f"TLS verification of {self.node.url} failed during {what} ({exc}): give the PACS's CA "
                            "certificate as dicomweb.ca_bundle in the site configuration") from exc
        except requests.exceptions.Timeout as exc:
            raise PacsError(f"{what} on {self.node.url} timed out after {self.config.timeouts.http_s:g} s "
                            f"({self.config.timeouts.http_attempts} attempt(s); timeouts.http_s, http_attempts)"
                            ) from exc
        except requests.exceptions.ConnectionError as exc:
            raise PacsError(f"cannot connect to {self.node.url} for {what} ({type(exc).__name__}): check "
                            "dicomweb.url and the firewall") from exc
        except requests.exceptions.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else "?"
            hint = " (check dicomweb.bearer_token_file)" if code in (401, 403) else ""
            raise PacsError(f"{what} on {self.node.url} failed with HTTP {code}{hint}") from exc

    def find_studies(self, patient_id: str, window: DateWindow) -> list[StudyHit]:
        filters = {"PatientID": patient_id}
        if window.dicom_range():
            filters["StudyDate"] = window.dicom_range()
        found = self._call("QIDO-RS study search", self.client.search_for_studies, search_filters=filters,
                           fields=["NumberOfStudyRelatedSeries"], get_remaining=True)
        return [StudyHit(_value(s, _STUDY_UID), _value(s, _STUDY_DATE), count_value(_value(s, _STUDY_SERIES)))
                for s in found]

    def find_series(self, study_uid: str) -> list[SeriesHit]:
        found = self._call("QIDO-RS series search", self.client.search_for_series, study_instance_uid=study_uid,
                           fields=["NumberOfSeriesRelatedInstances"], get_remaining=True)
        return [SeriesHit(study_uid, _value(s, _SERIES_UID), _value(s, _MODALITY),
                          count_value(_value(s, _SERIES_INSTANCES))) for s in found]

    def find_instances(self, study_uid: str, series_uid: str) -> list[InstanceHit]:
        found = self._call("QIDO-RS instance search", self.client.search_for_instances, study_instance_uid=study_uid,
                           series_instance_uid=series_uid, get_remaining=True)
        return [InstanceHit(_value(i, _SOP_UID), _value(i, _SOP_CLASS)) for i in found]

    def retrieve(self, series: SeriesHit, wanted: list[InstanceHit], everything: bool) -> str:
        """WADO-RS: the series as one multipart stream, or the wanted instances one by one."""
        refused = 0
        if everything:
            stream = self._call("WADO-RS series retrieve", self.client.iter_series, series.study_uid,
                                series.series_uid)
            # one instance in memory at a time: each is written before the next is read off the stream
            while (ds := self._call("WADO-RS series retrieve", next, stream, None)) is not None:
                refused += not self._hand_over(series, ds)
        else:
            for hit in wanted:
                ds = self._call("WADO-RS instance retrieve", self.client.retrieve_instance, series.study_uid,
                                series.series_uid, hit.sop_uid)
                refused += not self._hand_over(series, ds)
        return f"{refused} instance(s) sent that were not asked for" if refused else ""

    def _hand_over(self, series: SeriesHit, ds: Dataset) -> bool:
        return self.receive(series.study_uid, series.series_uid, str(ds.SOPInstanceUID), _part10(ds))
