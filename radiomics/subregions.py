"""Partition of a tumour and its peritumoral zone into sub-regions that correspond across time points.

The partition is the node set of the sub-region graph (:mod:`radiomics.graphs`). It is fixed in size
and meaning, so that node ``v`` at T0, T1 and T2 is the same piece of anatomy relative to the tumour:

* **zones** — ``n_shells`` shells *inside* the tumour by normalised depth (zone 0 = core, zone
  ``n_shells - 1`` = rim), then one ring per interval of ``ring_edges_mm`` *outside* it (distance from
  the tumour in mm: 0–3, 3–6, 6–9 mm by default);
* **sectors** — ``n_sectors`` ∈ {1, 2, 4, 8} angular sectors around the tumour centroid, given by the
  signs of the voxel position along the first ``log2(n_sectors)`` axes of a frame that is computed once,
  at T0, and reused at later time points (patient axes by default, or the T0 principal axes).

Node index ``v = zone * n_sectors + sector``. See ``docs/subregion-graphs.md`` for the rationale.

The distance maps use :func:`scipy.ndimage.distance_transform_edt` (exact Euclidean distance with the
voxel spacing) on a crop around the tumour, or the same exact map in torch on a CUDA device
(:func:`edt_torch`, ``partition_tumour(..., device=)``); everything else is vectorised array arithmetic, so the cost
is a few EDT passes per lesion and time point.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from scipy import ndimage

from radiomics.exceptions import EmptyMaskError, GeometryMismatchError, RadiomicsError

log = logging.getLogger(__name__)

FrameKind = Literal["patient", "principal"]


class SubregionError(RadiomicsError):
    """A sub-region series cannot be built (no time point, scan days out of order, ...)."""


@dataclass(frozen=True)
class SubregionSpec:
    """The node layout of the sub-region graph.

    Attributes
    ----------
    n_shells : int
        Number of shells inside the tumour, by normalised depth (core → rim).
    ring_edges_mm : tuple of float
        Increasing distances from the tumour (mm) bounding the peritumoral rings; ``(0, 3, 6, 9)``
        gives three rings (0, 3], (3, 6], (6, 9] mm. An empty tuple or a single value gives no ring.
    n_sectors : int
        Angular sectors: 1 (none), 2, 4 (quadrants of the first two frame axes) or 8 (octants).
    frame : {"patient", "principal"}
        Axes that define the sectors. ``"patient"``: the image axes, ordered (Y, X, Z) so that 4 sectors
        are axial quadrants; stable for round tumours. ``"principal"``: T0 principal axes of the tumour
        (largest extent first), signs fixed to point along the positive image axis they are closest to.
    min_voxels : int
        A node with fewer voxels is marked not valid (its features are zeroed downstream).
    """

    n_shells: int = 3
    ring_edges_mm: tuple[float, ...] = (0.0, 3.0, 6.0, 9.0)
    n_sectors: int = 8
    frame: FrameKind = "patient"
    min_voxels: int = 5

    def __post_init__(self) -> None:
        if self.n_shells < 1:
            raise ValueError(f"n_shells must be at least 1, but was {self.n_shells!r}")
        if self.n_sectors not in (1, 2, 4, 8):
            raise ValueError(f"n_sectors must be 1, 2, 4 or 8, but was {self.n_sectors!r}")
        edges = list(self.ring_edges_mm)
        if any(b <= a for a, b in itertools.pairwise(edges)) or (edges and edges[0] < 0):
            raise ValueError(f"ring_edges_mm must be non-negative and increasing, but was {self.ring_edges_mm!r}")
        if self.frame not in ("patient", "principal"):
            raise ValueError(f"frame must be 'patient' or 'principal', but was {self.frame!r}")
        if self.min_voxels < 1:
            raise ValueError(f"min_voxels must be at least 1, but was {self.min_voxels!r}")

    @property
    def n_rings(self) -> int:
        """Number of peritumoral rings."""
        return max(len(self.ring_edges_mm) - 1, 0)

    @property
    def n_zones(self) -> int:
        """Shells plus rings."""
        return self.n_shells + self.n_rings

    @property
    def n_nodes(self) -> int:
        """V, the number of graph nodes."""
        return self.n_zones * self.n_sectors

    def node_names(self) -> list[str]:
        """Readable node names, index-aligned with the node axis (e.g. ``shell0-s3``, ``ring0-3mm-s5``)."""
        zones = [f"shell{k}" for k in range(self.n_shells)]
        edges = self.ring_edges_mm
        zones += [f"ring{edges[r]:g}-{edges[r + 1]:g}mm" for r in range(self.n_rings)]
        return [f"{zone}-s{s}" for zone in zones for s in range(self.n_sectors)]


@dataclass(frozen=True)
class TumourFrame:
    """Orientation of the sectors, fixed at the reference time point.

    Attributes
    ----------
    axes : ndarray, shape (3, 3)
        Rows are orthonormal unit vectors in image (Z, Y, X) millimetre coordinates.
    kind : str
        ``"patient"`` or ``"principal"`` (or ``"patient-fallback"`` when principal axes were degenerate).
    """

    axes: npt.NDArray[np.float64]
    kind: str


@dataclass(frozen=True)
class Partition:
    """Sub-region labels of one tumour at one time point, on a crop of the image.

    Attributes
    ----------
    labels : ndarray of int64, shape (z, y, x) of the crop
        Node index per voxel, -1 for voxels that belong to no node.
    crop : tuple of slice
        Where the crop lies in the full (Z, Y, X) image.
    counts : ndarray of int64, shape (V,)
        Voxels per node.
    tumour_voxels : int
        Number of tumour voxels (0 when the tumour vanished).
    voxel_volume_mm3 : float
        Volume of one voxel.
    vanished : bool
        The mask is empty at this time point (e.g. complete response): every node is empty.
    touches_edge : bool
        The tumour reaches the image border, so its cut surface is treated as a boundary.
    margin_clipped : bool
        The peritumoral rings extend beyond the image and are partially missing.
    """

    labels: npt.NDArray[np.int64]
    crop: tuple[slice, slice, slice]
    counts: npt.NDArray[np.int64]
    tumour_voxels: int
    voxel_volume_mm3: float
    vanished: bool
    touches_edge: bool
    margin_clipped: bool


def _check_spacing(spacing: tuple[float, float, float] | npt.ArrayLike) -> npt.NDArray[np.float64]:
    sp = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise GeometryMismatchError(
            f"spacing must be three positive (z, y, x) millimetre values, but was {spacing!r}; "
            "pass the voxel size of the (Z, Y, X) array"
        )
    return sp


def _as_mask(mask: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    m = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
    if m.ndim != 3:
        raise GeometryMismatchError(f"mask must be a 3-D (Z, Y, X) array, but has shape {m.shape}")
    return m.astype(bool, copy=False)


def centroid_mm(mask: npt.ArrayLike, spacing: tuple[float, float, float] | npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Tumour centroid in image millimetre coordinates (Z, Y, X), origin at the centre of voxel (0, 0, 0).

    Raises
    ------
    EmptyMaskError
        When the mask holds no voxel.
    """
    m = _as_mask(mask)
    sp = _check_spacing(spacing)
    idx = np.argwhere(m)
    if idx.size == 0:
        raise EmptyMaskError("the mask holds no tumour voxel; the tumour centroid is undefined")
    return np.asarray(idx.mean(axis=0) * sp, dtype=np.float64)


def tumour_frame(
    mask: npt.ArrayLike, spacing: tuple[float, float, float] | npt.ArrayLike, kind: FrameKind = "patient"
) -> TumourFrame:
    """Sector frame of a tumour, computed once at the reference (T0) time point.

    Parameters
    ----------
    mask : array, shape (Z, Y, X)
        Reference tumour mask (non-zero = tumour).
    spacing : (3,) float
        Voxel size in mm along (Z, Y, X).
    kind : {"patient", "principal"}
        See :class:`SubregionSpec`. Principal axes whose eigenvalues differ by less than 10 % are not
        identifiable (a near-sphere); the patient frame is used instead and ``kind`` says so.

    Raises
    ------
    EmptyMaskError
        When the reference mask is empty.
    """
    m = _as_mask(mask)
    sp = _check_spacing(spacing)
    patient = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # Y, X, Z
    pts = np.argwhere(m) * sp
    if pts.shape[0] == 0:
        raise EmptyMaskError("the reference (T0) mask holds no tumour voxel; a tumour-centred frame needs a tumour")
    if kind == "patient":
        return TumourFrame(patient, "patient")
    if pts.shape[0] < 4:
        return TumourFrame(patient, "patient-fallback")
    cov = np.cov((pts - pts.mean(axis=0)).T)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order].T
    if np.any(np.diff(evals[::-1]) < 0.1 * max(evals[0], 1e-12)):
        log.debug("principal axes not identifiable (eigenvalues %s); using patient axes", evals)
        return TumourFrame(patient, "patient-fallback")
    for row in evecs:  # sign: point along the positive image axis the vector is closest to
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    return TumourFrame(np.asarray(evecs, dtype=np.float64), "principal")


def _crop_box(
    mask: npt.NDArray[np.bool_], margin_vox: npt.NDArray[np.int64]
) -> tuple[tuple[slice, slice, slice], bool, bool]:
    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    shape = np.asarray(mask.shape)
    touches = bool(np.any(lo == 0) or np.any(hi == shape))
    clo, chi = lo - margin_vox, hi + margin_vox
    clipped = bool(np.any(clo < 0) or np.any(chi > shape))
    clo, chi = np.maximum(clo, 0), np.minimum(chi, shape)
    crop = (slice(int(clo[0]), int(chi[0])), slice(int(clo[1]), int(chi[1])), slice(int(clo[2]), int(chi[2])))
    return crop, touches, clipped


def edt_torch(mask: torch.Tensor, sampling: npt.ArrayLike, max_elements: int = 2**26) -> torch.Tensor:
    """Exact Euclidean distance (mm) of every non-zero voxel to the nearest zero voxel, on the mask's device.

    The same map as :func:`scipy.ndimage.distance_transform_edt`: the squared distance is separable,
    d²(x) = min_j (d²_{previous axes}(j) + ((x_k − j) s_k)²) along each axis k in turn (Saito & Toriwaki
    1994), evaluated as a dense minimum over each line in chunks of at most ``max_elements`` entries
    (O(n) per voxel and axis; fine for tumour crops, made for the GPU). Zero voxels get 0; without any
    zero voxel every distance is infinite.
    """
    sp = _check_spacing(sampling)
    f = torch.where(mask.bool(), torch.inf, 0.0).to(torch.float64)
    for axis in range(3):
        n = f.shape[axis]
        pos = torch.arange(n, device=f.device, dtype=torch.float64) * float(sp[axis])
        offsets = (pos[:, None] - pos[None, :]) ** 2  # (x, j)
        lines = f.movedim(axis, -1).reshape(-1, n)
        out = torch.empty_like(lines)
        step = max(1, max_elements // (n * n))
        for start in range(0, lines.shape[0], step):
            chunk = lines[start:start + step]
            out[start:start + step] = (chunk[:, None, :] + offsets[None]).amin(-1)
        f = out.reshape(f.movedim(axis, -1).shape).movedim(-1, axis)
    return f.sqrt()


def distance_map(mask: npt.NDArray[np.bool_], sp: npt.NDArray[np.float64], device: str | torch.device = "cpu"
                 ) -> npt.NDArray[np.float64]:
    """EDT of ``mask`` (distance to the nearest zero voxel): scipy on the CPU, :func:`edt_torch` elsewhere."""
    if torch.device(device).type == "cpu":
        return np.asarray(ndimage.distance_transform_edt(mask, sampling=sp), dtype=np.float64)
    return edt_torch(torch.as_tensor(np.ascontiguousarray(mask), device=device), sp).cpu().numpy()


def _zones(tumour: npt.NDArray[np.bool_], sp: npt.NDArray[np.float64], spec: SubregionSpec,
           device: str | torch.device = "cpu") -> npt.NDArray[np.int64]:
    """Zone index per crop voxel (-1 = none): shells by normalised depth inside, rings by distance outside."""
    zone = np.full(tumour.shape, -1, dtype=np.int64)
    # Depth: distance (mm) to the nearest non-tumour voxel centre. One layer of background padding makes the
    # image border a boundary, so a tumour cut by the field of view still has a rim there.
    # Half a voxel is taken off both distance maps so that they measure from the tumour surface (which lies
    # between the last tumour voxel centre and the first background one) rather than from voxel centres.
    half = 0.5 * float(sp.min())
    depth = distance_map(np.pad(tumour, 1), sp, device)[1:-1, 1:-1, 1:-1] - half
    rho = depth / depth.max()  # (0, 1] inside the tumour
    shell = spec.n_shells - np.ceil(rho * spec.n_shells).astype(np.int64)
    zone[tumour] = np.clip(shell, 0, spec.n_shells - 1)[tumour]
    if spec.n_rings:
        dist = distance_map(~tumour, sp, device) - half  # mm from the tumour surface
        edges = np.asarray(spec.ring_edges_mm)
        ring = np.searchsorted(edges, dist, side="left") - 1  # (e_r, e_{r+1}] → r
        outside = ~tumour & (dist > edges[0]) & (dist <= edges[-1])
        zone[outside] = spec.n_shells + ring[outside]
    return zone


def _sectors(
    shape: tuple[int, ...], offset: npt.NDArray[np.int64], sp: npt.NDArray[np.float64], centre: npt.NDArray[np.float64],
    frame: TumourFrame, n_sectors: int,
) -> npt.NDArray[np.int64]:
    """Sector index per crop voxel from the signs of its frame coordinates (bit b ← axis b)."""
    n_bits = round(math.log2(n_sectors))
    sector = np.zeros(shape, dtype=np.int64)
    grids = [(np.arange(n) + o) * s - c for n, o, s, c in zip(shape, offset, sp, centre, strict=True)]
    for bit in range(n_bits):
        a = frame.axes[bit]
        coord = (a[0] * grids[0])[:, None, None] + (a[1] * grids[1])[None, :, None] + (a[2] * grids[2])[None, None, :]
        sector |= (coord >= 0).astype(np.int64) << (n_bits - 1 - bit)
    return sector


def partition_tumour(
    mask: npt.ArrayLike,
    spacing: tuple[float, float, float] | npt.ArrayLike,
    frame: TumourFrame,
    spec: SubregionSpec | None = None,
    device: str | torch.device = "cpu",
) -> Partition:
    """Partition one tumour at one time point into the ``spec.n_nodes`` sub-regions.

    Parameters
    ----------
    mask : array, shape (Z, Y, X)
        Tumour mask at this time point (non-zero = tumour). May be empty (tumour vanished).
    spacing : (3,) float
        Voxel size in mm along (Z, Y, X).
    frame : TumourFrame
        The sector frame computed at T0 with :func:`tumour_frame` (the same for every time point).
    spec : SubregionSpec, optional
        Node layout; the default is 3 shells × 3 rings × 8 octants = 48 nodes.
    device : str or torch.device
        Where the two distance maps are computed: ``"cpu"`` uses scipy's EDT, a CUDA device
        :func:`edt_torch` (the same exact map, equal to 1e-9 mm).

    Returns
    -------
    Partition
        Labels on a crop around the tumour (tumour bounding box plus the outer ring width). The sector
        origin is the centroid of the tumour *at this time point*, so a tumour that moved between scans
        keeps its sectors; the frame orientation comes from T0.
    """
    spec = spec or SubregionSpec()
    m = _as_mask(mask)
    sp = _check_spacing(spacing)
    voxel_volume = float(np.prod(sp))
    if not m.any():
        empty = np.zeros((0, 0, 0), dtype=np.int64)
        crop = (slice(0, 0), slice(0, 0), slice(0, 0))
        return Partition(empty, crop, np.zeros(spec.n_nodes, np.int64), 0, voxel_volume, True, False, False)
    outer = spec.ring_edges_mm[-1] if spec.n_rings else 0.0
    margin = np.ceil(outer / sp).astype(np.int64) + 1
    crop, touches, clipped = _crop_box(m, margin)
    tumour = np.ascontiguousarray(m[crop])
    zone = _zones(tumour, sp, spec, device)
    offset = np.array([c.start for c in crop], dtype=np.int64)
    sector = _sectors(tumour.shape, offset, sp, centroid_mm(m, sp), frame, spec.n_sectors)
    labels = np.where(zone >= 0, zone * spec.n_sectors + sector, -1).astype(np.int64)
    counts = np.bincount(labels[labels >= 0].ravel(), minlength=spec.n_nodes).astype(np.int64)
    if touches or clipped:
        log.debug("tumour touches the image edge (%s) / margin clipped (%s)", touches, clipped)
    return Partition(labels, crop, counts, int(tumour.sum()), voxel_volume, False, touches, clipped)


def spatial_edges(spec: SubregionSpec) -> npt.NDArray[np.int64]:
    """Spatial adjacency of the nodes as a directed edge list (both directions), shape (2, E).

    Two nodes are adjacent when they are in the same zone and their sectors differ in exactly one sign
    (sectors sharing a face), or in the same sector and consecutive zones (core–middle, …, rim–first
    ring, ring–ring). For 3 shells, 3 rings and 8 octants: 112 undirected edges, E = 224.
    """
    pairs: list[tuple[int, int]] = []
    S = spec.n_sectors
    for z in range(spec.n_zones):
        for s in range(S):
            v = z * S + s
            for bit in range(round(math.log2(S))):
                t = s ^ (1 << bit)
                if t > s:
                    pairs.append((v, z * S + t))
            if z + 1 < spec.n_zones:
                pairs.append((v, (z + 1) * S + s))
    undirected = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    both = np.concatenate([undirected, undirected[:, ::-1]], axis=0)
    order = np.lexsort((both[:, 1], both[:, 0]))
    return np.ascontiguousarray(both[order].T)


def node_centroids_mm(part: Partition, spacing: tuple[float, float, float] | npt.ArrayLike,
                      frame: TumourFrame, spec: SubregionSpec) -> npt.NDArray[np.float64]:
    """Centroid of every node relative to the tumour centroid, in mm along the frame axes, shape (V, 3).

    Nodes without voxels (and every node of a vanished tumour) get a canonical position instead: the
    direction of their sector's diagonal times the zone's radial position (shells at fractions of the
    volume-equivalent radius, rings at their mid distance beyond it), so the layout stays ordered.
    """
    sp = _check_spacing(spacing)
    n_bits = round(math.log2(spec.n_sectors))
    radius = (3.0 * part.tumour_voxels * part.voxel_volume_mm3 / (4.0 * math.pi)) ** (1.0 / 3.0)
    edges = spec.ring_edges_mm
    zone_r = [radius * (1.0 - (k + 0.5) / spec.n_shells) for k in range(spec.n_shells)]
    zone_r += [radius + 0.5 * (edges[r] + edges[r + 1]) for r in range(spec.n_rings)]
    out = np.zeros((spec.n_nodes, 3))
    for v in range(spec.n_nodes):
        zone, sector = divmod(v, spec.n_sectors)
        signs = [1.0 if (sector >> (n_bits - 1 - b)) & 1 else -1.0 for b in range(n_bits)]
        direction = np.array(signs + [0.0] * (3 - n_bits)) if n_bits else np.array([1.0, 0.0, 0.0])
        out[v] = direction / np.linalg.norm(direction) * zone_r[zone]
    if part.vanished:
        return out
    idx = np.argwhere(part.labels >= 0)
    lab = part.labels[part.labels >= 0]
    offset = np.array([c.start for c in part.crop])
    pts = (idx + offset) * sp
    centre = pts[lab < spec.n_shells * spec.n_sectors].mean(axis=0)
    rel = (pts - centre) @ frame.axes.T  # frame coordinates
    counts = np.bincount(lab, minlength=spec.n_nodes)
    sums = np.stack([np.bincount(lab, weights=rel[:, k], minlength=spec.n_nodes) for k in range(3)], axis=1)
    have = counts > 0
    out[have] = sums[have] / counts[have, None]
    return out
