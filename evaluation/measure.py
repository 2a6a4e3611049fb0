"""Automated lesion measurement from a label mask: RECIST long axis, nodal short axis, volume.

Method (documented with its error in ``docs/response.md``):

- Per axial slice the lesion boundary is traced at sub-voxel precision (marching squares at the 0.5
  level of the binary mask, :func:`skimage.measure.find_contours`), scaled to mm by the in-plane spacing,
  and reduced to its convex hull.
- **Long axis** (non-nodal lesions, RECIST 1.1): the largest distance between two hull points, maximised
  over slices (the longest diameter in the axial plane).
- **Short axis** (lymph nodes): on each slice, the longest chord of the hull perpendicular to that
  slice's long axis, maximised over slices.
- **Volume**: voxel count × voxel volume, and the volume enclosed by the marching-cubes surface at the
  0.5 level (the IBSI "volume" feature, Zwanenburg et al. 2020, IBSI id RNU0).

Arrays follow the store's NIfTI convention: index ``(i, j, k)`` with ``k`` the axial slice; the affine
must be axial (its third column along z, the first two in the xy plane).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import find_contours, marching_cubes

from evaluation.exceptions import MeasurementError

_AXIAL_TOLERANCE = 1e-3  # |cosine| of the slice axis off z (or in-plane axes off the xy plane) tolerated


@dataclass(frozen=True)
class LesionMeasurement:
    """Automated measurement of one lesion.

    Attributes
    ----------
    long_axis_mm, short_axis_mm : float
        Largest axial long axis; largest short axis perpendicular to the long axis (mm).
    volume_mm3, mesh_volume_mm3 : float
        Voxel-count and marching-cubes volumes (mm³).
    diam_mm : float
        The RECIST measure: short axis for nodes, long axis otherwise.
    n_voxels : int
        Voxels in the mask.
    """

    long_axis_mm: float
    short_axis_mm: float
    volume_mm3: float
    mesh_volume_mm3: float
    diam_mm: float
    n_voxels: int


def axial_spacing(affine: NDArray[np.floating]) -> tuple[float, float, float]:
    """Voxel size (mm) along ``(i, j, k)`` of an axial affine.

    Raises
    ------
    MeasurementError
        The affine is not axial (oblique or gantry-tilted slices), or a spacing is not positive.
    """
    matrix = np.asarray(affine, dtype=float)[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    if not np.all(spacing > 0):
        raise MeasurementError(f"voxel spacing must be positive, but the affine gives {spacing.tolist()}")
    unit = matrix / spacing
    off_plane = max(abs(unit[2, 0]), abs(unit[2, 1]), 1 - abs(unit[2, 2]))
    if off_plane > _AXIAL_TOLERANCE:
        raise MeasurementError(
            f"the volume is not axial (slice-axis deviation {off_plane:.4f}); RECIST diameters are measured in "
            "the axial plane: resample the mask to an axial grid first"
        )
    return float(spacing[0]), float(spacing[1]), float(spacing[2])


def _hull_points(section: NDArray[np.bool_], spacing_ij: tuple[float, float]) -> NDArray[np.float64]:
    padded = np.pad(section.astype(float), 1)
    contours = find_contours(padded, 0.5)
    points = (np.concatenate(contours) - 1.0) * np.asarray(spacing_ij)
    try:
        return np.asarray(points[ConvexHull(points).vertices])
    except QhullError:  # a line of pixels: every point on the hull
        return np.asarray(points)


def _max_pair(points: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
    """Largest distance between two points and the unit vector joining them."""
    diff = points[:, None, :] - points[None, :, :]
    dist = np.sqrt((diff**2).sum(-1))
    i, j = np.unravel_index(int(dist.argmax()), dist.shape)
    length = float(dist[i, j])
    return length, diff[i, j] / max(length, 1e-12)


def _perpendicular_chord(hull: NDArray[np.float64], direction: NDArray[np.float64]) -> float:
    """Longest chord of a convex polygon perpendicular to ``direction``.

    The chord length along lines ``u = t`` is concave and piecewise linear in ``t`` with breakpoints at
    the vertices, so its maximum is reached on a line through a vertex.
    """
    normal = np.array([-direction[1], direction[0]])
    u, v = hull @ direction, hull @ normal
    if len(hull) < 3:
        return float(v.max() - v.min())
    ua, ub, va, vb = u, np.roll(u, -1), v, np.roll(v, -1)  # edges (a → b) of the polygon
    t = u[:, None]  # one line u = t through every vertex, against every edge
    inside = (t >= np.minimum(ua, ub) - 1e-9) & (t <= np.maximum(ua, ub) + 1e-9)
    du = ub - ua
    flat = np.abs(du) <= 1e-12
    crossing = va + np.where(flat, 0.0, (t - ua) / np.where(flat, 1.0, du)) * (vb - va)
    top = np.where(inside, np.where(flat, np.maximum(va, vb), crossing), -np.inf).max(axis=1)
    bottom = np.where(inside, np.where(flat, np.minimum(va, vb), crossing), np.inf).min(axis=1)
    lengths = top - bottom
    return float(lengths[np.isfinite(lengths)].max(initial=0.0))


def axial_axes(mask: NDArray[np.bool_], spacing: tuple[float, float, float]) -> tuple[float, float]:
    """(long axis, short axis) in mm of a 3D mask ``(i, j, k)``, each maximised over axial slices."""
    best_long = best_short = 0.0
    for k in np.flatnonzero(mask.any(axis=(0, 1))):
        hull = _hull_points(mask[:, :, k], (spacing[0], spacing[1]))
        long_axis, direction = _max_pair(hull)
        best_long = max(best_long, long_axis)
        best_short = max(best_short, _perpendicular_chord(hull, direction))
    return best_long, best_short


def mesh_volume_mm3(mask: NDArray[np.bool_], spacing: tuple[float, float, float]) -> float:
    """Volume (mm³) enclosed by the marching-cubes surface of the mask at the 0.5 level (IBSI RNU0)."""
    padded = np.pad(mask.astype(np.float32), 1)
    verts, faces, _, _ = marching_cubes(padded, level=0.5, spacing=spacing)
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return float(abs(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6.0)


def max_diameter_3d_mm(mask: NDArray[np.bool_], spacing: tuple[float, float, float]) -> float:
    """Largest distance (mm) between two vertices of the marching-cubes surface (IBSI maximum 3D diameter)."""
    verts = marching_cubes(np.pad(mask.astype(np.float32), 1), level=0.5, spacing=spacing)[0]
    hull = verts[ConvexHull(verts).vertices]
    return _max_pair(hull)[0]


def measure_lesion(mask: NDArray[np.bool_], affine: NDArray[np.floating], *, node: bool) -> LesionMeasurement:
    """Measure one lesion mask on an axial grid.

    Parameters
    ----------
    mask : ndarray of bool, shape (I, J, K)
        The lesion's voxels (K = axial slices).
    affine : ndarray, shape (4, 4)
        Voxel-to-mm affine of the grid (NIfTI).
    node : bool
        A lymph node (the RECIST measure is then the short axis).

    Raises
    ------
    MeasurementError
        Empty mask or a non-axial affine.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3 or not mask.any():
        raise MeasurementError(f"need a non-empty 3D mask, but got shape {mask.shape} with {int(mask.sum())} voxels")
    spacing = axial_spacing(affine)
    mask = mask[tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(mask))]  # crop to the lesion
    long_axis, short_axis = axial_axes(mask, spacing)
    n_voxels = int(mask.sum())
    return LesionMeasurement(
        long_axis_mm=long_axis, short_axis_mm=short_axis, volume_mm3=n_voxels * float(np.prod(spacing)),
        mesh_volume_mm3=mesh_volume_mm3(mask, spacing), diam_mm=short_axis if node else long_axis, n_voxels=n_voxels,
    )


def measure_labels(
    labels: NDArray[np.integer], affine: NDArray[np.floating], names: dict[int, str], nodes: set[str] | None = None
) -> dict[str, LesionMeasurement]:
    """Measure every labelled lesion of a label volume: ``{lesion id: measurement}``.

    ``names`` maps label values to lesion ids (``labels.json`` of the store); ``nodes`` holds the ids of
    lymph nodes. Labels absent from the volume are skipped.
    """
    nodes = nodes or set()
    out: dict[str, LesionMeasurement] = {}
    for value, lesion_id in sorted(names.items()):
        mask = labels == value
        if mask.any():
            out[lesion_id] = measure_lesion(mask, affine, node=lesion_id in nodes)
    return out


AUTO_COLUMNS: tuple[str, ...] = (
    "USUBJID", "VISIT", "LESIONID", "NODE", "AUTO_LD_MM", "AUTO_SA_MM", "AUTO_DIAM_MM", "VOLUME_MM3",
    "MESH_VOLUME_MM3",
)


def measurement_rows(subject: str, visit: str, results: dict[str, LesionMeasurement], nodes: set[str]) -> list[dict]:
    """Rows of ``auto_measurements.csv`` (:data:`AUTO_COLUMNS`) for one visit's measured lesions."""
    return [
        {"USUBJID": subject, "VISIT": visit, "LESIONID": lesion_id, "NODE": "Y" if lesion_id in nodes else "N",
         "AUTO_LD_MM": round(m.long_axis_mm, 2), "AUTO_SA_MM": round(m.short_axis_mm, 2),
         "AUTO_DIAM_MM": round(m.diam_mm, 2), "VOLUME_MM3": round(m.volume_mm3, 1),
         "MESH_VOLUME_MM3": round(m.mesh_volume_mm3, 1)}
        for lesion_id, m in sorted(results.items())
    ]


def compare_with_reads(auto: pd.DataFrame, reads: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per reader, agreement of the readers' ``DIAM_MM`` with the automated RECIST measure (mm).

    Returns ``{reader: {"n", "bias_mm", "loa_low_mm", "loa_high_mm", "icc", "icc_low", "icc_high"}}``
    over the measured lesions both have (bias = reader − automated).
    """
    from evaluation.agreement import bland_altman, icc_a1

    table = reads.assign(READER=reads["READER"] if "READER" in reads.columns else "R1")
    merged = table.merge(auto, on=["USUBJID", "VISIT", "LESIONID"]).dropna(subset=["DIAM_MM", "AUTO_DIAM_MM"])
    out: dict[str, dict[str, float]] = {}
    for reader, rows in merged.groupby("READER"):
        if len(rows) < 3:
            continue
        pair = rows[["DIAM_MM", "AUTO_DIAM_MM"]].to_numpy(dtype=float)
        ba, icc = bland_altman(pair[:, 0], pair[:, 1]), icc_a1(pair)
        out[str(reader)] = {"n": float(len(rows)), "bias_mm": ba.bias, "loa_low_mm": ba.loa_low,
                            "loa_high_mm": ba.loa_high, "icc": icc.icc, "icc_low": icc.ci_low, "icc_high": icc.ci_high}
    return out
