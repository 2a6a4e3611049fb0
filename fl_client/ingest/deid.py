"""De-identification at the source (DICOM PS3.15 Annex E).

Profile: Basic Application Level Confidentiality Profile with the *Retain Longitudinal Temporal
Information with Modified Dates* option (one date shift per patient, so intervals, study days and PFS
survive) and the *Clean Descriptors* option (descriptions kept only after removing every identifier of
the patient they describe).

The store holds no DICOM file: only the attributes listed in :data:`KEEP` survive into it, taken from
the de-identified dataset. That whitelist is stricter than Annex E (which keeps every attribute it does
not name); the action table below follows Annex E Table E.1-1 for the attributes it names, so a
de-identified dataset can also be written out as DICOM if a later stage needs one.

Pseudonyms are keyed: UIDs become ``2.25.<128-bit HMAC-SHA256(secret, uid)>`` and the date shift is
``-(HMAC(secret, PatientID) mod 3285) - 365`` days (between one and ten years back), so re-running
with the same secret (kept in the encrypted re-identification key) reproduces them exactly.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

# Annex E action codes used here: X remove, Z empty, D dummy, U remap UID, C clean (shift dates /
# scrub free text), K keep.
ACTIONS: dict[str, str] = {
    # Patient identification and demographics (Table E.1-1)
    "PatientName": "Z", "PatientID": "Z", "IssuerOfPatientID": "X", "PatientBirthDate": "Z",
    "PatientBirthTime": "X", "PatientSex": "K", "OtherPatientIDs": "X", "OtherPatientNames": "X",
    "OtherPatientIDsSequence": "X", "PatientBirthName": "X", "PatientAge": "X", "PatientSize": "X",
    "PatientWeight": "X", "PatientAddress": "X", "PatientMotherBirthName": "X", "MilitaryRank": "X",
    "MedicalRecordLocator": "X", "EthnicGroup": "X", "Occupation": "X", "AdditionalPatientHistory": "X",
    "PatientComments": "X", "PatientTelephoneNumbers": "X", "ResponsiblePerson": "X",
    "CountryOfResidence": "X", "RegionOfResidence": "X", "MedicalAlerts": "X", "Allergies": "X",
    "PregnancyStatus": "X", "SmokingStatus": "X", "PatientReligiousPreference": "X",
    # People, places and devices
    "InstitutionName": "X", "InstitutionAddress": "X", "InstitutionalDepartmentName": "X",
    "ReferringPhysicianName": "Z", "ReferringPhysicianAddress": "X", "PerformingPhysicianName": "X",
    "NameOfPhysiciansReadingStudy": "X", "OperatorsName": "X", "PhysiciansOfRecord": "X",
    "RequestingPhysician": "X", "StationName": "X", "DeviceSerialNumber": "X", "PlateID": "X",
    "DetectorID": "X", "ProtocolName": "C", "RequestAttributesSequence": "X",
    # Study / accession identifiers
    "AccessionNumber": "Z", "StudyID": "Z", "AdmissionID": "X", "IssuerOfAdmissionID": "X",
    "PerformedProcedureStepID": "X", "ScheduledProcedureStepID": "X", "RequestedProcedureID": "X",
    "FillerOrderNumberImagingServiceRequest": "X", "PlacerOrderNumberImagingServiceRequest": "X",
    # Free text (Clean Descriptors option)
    "StudyDescription": "C", "SeriesDescription": "C", "ImageComments": "X", "DerivationDescription": "C",
    "ContentCreatorName": "Z", "AdmittingDiagnosesDescription": "X", "RequestedProcedureDescription": "C",
    "PerformedProcedureStepDescription": "C", "TextValue": "X", "StructureSetName": "C",
    "StructureSetLabel": "C", "StructureSetDescription": "X", "ROIName": "K", "ROIDescription": "X",
    "ROIInterpreter": "Z", "SeriesNumber": "K",
    # UIDs
    "StudyInstanceUID": "U", "SeriesInstanceUID": "U", "SOPInstanceUID": "U", "FrameOfReferenceUID": "U",
    "ReferencedSOPInstanceUID": "U", "ReferencedFrameOfReferenceUID": "U", "MediaStorageSOPInstanceUID": "U",
    "StorageMediaFileSetUID": "U", "SynchronizationFrameOfReferenceUID": "U", "IrradiationEventUID": "U",
    "InstanceCreatorUID": "U", "DimensionOrganizationUID": "U", "ConcatenationUID": "U",
    # Dates and times (Modified Dates option: dates shifted, times kept)
    "StudyDate": "C", "SeriesDate": "C", "AcquisitionDate": "C", "ContentDate": "C",
    "InstanceCreationDate": "C", "StructureSetDate": "C", "AcquisitionDateTime": "C",
}

#: Attributes carried into the store (the whitelist). Everything else is dropped after de-identification.
KEEP: tuple[str, ...] = (
    "SOPClassUID", "Modality", "ImageType", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
    "StudyDate", "SeriesDescription", "Manufacturer", "ManufacturerModelName", "ConvolutionKernel",
    "SliceThickness", "KVP", "PixelSpacing", "ImageOrientationPatient", "Rows", "Columns", "SeriesNumber",
    "PatientSex", "BodyPartExamined", "ContrastBolusAgent", "GantryDetectorTilt", "BurnedInAnnotation",
)

_UID_VR = "UI"
_DATE_VRS = ("DA", "DT")
_TOKEN_MIN = 3


@dataclass(frozen=True)
class PatientPseudonym:
    """Everything de-identification needs to know about one patient.

    Attributes
    ----------
    usubjid : str
        ``STUDYID-SITEID-NNNN``.
    date_shift_days : int
        Days added to every date of this patient (negative: back in time).
    phi_tokens : tuple[str, ...]
        Identifying strings of this patient (ID, name parts, birth date) scrubbed from free text.
    """

    usubjid: str
    date_shift_days: int
    phi_tokens: tuple[str, ...] = field(default_factory=tuple)


def _digest(secret: bytes, purpose: str, value: str) -> bytes:
    return hmac.new(secret, f"{purpose}:{value}".encode(), hashlib.sha256).digest()


def remap_uid(uid: str, secret: bytes) -> str:
    """Deterministic keyed replacement of a DICOM UID (``2.25.`` + 128-bit integer, ≤ 44 characters)."""
    return "2.25." + str(int.from_bytes(_digest(secret, "uid", str(uid).strip())[:16], "big"))


def date_shift_days(patient_id: str, secret: bytes) -> int:
    """The patient's date offset in days, in [-3649, -365], reproducible from the secret."""
    return -365 - int.from_bytes(_digest(secret, "date", patient_id)[:8], "big") % 3285


def shift_date(value: str, days: int) -> str:
    """Shift a DICOM DA (``YYYYMMDD``) or the date part of a DT by ``days``; '' stays ''."""
    value = str(value).strip()
    if not value:
        return ""
    if not re.fullmatch(r"\d{8}.*", value):
        return ""  # unparseable dates are removed rather than kept
    shifted = date(int(value[:4]), int(value[4:6]), int(value[6:8])) + timedelta(days=days)
    return shifted.strftime("%Y%m%d") + value[8:]


def _long_enough(token: str) -> bool:
    # Ideographic name parts are one or two characters; Latin ones need three to avoid scrubbing "CT".
    return len(token) >= (_TOKEN_MIN if token.isascii() else 2)


def phi_tokens(values: Iterable[str], *, split: bool = True) -> tuple[str, ...]:
    """Identifying values worth scrubbing: each value whole and, with ``split``, its name/word parts.

    Names (``^``, ``=`` component groups, spaces) are split because descriptions mention people by parts
    of their names; institution names and addresses should be passed with ``split=False`` so that a
    hospital called "... Chest Hospital" does not scrub the word CHEST from every description.
    """
    tokens: set[str] = set()
    for value in values:
        text = str(value or "").strip()
        if _long_enough(text):
            tokens.add(text)
        if split:
            tokens.update(part for part in re.split(r"[\^\s,=]+", text) if _long_enough(part))
    return tuple(sorted(tokens, key=len, reverse=True))


def clean_text(text: str, tokens: Iterable[str]) -> str:
    """Clean Descriptors: remove every token (case-insensitive; Latin tokens as whole words) from a text."""
    out = str(text)
    for token in tokens:
        pattern = rf"(?<![A-Za-z0-9]){re.escape(token)}(?![A-Za-z0-9])" if token.isascii() else re.escape(token)
        out = re.sub(pattern, "", out, flags=re.IGNORECASE)
    return re.sub(r"\s{2,}", " ", out).strip()


def _apply(ds: Dataset, tag: BaseTag, action: str, who: PatientPseudonym, secret: bytes) -> None:
    elem = ds[tag]
    if action == "X":
        del ds[tag]
    elif action == "Z":
        elem.value = ""
    elif action == "U" and elem.value:
        values = elem.value if elem.VM > 1 else [elem.value]
        remapped = [remap_uid(v, secret) for v in values]
        elem.value = remapped if elem.VM > 1 else remapped[0]
    elif action == "C" and elem.VR in _DATE_VRS:
        elem.value = shift_date(elem.value, who.date_shift_days)
    elif action == "C":
        elem.value = clean_text(elem.value, who.phi_tokens)


def deidentify(ds: Dataset, who: PatientPseudonym, secret: bytes) -> Dataset:
    """De-identify a dataset in place (recursing into sequences) and return it.

    Private tags, overlays and curves are removed; every attribute named in :data:`ACTIONS` gets its
    action; any other UI-valued attribute is remapped and any other date shifted (so nothing
    identifying slips through an attribute the table does not name). Free text is cleaned of the
    patient's identifiers and of every value this dataset's removed attributes held (institution,
    physicians, station, ...). The patient's name and ID
    become the pseudonym, as Annex E allows for a replaced identifier.
    """
    _clean(ds, who, secret)
    if "PatientID" in ds:
        ds.PatientID = who.usubjid
    if "PatientName" in ds:
        ds.PatientName = who.usubjid
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "PS3.15 E.1 Basic; Modified Dates; Clean Descriptors"
    return ds


def _clean(ds: Dataset, who: PatientPseudonym, secret: bytes) -> None:
    """Apply the action table to one dataset or sequence item, recursively."""
    ds.remove_private_tags()
    removed = [e for e in ds if ACTIONS.get(e.keyword) in ("X", "Z") and e.VR not in ("SQ", "OB", "OW", "UN")]
    names = phi_tokens([str(e.value) for e in removed if e.VR == "PN"])
    others = phi_tokens([str(e.value) for e in removed if e.VR != "PN"], split=False)
    who = PatientPseudonym(who.usubjid, who.date_shift_days, tuple(sorted({*who.phi_tokens, *names, *others},
                                                                           key=len, reverse=True)))
    for elem in list(ds):
        group = elem.tag.group
        if 0x5000 <= group <= 0x50FF or (0x6000 <= group <= 0x60FF and group % 2 == 0):  # curves, overlays
            del ds[elem.tag]
            continue
        if elem.VR == "SQ":
            for item in elem.value:
                _clean(item, who, secret)
            continue
        action = ACTIONS.get(elem.keyword)
        if action is None and elem.VR == _UID_VR and elem.keyword not in ("SOPClassUID", "ReferencedSOPClassUID",
                                                                          "TransferSyntaxUID"):
            action = "U" if elem.keyword != "MediaStorageSOPClassUID" else None
        if action is None and elem.VR in _DATE_VRS:
            action = "C"
        if action is not None and action != "K":
            _apply(ds, elem.tag, action, who, secret)


def kept_attributes(ds: Dataset) -> dict[str, object]:
    """The whitelisted attributes (:data:`KEEP`) of an already de-identified dataset, as plain values."""
    out: dict[str, object] = {}
    for keyword in KEEP:
        tag = Tag(keyword)
        if tag in ds and ds[tag].value not in (None, ""):
            value = ds[tag].value
            out[keyword] = [float(v) for v in value] if ds[tag].VM > 1 and ds[tag].VR == "DS" else value
    return out
