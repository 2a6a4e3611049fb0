"""Annotations → label volumes on their CT grid: RTSTRUCT, DICOM SEG and NIfTI masks.

Every function returns ``(labels, names)``: an integer array with the CT volume's shape
``(Columns, Rows, K)`` (0 = background, 1..n = lesions) and a map ``{label: LESIONID}`` taken from the
ROI name (RTSTRUCT), the segment label (SEG) or the sidecar (NIfTI). Labels are numbered in the sorted
order of the names, so the same lesion gets the same label at every visit.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from scipy import ndimage
from skimage.draw import polygon

from fl_client.exceptions import AnnotationError
from fl_client.ingest.series import LPS_TO_RAS

log = logging.getLogger(__name__)

_SLICE_TOL = 0.25  # fraction of a slice spacing a contour may sit off a slice centre


def _label_dtype(n: int) -> type[np.unsignedinteger]:
    return np.uint8 if n < 256 else np.uint16


def _lps_to_index(points_lps: NDArray[np.float64], affine_ras: NDArray[np.float64]) -> NDArray[np.float64]:
    """Continuous voxel indices (N, 3) of LPS points (N, 3)."""
    inverse = np.linalg.inv(LPS_TO_RAS @ affine_ras)  # RAS affine back to LPS, then invert
    homogeneous = np.c_[points_lps, np.ones(len(points_lps))]
    out: NDArray[np.float64] = (homogeneous @ inverse.T)[:, :3]
    return out


def _contour_points(contour: Dataset) -> NDArray[np.float64]:
    """ContourData as (N, 3) LPS mm, parsed straight from the raw DS bytes when still unconverted.

    Converting thousands of DS strings one by one through pydicom dominates RTSTRUCT reading time.
    """
    element = contour.get_item(0x30060050)
    raw = element.value if element is not None else None
    if isinstance(raw, bytes):
        values = np.array(raw.replace(b"\x00", b" ").split(b"\\"), dtype=float)
    else:
        values = np.asarray(contour.ContourData, dtype=float)
    return values.reshape(-1, 3)


def referenced_series(rtstruct: Dataset) -> str:
    """SeriesInstanceUID of the CT an RTSTRUCT was drawn on ('' when the object does not say)."""
    for frame in rtstruct.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                return str(series.SeriesInstanceUID)
    return ""


def rasterise_rtstruct(rtstruct: Dataset, shape: tuple[int, int, int],
                       affine_ras: NDArray[np.float64]) -> tuple[NDArray[np.integer], dict[int, str]]:
    """Fill every CLOSED_PLANAR contour of every ROI on the CT grid (even-odd rule for holes).

    A voxel belongs to a contour when its centre lies inside the polygon (skimage.draw.polygon).

    Raises
    ------
    AnnotationError
        A contour lies off the CT slices (wrong reference or geometry).
    """
    names = {int(r.ROINumber): str(r.ROIName) for r in rtstruct.get("StructureSetROISequence", [])}
    ordered = sorted(names.items(), key=lambda item: item[1])
    label_of = {number: label for label, (number, _) in enumerate(ordered, start=1)}
    labels = np.zeros(shape, _label_dtype(len(ordered)))
    for roi in rtstruct.get("ROIContourSequence", []):
        number = int(roi.ReferencedROINumber)
        if number not in label_of:
            continue
        mask = np.zeros(shape, bool)
        for contour in roi.get("ContourSequence", []):
            if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")) not in ("CLOSED_PLANAR", ""):
                continue
            points = _contour_points(contour)
            ijk = _lps_to_index(points, affine_ras)
            k = float(np.mean(ijk[:, 2]))
            if abs(k - round(k)) > _SLICE_TOL or not 0 <= round(k) < shape[2]:
                raise AnnotationError(f"ROI {names[number]!r}: a contour lies at slice index {k:.2f}, off the CT "
                                      f"grid of {shape[2]} slices; check the RTSTRUCT references this series")
            rr, cc = polygon(ijk[:, 0], ijk[:, 1], shape=shape[:2])
            mask[rr, cc, round(k)] ^= True
        overlap = int(np.count_nonzero(labels[mask]))
        if overlap:
            log.warning("ROI %s overlaps earlier ROIs on %d voxels; the later ROI wins", names[number], overlap)
        labels[mask] = label_of[number]
    return labels, {label_of[n]: name for n, name in ordered}


def rasterise_seg(seg: Dataset, shape: tuple[int, int, int],
                  affine_ras: NDArray[np.float64]) -> tuple[NDArray[np.integer], dict[int, str]]:
    """Place every frame of a DICOM SEG (BINARY or FRACTIONAL) on the CT grid by its plane position.

    Frames must share the CT's in-plane grid (same orientation and spacing; any in-plane offset is an
    integer number of pixels); each frame goes to the CT slice at its position.
    """
    segments = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    ordered = sorted(segments.items(), key=lambda item: item[1])
    label_of = {number: label for label, (number, _) in enumerate(ordered, start=1)}
    frames = seg.pixel_array
    if frames.ndim == 2:
        frames = frames[None]
    threshold = 0.5 * float(seg.get("MaximumFractionalValue", 1)) if seg.get("SegmentationType") == "FRACTIONAL" else 0
    labels = np.zeros(shape, _label_dtype(len(ordered)))
    shared = seg.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    _check_seg_spacing(seg, shared, affine_ras)
    for index, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        segment = int((group.get("SegmentIdentificationSequence") or
                       shared.SegmentIdentificationSequence)[0].ReferencedSegmentNumber)
        origin = np.asarray(group.PlanePositionSequence[0].ImagePositionPatient, float)[None]
        i0, j0, k = _lps_to_index(origin, affine_ras)[0]
        if abs(k - round(k)) > _SLICE_TOL or not 0 <= round(k) < shape[2]:
            raise AnnotationError(f"SEG frame {index + 1} lies at slice index {k:.2f}, off the CT grid of "
                                  f"{shape[2]} slices; check the SEG references this series")
        plane = frames[index].T > threshold  # (Columns, Rows) like the CT volume
        i0, j0 = round(i0), round(j0)
        ci, cj = min(plane.shape[0], shape[0] - i0), min(plane.shape[1], shape[1] - j0)
        target = labels[i0:i0 + ci, j0:j0 + cj, round(k)]
        target[plane[:ci, :cj]] = label_of[segment]
    return labels, {label_of[n]: name for n, name in ordered}


def _check_seg_spacing(seg: Dataset, shared: Dataset, affine_ras: NDArray[np.float64]) -> None:
    """SEG frames are placed pixel for pixel: their pixel spacing must be the CT's."""
    groups = [g for g in (shared, *seg.PerFrameFunctionalGroupsSequence[:1]) if "PixelMeasuresSequence" in g]
    if not groups:
        return
    row, col = (float(v) for v in groups[0].PixelMeasuresSequence[0].PixelSpacing)
    ct_col, ct_row = np.linalg.norm(affine_ras[:3, :2], axis=0)  # column index i steps by column spacing
    if not (np.isclose(row, ct_row, atol=1e-3) and np.isclose(col, ct_col, atol=1e-3)):
        raise AnnotationError(f"SEG pixel spacing ({row:g}, {col:g}) mm differs from its CT's ({ct_row:g}, "
                              f"{ct_col:g}) mm; resampling SEG frames is not supported - export the SEG on the CT grid")


def seg_referenced_series(seg: Dataset) -> str:
    """SeriesInstanceUID of the source CT of a SEG ('' when absent)."""
    for series in seg.get("ReferencedSeriesSequence", []):
        return str(series.SeriesInstanceUID)
    return ""


def read_nifti_mask(path: Path, sidecar: dict[str, object], shape: tuple[int, int, int],
                    affine_ras: NDArray[np.float64]) -> tuple[NDArray[np.integer], dict[int, str]]:
    """A NIfTI label volume resampled (nearest neighbour) onto the CT grid when its geometry differs."""
    image: Any = nib.load(path)
    data = np.asarray(image.dataobj)
    raw_labels = sidecar.get("labels", {})
    if not isinstance(raw_labels, dict) or not raw_labels:
        raise AnnotationError(f"{path.name}: its sidecar has no 'labels' map {{'1': 'L01', ...}}")
    names = {int(k): str(v) for k, v in raw_labels.items()}
    if data.shape[:3] != shape or not np.allclose(image.affine, affine_ras, atol=1e-3):
        to_mask = np.linalg.inv(image.affine) @ affine_ras
        data = ndimage.affine_transform(data[..., 0] if data.ndim > 3 else data,
                                        to_mask[:3, :3], to_mask[:3, 3], output_shape=shape, order=0)
        log.info("%s resampled onto its CT grid (geometry differed)", path.name)
    ordered = sorted(names.items(), key=lambda item: item[1])
    relabel = np.zeros(int(max(data.max(), max(names))) + 1, np.int64)
    for label, (value, _) in enumerate(ordered, start=1):
        relabel[value] = label
    unknown = set(np.unique(data).astype(int)) - set(names) - {0}
    if unknown:
        raise AnnotationError(f"{path.name}: label values {sorted(unknown)} are not named in its sidecar")
    out = relabel[np.rint(data).astype(np.int64)].astype(_label_dtype(len(ordered)))
    return out, {label: name for label, (_, name) in enumerate(ordered, start=1)}


def load_sidecar(path: Path) -> dict[str, object]:
    """The JSON sidecar of a NIfTI mask."""
    content = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(content, dict):
        raise AnnotationError(f"{path.name}: sidecar must be a JSON object")
    return content


def read_annotation(path: Path) -> Dataset:
    """Read an RTSTRUCT or SEG object with its pixels (SEG)."""
    return pydicom.dcmread(path)
