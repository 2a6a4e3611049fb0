"""DICOM discovery: classify every file of an export by its content, never by its name or extension.

Each file is read once into memory, hashed (SHA-256, for the manifest and for idempotent re-runs) and
parsed without decoding pixels. What comes out is a :class:`FileRecord` per file: its kind, the facts
series assembly and de-identification need, or the reason it cannot be used. Nothing here writes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from fl_client.ingest.series import SliceHeader
from fl_client.ingest.workers import Parallelism, ordered_map
from fl_client.progress import NoProgress, ProgressSink

log = logging.getLogger(__name__)

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.2"
RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
#: Site tables recognised by name at the export root (their names are the interface with the site).
SITE_TABLES = ("enrolment_log.csv", "crf.csv", "reads.csv")
#: ... and the accounting a PACS pull leaves in its inbox (fl_client.pacs.inbox), recorded, not imaging.
TABLE_NAMES = (*SITE_TABLES, "pacs_pull.csv")
_NIFTI_HEADER = 348


@dataclass
class FileRecord:
    """What discovery learnt about one input file.

    ``kind`` is one of CT, RTSTRUCT, SEG, NIFTI, SIDECAR, TABLE, OTHER_DICOM, NOT_DICOM; ``status`` is
    '' while usable, else SKIPPED or QUARANTINED with ``reason``. PHI fields (patient id, name, birth
    date) stay in memory: they feed the encrypted key and the PHI scrubber, never the store.
    """

    path: Path
    relpath: str
    size: int
    sha256: str
    kind: str
    status: str = ""
    reason: str = ""
    patient_id: str = ""
    patient_name: str = ""
    birth_date: str = ""
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    sop_class: str = ""
    study_date: str = ""
    slice: SliceHeader | None = None
    frames: list[SliceHeader] = field(default_factory=list)

    @property
    def slices(self) -> list[SliceHeader]:
        """Every image plane of the file: its one slice, or each frame of a multi-frame CT."""
        return self.frames or ([self.slice] if self.slice is not None else [])


def classify_all(root: Path, parallel: Parallelism | None = None,
                 progress: ProgressSink | None = None) -> list[FileRecord]:
    """:func:`classify` every file under ``root`` (stable order), in worker processes for big exports;
    ``progress`` counts ``files``."""
    paths = list(iter_files(root))
    parallel = parallel or Parallelism()
    sink = progress or NoProgress()
    sink.expect("files", len(paths))
    if not parallel.active(len(paths)):
        records = []
        for path in paths:
            records.append(classify(path, root))
            sink.advance("files")
        return records
    return ordered_map(partial(classify, root=root), paths, parallel.workers, chunksize=64,
                       on_result=lambda _: sink.advance("files"))


def iter_files(root: Path) -> Iterator[Path]:
    """Every regular file under ``root`` in a stable order (symlinks are not followed)."""
    for directory, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(directory) / name
            if path.is_file() and not path.is_symlink():
                yield path


def _looks_like_raw_dataset(data: bytes) -> bool:
    # A DICOM dataset without preamble starts with an even group tag, usually (0008,xxxx) or (0002,xxxx).
    return len(data) > 8 and data[1] == 0 and data[0] in (0x02, 0x08) and data[3] == 0


def _classify_other(record: FileRecord, data: bytes) -> FileRecord:
    if data[:2] == b"\x1f\x8b" or data[344:348] in (b"n+1\x00", b"ni1\x00"):
        try:
            head = gzip.decompress(data)[:_NIFTI_HEADER] if data[:2] == b"\x1f\x8b" else data[:_NIFTI_HEADER]
        except (OSError, EOFError) as exc:
            record.kind, record.status, record.reason = "NOT_DICOM", "SKIPPED", f"corrupt gzip file ({exc})"
            return record
        if head[344:348] in (b"n+1\x00", b"ni1\x00") or int.from_bytes(head[:4], "little") == _NIFTI_HEADER:
            record.kind = "NIFTI"
            return record
    if record.path.name in TABLE_NAMES:
        record.kind = "TABLE"
        return record
    try:
        content = json.loads(data.decode("utf-8"))
        if isinstance(content, dict) and {"SeriesInstanceUID", "labels"} <= set(content):
            record.kind = "SIDECAR"
            return record
    except (UnicodeDecodeError, ValueError):
        pass
    record.kind, record.status = "NOT_DICOM", "SKIPPED"
    record.reason = "not a DICOM file (no DICM marker), not NIfTI, not a known table or annotation sidecar"
    return record


_NATIVE_LE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def _pixel_layout(ds: Dataset, data: bytes, offset: int, frames: int = 1) -> tuple[str, int, str]:
    """(problem, value offset, dtype) of the PixelData element that starts at ``offset`` in ``data``.

    ``offset`` is where pydicom stopped with ``stop_before_pixels``; the offset is -1 when the pixels
    need pydicom's decoders (encapsulated, big-endian, not 16-bit).
    """
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    if data[offset:offset + 4] != b"\xe0\x7f\x10\x00":
        big = data[offset:offset + 4] == b"\x7f\xe0\x00\x10"
        return ("" if big else "CT image without pixel data"), -1, ""
    implicit = syntax == "1.2.840.10008.1.2"
    length = int.from_bytes(data[offset + 4:offset + 8] if implicit else data[offset + 8:offset + 12], "little")
    start = offset + (8 if implicit else 12)
    if syntax not in _NATIVE_LE or length == 0xFFFFFFFF:
        return "", -1, ""
    expected = frames * int(ds.Rows) * int(ds.Columns) * int(ds.get("BitsAllocated", 16)) // 8
    if min(length, len(data) - start) < expected:
        return f"pixel data truncated: {min(length, len(data) - start)} bytes, expected {expected}", -1, ""
    if int(ds.get("BitsAllocated", 16)) != 16 or int(ds.get("SamplesPerPixel", 1)) != 1:
        return "", -1, ""
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    if signed and int(ds.get("BitsStored", 16)) != 16:  # sign extension needed: pydicom does it
        return "", -1, ""
    return "", start, "<i2" if signed else "<u2"


_IPP, _IOP, _SPACING = 0x00200032, 0x00200037, 0x00280030


def _decimals(ds: Dataset, tag: int) -> tuple[float, ...]:
    """A DS attribute's values, parsed from its raw bytes when still unconverted.

    pydicom converts and validates each DS value separately, which made geometry parsing the largest
    cost of discovery; ``float`` accepts every valid DS string.
    """
    element = ds.get_item(tag)
    raw = element.value if element is not None else None
    if isinstance(raw, bytes):
        return tuple(float(v) for v in raw.strip(b" \x00").split(b"\\"))
    return tuple(float(v) for v in ds[tag].value)


def _ct_slice(record: FileRecord, ds: Dataset, data: bytes, offset: int) -> None:
    missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
               if k not in ds or ds[k].value in (None, "")]
    if missing:
        record.status, record.reason = "SKIPPED", f"CT image lacks geometry ({', '.join(missing)})"
        return
    problem, pixel_offset, dtype = _pixel_layout(ds, data, offset)
    if problem:
        record.status, record.reason = "SKIPPED", problem
        return
    position, orientation, spacing = (_decimals(ds, tag) for tag in (_IPP, _IOP, _SPACING))
    if len(position) != 3 or len(orientation) != 6 or len(spacing) != 2:
        record.status, record.reason = "SKIPPED", "CT image with malformed position, orientation or pixel spacing"
        return
    record.slice = SliceHeader(
        path=record.path, sop_uid=record.sop_uid,
        position=(position[0], position[1], position[2]), orientation=orientation,
        spacing=(spacing[0], spacing[1]),
        shape=(int(ds.Rows), int(ds.Columns)), pixel_offset=pixel_offset, pixel_dtype=dtype,
        bits_stored=int(ds.get("BitsStored", 16) or 16), slope=float(ds.get("RescaleSlope", 1) or 1),
        intercept=float(ds.get("RescaleIntercept", 0) or 0))


def _group(frame: Dataset, shared: Dataset, name: str) -> Dataset | None:
    """A functional-group macro item of one frame: per-frame if present, else shared."""
    for source in (frame, shared):
        if name in source and len(source[name].value):
            item: Dataset = source[name].value[0]
            return item
    return None


def _ct_frames(record: FileRecord, ds: Dataset, data: bytes, offset: int) -> None:
    """Multi-frame CT (Enhanced, Legacy Converted Enhanced): one :class:`SliceHeader` per frame, geometry
    and rescale from the per-frame or shared functional groups."""
    shared = ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    frames = ds.get("PerFrameFunctionalGroupsSequence", [])
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if not frames or not rows or not cols:
        record.status, record.reason = "SKIPPED", "multi-frame CT without per-frame functional groups or matrix size"
        return
    problem, pixel_offset, dtype = _pixel_layout(ds, data, offset, frames=len(frames))
    if problem:
        record.status, record.reason = "SKIPPED", problem
        return
    for index, frame in enumerate(frames):
        position, orientation = _group(frame, shared, "PlanePositionSequence"), _group(frame, shared,
                                                                                      "PlaneOrientationSequence")
        measures, rescale = _group(frame, shared, "PixelMeasuresSequence"), _group(frame, shared,
                                                                                  "PixelValueTransformationSequence")
        if position is None or orientation is None or measures is None:
            record.frames, record.status = [], "SKIPPED"
            record.reason = f"multi-frame CT frame {index + 1} lacks plane position, orientation or pixel measures"
            return
        record.frames.append(SliceHeader(
            path=record.path, sop_uid=f"{record.sop_uid}/{index}", frame=index,
            position=tuple(float(v) for v in position.ImagePositionPatient),  # type: ignore[arg-type]
            orientation=tuple(float(v) for v in orientation.ImageOrientationPatient),
            spacing=(float(measures.PixelSpacing[0]), float(measures.PixelSpacing[1])), shape=(rows, cols),
            pixel_offset=pixel_offset + index * rows * cols * 2 if pixel_offset >= 0 else -1, pixel_dtype=dtype,
            bits_stored=int(ds.get("BitsStored", 16) or 16),
            slope=float(rescale.RescaleSlope) if rescale is not None else 1.0,
            intercept=float(rescale.RescaleIntercept) if rescale is not None else 0.0))


def _classify_dicom(record: FileRecord, ds: Dataset, data: bytes, offset: int) -> FileRecord:
    record.patient_id = str(ds.get("PatientID", "") or "")
    record.patient_name = str(ds.get("PatientName", "") or "")
    record.birth_date = str(ds.get("PatientBirthDate", "") or "")
    record.study_uid = str(ds.get("StudyInstanceUID", "") or "")
    record.series_uid = str(ds.get("SeriesInstanceUID", "") or "")
    record.sop_uid = str(ds.get("SOPInstanceUID", "") or "")
    record.sop_class = str(ds.get("SOPClassUID", "") or "")
    record.study_date = str(ds.get("StudyDate", "") or "")
    modality = str(ds.get("Modality", "") or "")
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        record.kind, record.status = "OTHER_DICOM" if record.sop_class != CT_IMAGE else "CT", "QUARANTINED"
        record.reason = "BurnedInAnnotation is YES: pixels may show identifiers (PS3.15 E.1)"
        return record
    kinds = {CT_IMAGE: "CT", ENHANCED_CT: "CT", LEGACY_ENHANCED_CT: "CT", RTSTRUCT: "RTSTRUCT", SEG: "SEG"}
    record.kind = kinds.get(record.sop_class, "OTHER_DICOM")
    known = record.sop_class in pydicom.uid.UID_dictionary
    if record.kind == "OTHER_DICOM" and offset >= len(data) and not known:
        record.status = "SKIPPED"
        record.reason = (f"truncated or damaged DICOM: unknown SOP Class UID {record.sop_class!r} and the file ends "
                         f"inside its header (byte {len(data)})")
    elif record.kind == "OTHER_DICOM":
        name = getattr(pydicom.uid.UID(record.sop_class), "name", record.sop_class) or "unknown SOP class"
        record.status, record.reason = "SKIPPED", f"non-CT object ({modality or '?'}, {name}): not needed"
    elif not (record.series_uid and record.study_uid and record.patient_id):
        record.status = "SKIPPED"
        record.reason = "DICOM object without PatientID, StudyInstanceUID or SeriesInstanceUID"
    elif record.kind == "CT" and record.sop_class != CT_IMAGE:
        _ct_frames(record, ds, data, offset)
    elif record.kind == "CT":
        _ct_slice(record, ds, data, offset)
    return record


def classify(path: Path, root: Path) -> FileRecord:
    """Read, hash and classify one file. Never raises for bad content: the reason is recorded."""
    data = path.read_bytes()
    record = FileRecord(path=path, relpath=path.relative_to(root).as_posix(), size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(), kind="NOT_DICOM")
    if not data:
        record.status, record.reason = "SKIPPED", "empty file"
        return record
    is_part10 = data[128:132] == b"DICM"
    if not is_part10 and not _looks_like_raw_dataset(data):
        return _classify_other(record, data)
    stream = io.BytesIO(data)
    try:
        ds = pydicom.dcmread(stream, force=not is_part10, stop_before_pixels=True)
        pixel_tag_at = stream.tell()  # where reading stopped: the PixelData tag, if any
        ds.get("SOPClassUID")  # force parsing of the first elements now, inside the try
    except Exception as exc:  # a damaged file may raise anything (zlib, struct, ...): it is recorded, not fatal
        record.status, record.reason = "SKIPPED", f"unreadable DICOM ({type(exc).__name__}: {exc})"[:300]
        return record
    try:
        return _classify_dicom(record, ds, data, pixel_tag_at)
    except Exception as exc:
        record.kind, record.status = "OTHER_DICOM", "SKIPPED"
        record.reason = f"malformed DICOM header ({type(exc).__name__}: {exc})"[:300]
        return record
