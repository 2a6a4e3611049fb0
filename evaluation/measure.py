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
    edges = list(zip(range(len(hull)), np.roll(range(len(hull)), -1), strict=True))
    best = 0.0
    for t in u:
        hits = []
        for a, b in edges:
            lo, hi = sorted((u[a], u[b]))
            if lo - 1e-9 <= t <= hi + 1e-9:
                if abs(u[b] - u[a]) < 1e-12:
                    hits += [v[a], v[b]]
                else:
                    hits.append(v[a] + (t - u[a]) * (v[b] - v[a]) / (u[b] - u[a]))
        if hits:
            best = max(best, max(hits) - min(hits))
    return best


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
