"""Series assembly: single-frame CT slices → one volume in patient coordinates.

Slices are ordered by their position along the slice normal (``ImagePositionPatient ·
(row_cosine × column_cosine)``), never by InstanceNumber or file name. The volume array is indexed
``(i, j, k)`` = (column, row, slice) and the affine follows nibabel/MONAI (RAS+ mm); DICOM's LPS+
is converted with ``diag(-1, -1, 1, 1)`` (docs/store.md, "Geometry and orientation").

Irregular series (a missing slice, non-uniform spacing) are resampled along k onto a regular grid at
the median spacing by linear interpolation, so the affine stays true; the QC step records the
irregularity with severity REJECT, because the study's radiomics need the scanner's own grid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.pixels import pixel_array

from fl_client.exceptions import SeriesAssemblyError

log = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_DUPLICATE_TOL_MM = 1e-3


@dataclass(frozen=True)
class SliceHeader:
    """Geometry of one single-frame slice, read without its pixels.

    Attributes
    ----------
    path : Path
        The file.
    sop_uid : str
        SOPInstanceUID (original; never stored).
    position : tuple[float, float, float]
        ImagePositionPatient, LPS mm.
    orientation : tuple[float, ...]
        ImageOrientationPatient (six direction cosines).
    spacing : tuple[float, float]
        PixelSpacing (row spacing, column spacing), mm.
    shape : tuple[int, int]
        (Rows, Columns).
    pixel_offset, pixel_dtype : int, str
        Byte offset of native little-endian pixel data in the file and its numpy dtype (``<i2``/``<u2``),
        so that assembly reads pixels without parsing the file again; -1 for encapsulated
        (compressed) or other layouts, which go through pydicom's decoders.
    bits_stored, slope, intercept : int, float, float
        BitsStored, RescaleSlope, RescaleIntercept.
    frame : int
        Frame index in a multi-frame (Enhanced / Legacy Converted Enhanced CT) file; -1 for single-frame.
    """

    path: Path
    sop_uid: str
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    spacing: tuple[float, float]
    shape: tuple[int, int]
    pixel_offset: int = -1
    pixel_dtype: str = ""
    bits_stored: int = 16
    slope: float = 1.0
    intercept: float = 0.0
    frame: int = -1


@dataclass
class SeriesGeometry:
    """The sorted, de-duplicated slices of a series and what was found on the way.

    Attributes
    ----------
    slices : list[SliceHeader]
        In increasing position along the normal.
    offsets_mm : NDArray
        Shape (K,), position of each slice along the normal relative to the first, mm.
    duplicates : list[Path]
        Files dropped as duplicates (same SOP instance, or same position).
    spacing_mm : float
        Median slice spacing, mm.
    irregularity_mm : float
        Largest deviation of a slice gap from the median spacing, mm.
    missing_slices : int
        Slices missing inside the range (gaps that are multiples of the spacing).
    tilt_deg : float
        Angle between the slice normal and the direction in which slices advance (gantry tilt), degrees.
    """

    slices: list[SliceHeader]
    offsets_mm: NDArray[np.float64]
    duplicates: list[Path] = field(default_factory=list)
    spacing_mm: float = 0.0
    irregularity_mm: float = 0.0
    missing_slices: int = 0
    tilt_deg: float = 0.0

    @property
    def regular(self) -> bool:
        return self.missing_slices == 0 and self.irregularity_mm <= 0.01


def _normal(orientation: tuple[float, ...]) -> NDArray[np.float64]:
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    return np.cross(row, col)


def plan_series(headers: list[SliceHeader]) -> SeriesGeometry:
    """Sort slices by geometry, drop duplicates, measure spacing, gaps and tilt.

    Raises
    ------
    SeriesAssemblyError
        No slices, mixed orientations or matrix sizes, or fewer than two distinct positions.
    """
    if not headers:
        raise SeriesAssemblyError("series has no image slices")
    first = headers[0]
    for h in headers:
        if h.shape != first.shape or not np.allclose(h.orientation, first.orientation, atol=1e-4):
            raise SeriesAssemblyError(f"slices of one series differ in size or orientation: {h.shape} "
                                      f"{h.orientation} vs {first.shape} {first.orientation}; split the series")
    normal = _normal(first.orientation)
    ordered = sorted(headers, key=lambda h: (float(np.dot(h.position, normal)), h.sop_uid))
    kept: list[SliceHeader] = []
    duplicates: list[Path] = []
    seen_uids: set[str] = set()
    for h in ordered:
        same_place = kept and abs(float(np.dot(np.subtract(h.position, kept[-1].position), normal))) < _DUPLICATE_TOL_MM
        if h.sop_uid in seen_uids or same_place:
            duplicates.append(h.path)
            continue
        seen_uids.add(h.sop_uid)
        kept.append(h)
    if len(kept) < 2:
        raise SeriesAssemblyError(f"series has {len(kept)} distinct slice position(s); at least 2 are needed")
    proj = np.array([np.dot(h.position, normal) for h in kept])
    offsets = proj - proj[0]
    gaps = np.diff(offsets)
    spacing = float(np.median(gaps))
    missing = int(np.sum(np.maximum(np.rint(gaps / spacing) - 1, 0)))
    advance = np.subtract(kept[-1].position, kept[0].position)
    cos = abs(float(np.dot(advance, normal))) / max(float(np.linalg.norm(advance)), 1e-9)
    tilt = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return SeriesGeometry(slices=kept, offsets_mm=offsets, duplicates=duplicates, spacing_mm=spacing,
                          irregularity_mm=float(np.max(np.abs(gaps - spacing))), missing_slices=missing,
                          tilt_deg=tilt)


def affine_ras(geometry: SeriesGeometry, n_slices: int | None = None) -> NDArray[np.float64]:
    """The 4 × 4 RAS+ affine of the (regularised) volume, mm per index."""
    first, last = geometry.slices[0], geometry.slices[-1]
    row_cos, col_cos = np.asarray(first.orientation[:3]), np.asarray(first.orientation[3:6])
    row_spacing, col_spacing = first.spacing
    n = n_slices or len(geometry.slices)
    span = np.subtract(last.position, first.position)
    if not geometry.regular:  # resampled grid: advance along the same direction at the median spacing
        span = span / max(float(geometry.offsets_mm[-1]), 1e-9) * geometry.spacing_mm * (n - 1)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_spacing
    lps[:3, 1] = col_cos * row_spacing
    lps[:3, 2] = span / (n - 1)
    lps[:3, 3] = first.position
    out: NDArray[np.float64] = LPS_TO_RAS @ lps
    return out


def _rescale(raw: NDArray[np.generic], slope: float, intercept: float) -> tuple[NDArray[np.generic], bool]:
    if slope == 1.0 and intercept == round(intercept):
        hu = raw.astype(np.int32) + int(intercept)
        return np.clip(hu, -32768, 32767).astype(np.int16).T, True
    return (raw.astype(np.float32) * slope + intercept).T, False


def _read_slice(header: SliceHeader) -> tuple[NDArray[np.generic], bool]:
    rows, cols = header.shape
    if header.pixel_offset >= 0:  # native little-endian: read the pixels straight from the file
        raw = np.fromfile(header.path, dtype=header.pixel_dtype, count=rows * cols, offset=header.pixel_offset)
        unused_bits_set = header.pixel_dtype == "<u2" and header.bits_stored < 16 and raw.max() >> header.bits_stored
        if raw.size == rows * cols and not unused_bits_set:
            return _rescale(raw.reshape(rows, cols), header.slope, header.intercept)
    if header.frame >= 0:  # one frame of a multi-frame file, decoded alone; rescale from its functional groups
        return _rescale(pixel_array(header.path, index=header.frame), header.slope, header.intercept)
    ds = pydicom.dcmread(header.path)
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    return _rescale(ds.pixel_array, slope, intercept)


def load_volume(geometry: SeriesGeometry) -> tuple[NDArray[Any], NDArray[np.float64]]:
    """Read the pixels of every slice and return ``(volume, affine)``.

    Returns
    -------
    volume : ndarray
        Shape (Columns, Rows, K), HU; int16 when every slice's rescale is integral, else float32.
    affine : ndarray
        Shape (4, 4), RAS+ mm.
    """
    rows, cols = geometry.slices[0].shape
    # Slices are filled into a (K, Rows, Columns) buffer, each one contiguous, and returned as its
    # (Columns, Rows, K) transpose (Fortran order, which is also NIfTI's on-disk order): writing every
    # slice into a C-ordered (Columns, Rows, K) array strides K elements per pixel, and at 512 x 512 x 450
    # that cache-hostile copy was the largest cost of ingest.
    stack: NDArray[Any] = np.empty((len(geometry.slices), rows, cols), np.int16)
    for k, header in enumerate(geometry.slices):
        plane, integral = _read_slice(header)
        if not integral and stack.dtype != np.float32:
            stack = stack.astype(np.float32)
        if plane.shape != (cols, rows):
            raise SeriesAssemblyError(f"{header.path}: pixel matrix {plane.shape[::-1]} does not match the "
                                      f"header (Rows, Columns) = {(rows, cols)}")
        stack[k] = plane.T
    volume: NDArray[Any] = stack.transpose(2, 1, 0)
    if not geometry.regular:
        volume = _regularise(volume, geometry)
    return volume, affine_ras(geometry, volume.shape[2])


def _regularise(volume: NDArray[Any], geometry: SeriesGeometry) -> NDArray[Any]:
    """Linear interpolation along k onto ``0, s, 2s, …`` (s = median spacing) covering the same range."""
    n = round(float(geometry.offsets_mm[-1]) / geometry.spacing_mm) + 1
    grid = np.arange(n) * geometry.spacing_mm
    upper = np.searchsorted(geometry.offsets_mm, grid, side="left").clip(1, len(geometry.offsets_mm) - 1)
    lower = upper - 1
    span = geometry.offsets_mm[upper] - geometry.offsets_mm[lower]
    weight = ((grid - geometry.offsets_mm[lower]) / span).clip(0.0, 1.0)
    out = volume[:, :, lower] * (1 - weight) + volume[:, :, upper] * weight
    log.info("series resampled from %d irregular slices to %d at %.3f mm", volume.shape[2], n, geometry.spacing_mm)
    return np.rint(out).astype(volume.dtype) if volume.dtype == np.int16 else out.astype(np.float32)
