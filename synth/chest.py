"""A whole chest at a scanner's real matrix (the ``chest`` preset): rendered slab by slab.

Body outline with subcutaneous fat and muscle, both lungs (domed bases, tapering apices) with branching
vessels and textured parenchyma, trachea and main bronchi, mediastinum with heart and descending aorta,
vertebral bodies with spinal canal, ribs and sternum, liver under the right dome. Every structure is a
function of patient coordinates (drawn once per patient), so any slab of the volume can be rendered on
its own and slabs join without seams: memory is bounded by a slab, not by the series.

The trial preset's lesions (fractions of its targeted field of view) are placed in the *target box*:
the left hemithorax at hilum level, from the mediastinum to the lateral chest wall, so primaries lie in
the lung, nodes in the mediastinum and metastases in the posterior lung, as in the targeted series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from synth.phantom import AIR_HU, BONE_HU, FAT_HU, LUNG_HU, SOFT_HU, Grid, _segment_distance

BLOOD_HU, LIVER_HU, MARROW_HU, CSF_HU = 45.0, 58.0, 230.0, 15.0
TEXTURE_MM = 6.0  # spacing of the parenchymal texture field (interpolated trilinearly)


@dataclass(frozen=True)
class ChestBody:
    """One patient's chest, in mm of the patient frame (x left, y posterior, z superior; origin at the
    body centre at carina height). ``vessels`` rows: (z0, y0, x0, z1, y1, x1, radius)."""

    rx: float
    ry: float
    lung_top: float
    lung_bottom: float
    vessels: np.ndarray
    texture: np.ndarray  # (nz, ny, nx) unit-variance field on a TEXTURE_MM grid over the body box
    texture_origin: tuple[float, float, float]  # (z, y, x) mm of texture[0, 0, 0]

    @property
    def target_box(self) -> tuple[np.ndarray, np.ndarray]:
        """(origin (z, y, x), extent (z, y, x)) of the box that stands for the trial's targeted field."""
        origin = np.array([-48.0, -0.85 * self.ry, -0.1 * self.rx])
        return origin, np.array([96.0, 1.6 * self.ry, 0.9 * self.rx])


def draw_body(rng: np.random.Generator, fov_mm: float, coverage_mm: float) -> ChestBody:
    """A patient's chest that fits a ``fov_mm`` square field and a ``coverage_mm`` scan length."""
    rx = float(min(rng.uniform(150.0, 172.0), 0.46 * fov_mm))
    ry = rx * float(rng.uniform(0.62, 0.72))
    top = 0.36 * coverage_mm
    bottom = -0.5 * coverage_mm + float(rng.uniform(20.0, 35.0))
    vessels = []
    for side in (-1.0, 1.0):
        hilum = np.array([-15.0, 0.05 * ry, side * 0.24 * rx])
        for _ in range(11):
            end = np.array([rng.uniform(bottom, top - 0.1 * (top - bottom)), rng.uniform(-0.55, 0.6) * ry,
                            side * rng.uniform(0.2, 0.78) * rx])
            mid = hilum + (end - hilum) * rng.uniform(0.35, 0.6)
            radius = rng.uniform(2.5, 5.0)
            vessels.append([*hilum, *mid, radius])
            vessels.append([*mid, *end, radius * 0.55])
    shape = (int(coverage_mm / TEXTURE_MM) + 4, int(2.2 * ry / TEXTURE_MM) + 4, int(2.2 * rx / TEXTURE_MM) + 4)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.0)
    texture /= max(float(texture.std()), 1e-6)
    origin = (-0.5 * coverage_mm - 2 * TEXTURE_MM, -1.1 * ry - 2 * TEXTURE_MM, -1.1 * rx - 2 * TEXTURE_MM)
    return ChestBody(rx, ry, top, bottom, np.array(vessels), texture, origin)


def _lungs(z: np.ndarray, y: np.ndarray, x: np.ndarray, body: ChestBody) -> np.ndarray:
    """Both lungs: elliptic in plane, tapering to the apex, domed at the base (right dome higher)."""
    rx, ry = body.rx, body.ry
    height = body.lung_top - body.lung_bottom
    t = np.clip((z - body.lung_bottom) / height, 0.0, 1.0)  # 0 at the base, 1 at the apex
    taper = np.sqrt(np.clip(1.0 - ((t - 0.35) / 0.65) ** 2, 0.0, None)) * (t > 0) * (t < 1)
    out = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape), dtype=bool)
    for side in (-1.0, 1.0):
        cx, ax, ay = side * 0.47 * rx, 0.36 * rx, 0.74 * ry
        r2 = ((x - cx) / ax) ** 2 + ((y - 0.06 * ry) / ay) ** 2
        dome = body.lung_bottom + (25.0 if side < 0 else 12.0) * (1.0 - np.clip(r2, 0, 1))  # diaphragm dome
        out |= (r2 < taper**2) & (z > dome)
    mediastinum = (np.abs(x - 0.08 * rx) < 0.17 * rx) & (y < 0.5 * ry)
    return out & ~mediastinum


def _ribs(z: np.ndarray, y: np.ndarray, x: np.ndarray, body: ChestBody) -> np.ndarray:
    """Ribs: bands of the inner body wall every 24 mm, sloping down towards the front, open anteriorly."""
    rho = np.sqrt((x / (0.9 * body.rx)) ** 2 + (y / (0.88 * body.ry)) ** 2)
    ring = (rho > 0.93) & (rho < 1.0)
    front = np.clip(-y / body.ry, 0.0, 1.0)  # 0 behind the mid-coronal plane, 1 at the sternum
    phase = np.mod(z + 14.0 * front - body.lung_bottom, 24.0)
    return ring & (phase < 8.0) & (front < 0.75) & (z > body.lung_bottom - 10) & (z < body.lung_top)


def chest_slab(grid: Grid, frame: np.ndarray, body: ChestBody) -> np.ndarray:
    """Noise-free HU of the chest on ``grid`` (any slab); ``frame`` is the patient-frame origin (z, y, x)
    in scanner coordinates (the body centre at carina height, moved by the visit's repositioning)."""
    zc, yc, xc = grid.axes()
    z, y, x = np.meshgrid(zc - frame[0], yc - frame[1], xc - frame[2], indexing="ij", sparse=True)
    rx, ry = body.rx, body.ry
    ellipse = (x / rx) ** 2 + (y / ry) ** 2
    vol = np.full(grid.shape, AIR_HU, dtype=np.float32)
    vol[np.broadcast_to(ellipse < 1.0, grid.shape)] = FAT_HU
    inner = (x / (rx - 12.0)) ** 2 + (y / (ry - 10.0)) ** 2 < 1.0
    vol[np.broadcast_to(inner, grid.shape)] = SOFT_HU
    liver = inner & (z < body.lung_bottom + 18.0) & (x < 0.35 * rx)
    vol[np.broadcast_to(liver, grid.shape)] = LIVER_HU
    lungs = _lungs(z, y, x, body)
    coords = [(c - o) / TEXTURE_MM for c, o in zip((z, y, x), body.texture_origin, strict=True)]
    points = np.stack([np.broadcast_to(c, grid.shape)[lungs] for c in coords])
    vol[lungs] = LUNG_HU + 25.0 * ndimage.map_coordinates(body.texture, points, order=1, mode="nearest")
    _paint_mediastinum(vol, (z, y, x), body)
    _paint_airways(vol, (z, y, x), body)
    _paint_vessels(vol, (zc - frame[0], yc - frame[1], xc - frame[2]), body, lungs)
    vol[_ribs(z, y, x, body)] = BONE_HU
    sternum = (np.abs(x) < 14.0) & (y > -ry + 3.0) & (y < -ry + 13.0) & (z > body.lung_bottom + 20) & (
        z < body.lung_top - 40)
    vol[np.broadcast_to(sternum & (ellipse < 1.0), grid.shape)] = BONE_HU * 0.6
    return vol


def _paint_mediastinum(vol: np.ndarray, points: tuple[np.ndarray, ...], body: ChestBody) -> None:
    z, y, x = points
    rx, ry = body.rx, body.ry
    heart_z = np.clip((z - body.lung_bottom) / 95.0, 0.0, None)
    heart = ((x - 0.12 * rx) / (0.32 * rx)) ** 2 + ((y + 0.12 * ry) / (0.42 * ry)) ** 2 + (heart_z - 0.5) ** 2 * 2.4 < 1
    vol[np.broadcast_to(heart, vol.shape)] = BLOOD_HU
    aorta = ((x - 0.16 * rx) ** 2 + (y - 0.38 * ry) ** 2 < 13.0**2) & (z < 10.0)
    arch = ((x - 0.02 * rx) ** 2 + (y + 0.05 * ry) ** 2 < 14.0**2) & (z > 10.0) & (z < 40.0)
    vol[np.broadcast_to(aorta | arch, vol.shape)] = BLOOD_HU
    vertebra = x**2 + (y - 0.66 * ry) ** 2
    vol[np.broadcast_to(vertebra < 19.0**2, vol.shape)] = BONE_HU
    vol[np.broadcast_to(vertebra < 15.5**2, vol.shape)] = MARROW_HU
    vol[np.broadcast_to(x**2 + (y - 0.86 * ry) ** 2 < 7.0**2, vol.shape)] = CSF_HU


def _paint_airways(vol: np.ndarray, points: tuple[np.ndarray, ...], body: ChestBody) -> None:
    z, y, x = points
    trachea = x**2 + (y + 0.02 * body.ry) ** 2
    above = z > 0.0
    vol[np.broadcast_to((trachea < 11.0**2) & above, vol.shape)] = SOFT_HU
    vol[np.broadcast_to((trachea < 9.0**2) & above, vol.shape)] = AIR_HU
    carina = np.array([0.0, -0.02 * body.ry, 0.0])
    axes = tuple(p.ravel() for p in points)
    for side in (-1.0, 1.0):
        end = np.array([-28.0, 0.04 * body.ry, side * 0.26 * body.rx])
        _paint_segment(vol, axes, carina, end, 7.5, SOFT_HU)  # bronchial wall, then lumen
        _paint_segment(vol, axes, carina, end, 5.5, AIR_HU)


def _paint_segment(vol: np.ndarray, axes: tuple[np.ndarray, ...], a: np.ndarray, b: np.ndarray, r: float,
                   value: float, within: np.ndarray | None = None) -> None:
    """Set ``value`` within ``r`` mm of segment a-b (evaluated only in its bounding box within the slab)."""
    box = [slice(int(np.searchsorted(c, min(a[i], b[i]) - r)), int(np.searchsorted(c, max(a[i], b[i]) + r)))
           for i, c in enumerate(axes)]
    if any(s.stop <= s.start for s in box):
        return
    sub = np.meshgrid(axes[0][box[0]], axes[1][box[1]], axes[2][box[2]], indexing="ij", sparse=True)
    hit = _segment_distance(tuple(sub), a, b) < r
    if within is not None:
        hit &= within[box[0], box[1], box[2]]
    vol[box[0], box[1], box[2]][hit] = value


def _paint_vessels(vol: np.ndarray, axes: tuple[np.ndarray, np.ndarray, np.ndarray], body: ChestBody,
                   lungs: np.ndarray) -> None:
    """Vessel segments inside the lungs, each evaluated only in its bounding box within the slab."""
    for z0, y0, x0, z1, y1, x1, r in body.vessels:
        _paint_segment(vol, axes, np.array([z0, y0, x0]), np.array([z1, y1, x1]), r, BLOOD_HU, lungs)
