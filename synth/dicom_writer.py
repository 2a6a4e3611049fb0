"""Writing CT Image Storage series (and the odd burned-in screen capture) the way a PACS exports them.

Single-frame files, Explicit VR Little Endian, opaque names in nested folders, PHI in the headers
(patient, institution, physicians, accession, free-text comments, a private RIS block). Geometry is
exact: ``ImagePositionPatient`` of every slice, ``ImageOrientationPatient`` axial, ``PixelSpacing``
(row, column), ``SliceThickness`` = ``SpacingBetweenSlices`` (contiguous thin slices).
"""

from __future__ import annotations

import datetime as dt
import itertools
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset as encode_dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from synth.identity import Hospital, PatientIdentity

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@dataclass(frozen=True)
class Scanner:
    """One site's CT scanner and reconstruction protocol."""

    manufacturer: str
    model: str
    kernel: str
    pixel_spacing: float  # mm, nominal (varies a little with the patient's display field of view)
    thickness: float  # mm
    noise_hu: float
    hu_offset: float  # calibration error of the scanner (HU)
    signed: bool  # PixelRepresentation 1 (int16) or 0 (uint16)
    intercept: float
    kvp: int


SCANNERS = [
    Scanner("GE MEDICAL SYSTEMS", "Revolution CT", "LUNG", 0.68, 0.625, 22.0, 8.0, False, -1024.0, 120),
    Scanner("SIEMENS", "SOMATOM Force", "Br40d", 0.78, 1.0, 15.0, -12.0, True, 0.0, 120),
    Scanner("Philips", "IQon - Spectral CT", "YB", 0.86, 0.8, 19.0, 4.0, False, -1000.0, 120),
]


@dataclass(frozen=True)
class StudyInfo:
    """Header values shared by every object of one imaging study (one visit)."""

    patient: PatientIdentity
    hospital: Hospital
    sex: str
    study_uid: str
    frame_uid: str
    study_date: dt.date
    accession: str
    study_id: str
    visit_note: str


def uid(*words: object) -> str:
    """A deterministic DICOM UID derived from ``words`` (reproducible for a fixed seed)."""
    return str(generate_uid(entropy_srcs=[str(w) for w in words]))


def _common_header(info: StudyInfo, sop_class: str, modality: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = info.study_date.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "093015"
    ds.AccessionNumber = info.accession
    ds.Modality = modality
    ds.Manufacturer = ""
    ds.InstitutionName = info.hospital.name
    ds.InstitutionAddress = info.hospital.address
    ds.ReferringPhysicianName = info.hospital.referring
    ds.StationName = info.hospital.station
    ds.StudyDescription = "CT CHEST WITH CONTRAST"
    ds.PerformingPhysicianName = info.hospital.performing
    ds.OperatorsName = info.hospital.operator
    ds.PatientName = info.patient.dicom_name
    ds.PatientID = info.patient.mrn
    ds.PatientBirthDate = info.patient.birth_date.strftime("%Y%m%d")
    ds.PatientSex = info.sex
    ds.OtherPatientIDs = info.patient.other_id
    ds.PatientAddress = info.patient.address
    ds.PatientTelephoneNumbers = info.patient.phone
    ds.AdditionalPatientHistory = (
        f"NSCLC on chemo-immunotherapy, {info.visit_note}; referred by {info.hospital.referring}"
    )
    ds.StudyInstanceUID = info.study_uid
    ds.StudyID = info.study_id
    ds.FrameOfReferenceUID = info.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "CHEST"
    # A private block written by the hospital's RIS: the MRN and a free-text note.
    block = ds.private_block(0x0029, "HOSPITAL RIS 1.0", create=True)
    block.add_new(0x01, "LO", info.patient.mrn)
    block.add_new(0x02, "LT", f"Booked by {info.hospital.operator} for {info.patient.name_alphabetic}")
    return ds


def _file_meta(ds: Dataset) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "FEDRESP_SYNTH"
    ds.file_meta = meta


def lowest_hu(scanner: Scanner) -> float:
    """Smallest HU the scanner can store (unsigned pixels cannot go below the rescale intercept)."""
    return -1024.0 if scanner.signed else max(-1024.0, scanner.intercept)


def _to_stored(hu: np.ndarray, scanner: Scanner) -> np.ndarray:
    values = np.clip(np.rint(hu + scanner.hu_offset), lowest_hu(scanner), 3071) - scanner.intercept
    return values.astype(np.int16 if scanner.signed else np.uint16)


def ct_series_datasets(
    info: StudyInfo, scanner: Scanner, hu: np.ndarray, spacing: tuple[float, float, float],
    origin: tuple[float, float, float], series_uid: str, series_number: int, description: str,
    first: int = 0, total: int | None = None,
) -> list[Dataset]:
    """One single-frame CT dataset per slice of ``hu`` (``(Z, Y, X)``, HU), bottom slice first.

    A series written slab by slab passes each slab with ``first`` (index of its first slice in the series,
    whose slice 0 lies at ``origin``) and ``total`` (slices in the series).
    """
    dz, dy, dx = spacing
    base = _common_header(info, CTImageStorage, "CT")
    base.Manufacturer = scanner.manufacturer
    base.ManufacturerModelName = scanner.model
    base.DeviceSerialNumber = info.hospital.device_serial
    base.SoftwareVersions = "synth-1.0"
    base.SeriesInstanceUID = series_uid
    base.SeriesNumber = series_number
    base.SeriesDescription = description
    base.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    base.AcquisitionNumber = 1
    base.KVP = scanner.kvp
    base.ConvolutionKernel = scanner.kernel
    base.SliceThickness = f"{dz:g}"
    base.SpacingBetweenSlices = f"{dz:g}"
    base.PixelSpacing = [f"{dy:.4f}", f"{dx:.4f}"]
    base.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    base.SamplesPerPixel = 1
    base.PhotometricInterpretation = "MONOCHROME2"
    base.Rows, base.Columns = int(hu.shape[1]), int(hu.shape[2])
    base.BitsAllocated, base.BitsStored, base.HighBit = 16, 16, 15
    base.PixelRepresentation = 1 if scanner.signed else 0
    base.RescaleIntercept = f"{scanner.intercept:g}"
    base.RescaleSlope = "1"
    base.RescaleType = "HU"
    base.WindowCenter, base.WindowWidth = "-600", "1500"
    base.BurnedInAnnotation = "NO"
    base.ImageComments = f"{info.visit_note} for {info.patient.name_alphabetic}"
    stored = _to_stored(hu, scanner)
    datasets = []
    total = hu.shape[0] if total is None else total
    for k in range(first, first + hu.shape[0]):
        ds = Dataset()
        ds.update(base)  # a new element dict: copy.copy would share it between slices
        ds.SOPInstanceUID = uid(series_uid, k)
        ds.InstanceNumber = total - k  # scanners number from the head down: never trust it for order
        z = origin[2] + k * dz
        ds.ImagePositionPatient = [f"{origin[0]:.3f}", f"{origin[1]:.3f}", f"{z:.3f}"]
        ds.SliceLocation = f"{z:.3f}"
        ds.add_new(0x7FE00010, "OW", stored[k - first].tobytes())
        _file_meta(ds)
        datasets.append(ds)
    return datasets


def burned_in_capture(info: StudyInfo, rng: np.random.Generator, series_uid: str) -> Dataset:
    """A dose-report screen capture with patient details burned into the pixels (must be quarantined)."""
    ds = _common_header(info, SECONDARY_CAPTURE, "OT")
    ds.Manufacturer = "RIS"
    ds.ConversionType = "WSD"
    ds.PatientOrientation = ""
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 999
    ds.SeriesDescription = "Dose Report"
    ds.SOPInstanceUID = uid(series_uid, "sc")
    ds.InstanceNumber = 1
    ds.BurnedInAnnotation = "YES"
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 128
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    pixels = (rng.random((128, 128)) < 0.02).astype(np.uint8) * 255  # stand-in for rendered text
    pixels[10:18, 8:120] = 255
    ds.PixelData = pixels.tobytes()
    _file_meta(ds)
    return ds


def write_dataset(ds: Dataset, path: Path) -> None:
    """Write a DICOM Part 10 file (creating folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_series(datasets: list[Dataset], paths: list[Path]) -> None:
    """Write the slices of one series to ``paths`` (fast path of :func:`encode_series`)."""
    for data, path in zip(encode_series(datasets), paths, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


# Elements that differ between the slices of a series; everything else is encoded once per series.
SLICE_TAGS = (0x00080018, 0x00200013, 0x00200032, 0x00201041, 0x7FE00010)


def _encode(ds: Dataset, encoding: str) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    encode_dataset(buffer, ds, parent_encoding=encoding)
    return buffer.getvalue()


def _encode_slice_element(element: DataElement) -> bytes:
    """Explicit VR little endian bytes of one per-slice element (UI, IS, DS or OW)."""
    head = struct.pack("<HH", element.tag.group, element.tag.element) + element.VR.encode()
    if element.VR == "OW":
        value = bytes(element.value)
        return head + struct.pack("<HI", 0, len(value)) + value
    values = element.value if isinstance(element.value, (list, MultiValue)) else [element.value]
    text = "\\".join(str(v) for v in values).encode("ascii")
    if len(text) % 2:
        text += b"\0" if element.VR == "UI" else b" "
    return head + struct.pack("<H", len(text)) + text


def encode_series(datasets: list[Dataset]) -> list[bytes]:
    """Part 10 bytes of every slice, encoding the shared elements once (identical to ``dcmwrite``).

    The elements of a series are split at the per-slice tags (:data:`SLICE_TAGS`) into runs that are
    encoded once; each file is the preamble, its own file meta group, and the runs interleaved with its
    own per-slice elements, in ascending tag order as Part 5 requires.
    """
    first = datasets[0]
    encoding = str(first.get("SpecificCharacterSet", "ISO_IR 100"))
    bounds = [0, *SLICE_TAGS, 0xFFFFFFFF + 1]
    runs = []
    for low, high in itertools.pairwise(bounds):
        run = Dataset()
        for element in first:
            if low <= int(element.tag) < high and int(element.tag) not in SLICE_TAGS:
                run.add(element)
        runs.append(_encode(run, encoding))
    encoded = []
    for ds in datasets:
        meta = DicomBytesIO()
        meta.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
        parts = [meta.getvalue(), runs[0]]
        for tag, encoded_run in zip(SLICE_TAGS, runs[1:], strict=True):
            if tag in ds:
                parts.append(_encode_slice_element(ds[tag]))
            parts.append(encoded_run)
        encoded.append(b"".join(parts))
    return encoded
