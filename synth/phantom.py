"""Rendering of one patient's chest CT at one visit, and its lesion label volume.

The field of view is a targeted thoracic reconstruction around the primary tumour: anterior body
wall with air outside it, lung parenchyma with branching vessels, a mediastinal strip with an air-filled
bronchus and nodes, a lateral chest wall with ribs. Lesions are irregular ellipsoids with a solid
part, a necrotic core that grows with treatment effect, a ground-glass rim (adenocarcinoma) and an
inflammatory peritumoral zone (stronger during pseudoprogression). Intensities are in HU before the
site's calibration offset; noise is spatially correlated as in filtered back-projection.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from synth.population import Lesion, Patient, ady_to_offset

LUNG_HU = -860.0
SOFT_HU = 42.0
FAT_HU = -95.0
BONE_HU = 750.0
AIR_HU = -1000.0
SOLID_HU = 38.0
NECROSIS_HU = 12.0
GGO_HU = -480.0


@dataclass(frozen=True)
class Grid:
    """Voxel grid of a series: shape ``(Z, Y, X)``, spacing ``(dz, dy, dx)`` mm, origin of voxel 0 (mm).

    Coordinates are DICOM patient coordinates (LPS): x to the patient's left, y posterior, z superior.
    Rows of a slice run along +y, columns along +x, slices along +z.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]  # (x0, y0, z0) of voxel (0, 0, 0)

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates (z, y, x) in mm along each axis."""
        nz, ny, nx = self.shape
        dz, dy, dx = self.spacing
        x0, y0, z0 = self.origin
        return z0 + dz * np.arange(nz), y0 + dy * np.arange(ny), x0 + dx * np.arange(nx)

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        return tuple(n * d for n, d in zip(self.shape, self.spacing, strict=True))  # type: ignore[return-value]


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / max(float(field.std()), 1e-6)


def _segment_distance(points: tuple[np.ndarray, ...], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance (mm) of every grid point to the segment ``a``-``b`` (points given as z, y, x arrays)."""
    z, y, x = points
    ab = b - a
    t = ((z - a[0]) * ab[0] + (y - a[1]) * ab[1] + (x - a[2]) * ab[2]) / float(ab @ ab)
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt((z - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (x - a[2] - t * ab[2]) ** 2)


def render_anatomy(grid: Grid, anatomy_rng: np.random.Generator, frame: np.ndarray, ext: np.ndarray) -> np.ndarray:
    """Noise-free HU volume of the normal anatomy.

    ``frame`` is the origin (z, y, x) mm of the patient frame in scanner coordinates and ``ext`` its
    size (the T0 field of view): anatomy is laid out in fractions of it, so it moves with the patient.
    """
    zc, yc, xc = grid.axes()
    z, y, x = np.meshgrid(zc - frame[0], yc - frame[1], xc - frame[2], indexing="ij", sparse=True)
    vol = np.full(grid.shape, LUNG_HU, dtype=np.float32)
    vol += 25.0 * _smooth_field(anatomy_rng, grid.shape, 3.0)  # parenchymal inhomogeneity
    skin = 0.07 * ext[1] + 2.5 * np.sin(x / 17.0)
    wall = (y >= skin) & (y < skin + 12.0)
    vol = np.where(wall, np.where(y < skin + 5.0, FAT_HU, SOFT_HU), vol)
    vol = np.where(y < skin, AIR_HU, vol)
    lateral = x > ext[2] - 13.0
    vol = np.where(lateral & (y >= skin), np.where(x > ext[2] - 6.0, FAT_HU, SOFT_HU), vol)
    for rib_z in np.arange(6.0, ext[0], 19.0):
        rib = ((z - rib_z) ** 2 + (x - (ext[2] - 9.0)) ** 2) < 3.5**2
        vol = np.where(rib & (y >= skin + 8.0), BONE_HU, vol)
    mediastinum = (x < 0.3 * ext[2]) & (y >= skin)
    vol = np.where(mediastinum, SOFT_HU - 10.0, vol)
    fat_pad = mediastinum & ((x - 0.15 * ext[2]) ** 2 / 40.0 + (y - 0.3 * ext[1]) ** 2 / 90.0 < 1.0)
    vol = np.where(fat_pad, FAT_HU, vol)
    bronchus = (x - 0.1 * ext[2]) ** 2 + (y - 0.62 * ext[1]) ** 2
    vol = np.where(bronchus < 5.5**2, AIR_HU, np.where(bronchus < 7.0**2, SOFT_HU, vol))
    _add_vessels(vol, (z, y, x), anatomy_rng, ext, mediastinum | lateral | (y < skin + 12.0))
    return vol


def _add_vessels(
    vol: np.ndarray, points: tuple[np.ndarray, ...], rng: np.random.Generator, ext: np.ndarray, not_lung: np.ndarray
) -> None:
    """Branching vessels from the hilum; distances are evaluated only in each segment's bounding box."""
    z, y, x = (p.ravel() for p in points)  # sparse grid axes
    not_lung = np.broadcast_to(not_lung, vol.shape)
    hilum = np.array([0.5 * ext[0], 0.6 * ext[1], 0.3 * ext[2]])
    for _ in range(7):
        end = np.array([rng.uniform(0, ext[0]), rng.uniform(0.2, 1.0) * ext[1], rng.uniform(0.5, 1.0) * ext[2]])
        mid = hilum + (end - hilum) * rng.uniform(0.35, 0.6)
        radius = rng.uniform(1.6, 3.0)
        for a, b, r in ((hilum, mid, radius), (mid, end, radius * 0.6)):
            box = [slice(int(np.searchsorted(c, min(a[i], b[i]) - r)), int(np.searchsorted(c, max(a[i], b[i]) + r)))
                   for i, c in enumerate((z, y, x))]
            sub = np.meshgrid(z[box[0]], y[box[1]], x[box[2]], indexing="ij", sparse=True)
            vessel = (_segment_distance(tuple(sub), a, b) < r) & ~not_lung[box[0], box[1], box[2]]
            vol[box[0], box[1], box[2]][vessel] = SOFT_HU


def lesion_geometry(lesion: Lesion, size_mm: float) -> np.ndarray:
    """Semi-axes (z, y, x) mm so that the in-plane long axis (or node short axis) equals ``size_mm``."""
    ratio_y, ratio_z = lesion.aspect
    if lesion.node:
        a_short = size_mm / 2.0
        a_long = a_short / ratio_y
        return np.array([a_long * ratio_z, a_short, a_long])
    a_long = size_mm / 2.0
    return np.array([a_long * ratio_z, a_long * ratio_y, a_long])


def _radial_perturbation(lesion: Lesion, u: tuple[np.ndarray, ...]) -> np.ndarray:
    """Smooth irregularity of the boundary as a function of direction (lobulation, spiculation-like)."""
    rng = np.random.default_rng(zlib.crc32(f"{lesion.lesion_id}:{lesion.base_mm:.6f}:{lesion.angle:.6f}".encode()))
    amplitude = 0.04 if lesion.node else 0.10
    value = np.zeros_like(u[0])
    for _ in range(4):
        v = rng.normal(size=3)
        v /= np.linalg.norm(v)
        value += np.cos(rng.uniform(2, 4) * (u[0] * v[0] + u[1] * v[1] + u[2] * v[2]) + rng.uniform(0, 6.3))
    return np.asarray(1.0 + amplitude * value / 2.0 - amplitude / 2.0)


@dataclass(frozen=True)
class LesionLook:
    """Appearance of a lesion at a visit."""

    necrosis: float  # fraction of the radius that is necrotic core
    ggo: float  # fraction of the radius that is ground-glass rim
    texture_hu: float  # amplitude of internal texture (HU)
    inflammation: float  # strength of the peritumoral inflammatory halo (0-2)


def lesion_look(patient: Patient, visit_index: int, lesion: Lesion) -> LesionLook:
    """Heterogeneity that evolves with treatment effect: necrosis and texture follow the sensitive fraction."""
    kin = patient.kinetics
    t1 = float(ady_to_offset(patient.days[1]))
    treated = 1.0 - kin.sensitive_fraction(float(ady_to_offset(patient.days[visit_index])), t1)
    necrosis = float(np.clip(patient.necrosis0 + 0.45 * treated, 0.0, 0.7)) if lesion.kind == "primary" else 0.0
    flare = kin.pseudo and visit_index == 1
    return LesionLook(
        necrosis=necrosis,
        ggo=patient.ggo_fraction * (1.0 - 0.5 * treated) if not lesion.node else 0.0,
        texture_hu=10.0 + 28.0 * patient.heterogeneity * (1.0 + treated),
        inflammation=1.6 if flare else 0.35 + 0.3 * treated,
    )


@dataclass(frozen=True)
class LesionPatch:
    """One lesion drawn once over its bounding box ``box`` of the series grid: where it is (``inside``),
    its HU there, and the peritumoral halo added to aerated voxels (HU < -500) around it."""

    box: tuple[slice, slice, slice]
    inside: np.ndarray
    hu: np.ndarray
    halo: np.ndarray


def lesion_patch(grid: Grid, frame: np.ndarray, ext: np.ndarray, lesion: Lesion, size_mm: float, look: LesionLook,
                 rng: np.random.Generator) -> LesionPatch:
    """Draw one lesion (its bounding box only; ``rng`` gives its texture)."""
    axes_mm = lesion_geometry(lesion, size_mm)
    centre = frame + np.array(lesion.centre) * ext
    zc, yc, xc = grid.axes()
    reach = axes_mm.max() * 1.3 + 8.0
    sl = tuple(
        slice(int(np.searchsorted(c, m - reach)), int(np.searchsorted(c, m + reach)))
        for c, m in zip((zc, yc, xc), centre, strict=True)
    )
    z, y, x = np.meshgrid(zc[sl[0]] - centre[0], yc[sl[1]] - centre[1], xc[sl[2]] - centre[2], indexing="ij")
    cos_a, sin_a = np.cos(lesion.angle), np.sin(lesion.angle)
    xr, yr = cos_a * x + sin_a * y, -sin_a * x + cos_a * y
    norm = np.sqrt((z / axes_mm[0]) ** 2 + (yr / axes_mm[1]) ** 2 + (xr / axes_mm[2]) ** 2) + 1e-9
    radius = np.sqrt(z**2 + y**2 + x**2) + 1e-9
    d = norm / _radial_perturbation(lesion, (z / radius, y / radius, x / radius))
    texture = look.texture_hu * _smooth_field(rng, d.shape, 1.2)
    hu = np.where(d < look.necrosis, NECROSIS_HU, SOLID_HU) + texture
    if look.ggo > 0:
        rim = np.clip((d - (1.0 - look.ggo)) / max(look.ggo, 1e-6), 0.0, 1.0)
        hu = hu * (1.0 - rim) + GGO_HU * rim
    outside_mm = (d - 1.0) * axes_mm.min()
    halo = np.where(d > 1.0, look.inflammation * 160.0 * np.exp(-np.clip(outside_mm, 0, None) / 3.0), 0.0)
    return LesionPatch(sl, d <= 1.0, hu, halo)  # type: ignore[arg-type]


def apply_patch(vol: np.ndarray, patch: LesionPatch, z_start: int = 0) -> None:
    """Paint ``patch`` into ``vol``, which holds grid slices ``z_start ...`` (the whole grid, or one slab)."""
    box = patch.box
    lo, hi = max(box[0].start, z_start), min(box[0].stop, z_start + vol.shape[0])
    if hi <= lo:
        return
    cut = slice(lo - box[0].start, hi - box[0].start)
    sub = vol[lo - z_start:hi - z_start, box[1], box[2]]
    halo = patch.halo[cut] * (sub < -500)
    sub[...] = np.where(patch.inside[cut], patch.hu[cut], sub + halo)


def paint_lesion(
    vol: np.ndarray, labels: np.ndarray, grid: Grid, frame: np.ndarray, ext: np.ndarray, lesion: Lesion,
    size_mm: float, look: LesionLook, label: int, rng: np.random.Generator,
) -> None:
    """Draw one lesion into ``vol`` (HU) and ``labels`` (its ``label`` value) in place."""
    patch = lesion_patch(grid, frame, ext, lesion, size_mm, look, rng)
    apply_patch(vol, patch)
    labels[patch.box][patch.inside] = label


def render_visit(
    patient: Patient, visit_index: int, grid: Grid, frame: np.ndarray, ext: np.ndarray, noise_hu: float,
    seed_words: list[int],
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """CT (HU, float32, ``(Z, Y, X)``), label volume (uint8) and label→lesion-id map for one visit."""
    anatomy_rng = np.random.default_rng([*seed_words, 0])  # same anatomy at every visit
    visit_rng = np.random.default_rng([*seed_words, 1 + visit_index])
    vol = render_anatomy(grid, anatomy_rng, frame, ext)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    label_map: dict[int, str] = {}
    for lesion in patient.lesions:
        size = lesion.sizes[visit_index]
        if size <= 0:
            continue
        label = len(label_map) + 1
        paint_lesion(vol, labels, grid, frame, ext, lesion, size, lesion_look(patient, visit_index, lesion), label,
                     visit_rng)
        label_map[label] = lesion.lesion_id
    vol = ndimage.gaussian_filter(vol, 0.6)  # system point-spread: partial volume at every edge
    noise = ndimage.gaussian_filter(visit_rng.standard_normal(grid.shape).astype(np.float32), 0.7)
    vol += noise * (noise_hu / max(float(noise.std()), 1e-6))
    return vol.astype(np.float32), labels, label_map
