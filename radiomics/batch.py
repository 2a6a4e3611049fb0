"""The full IBSI feature set of every sub-region of many patients and time points, in memory-bounded batches.

:func:`radiomics.extractor.extract_features` batches the VOIs that share one voxel grid (the sub-regions
of one tumour at one scan). :func:`extract_many` goes further: it processes each scan once (IBSI
interpolation, re-segmentation and discretisation are grid operations, so they stay per scan), cuts every
sub-region to its own box (:func:`radiomics.extractor.compact`, with the local-intensity margin), and
stacks the boxes of *many* scans — many patients and time points — into one batch per chunk, so that the
feature families (morphology's voxel part, local intensity, statistics, histograms, IVH and all six
texture families) run once per chunk on ``device``. Chunks are bounded by ``memory_budget_bytes``
(estimated as :data:`BYTES_PER_VOXEL` per voxel of the padded batch); scans are sorted by size so that a
chunk pads little.

A VOI's features do not depend on its batch neighbours: each VOI keeps its own box, grey-level count and
grid, and padding lies beyond the margin every family looks at. ``tests/radiomics/test_batch.py`` checks
equality with one :func:`extract_features` call per scan.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as functional

from radiomics.exceptions import GeometryMismatchError, SettingsError
from radiomics.extractor import FAMILIES, compact, crop_to_roi, features_from_preprocessed
from radiomics.local_intensity import SPHERE_RADIUS_MM, local_intensity
from radiomics.node_features import TimePointImage
from radiomics.preprocess import IbsiSettings, PreprocessedVoi, Spacing, preprocess
from radiomics.subregions import SubregionSpec, partition_tumour, tumour_frame

log = logging.getLogger(__name__)

#: Working memory per voxel of a padded batch for the full IBSI set (float64 image, masks, levels, FFTs of the
#: local-intensity sphere, texture gathers). An estimate: ``benchmarks/gpu_check.py`` prints the measured peak.
BYTES_PER_VOXEL = 1024


@dataclass(frozen=True)
class ScanSubregions:
    """The sub-regions of one tumour at one scan.

    Attributes
    ----------
    image : array or Tensor, shape (Z, Y, X)
        HU intensities (a crop of the scan is enough if it holds the sub-regions plus 6.2 mm).
    labels : array or Tensor of int, shape (Z, Y, X)
        Sub-region index per voxel (0..n-1), -1 outside every sub-region (e.g. a
        :class:`radiomics.subregions.Partition`'s ``labels`` on its ``crop``).
    spacing : (3,) float
        ``(z, y, x)`` voxel size in mm.
    nodes : sequence of int
        The sub-region indices to compute (each must hold at least one voxel).
    """

    image: npt.ArrayLike | torch.Tensor
    labels: npt.ArrayLike | torch.Tensor
    spacing: Spacing
    nodes: Sequence[int]


@dataclass(frozen=True)
class ManyFeatures:
    """Result of :func:`extract_many`: ``index[i] = (scan, node)`` of row ``i`` of every feature tensor."""

    index: list[tuple[int, int]]
    features: dict[str, torch.Tensor]
    n_chunks: int


def subregion_scans(
    patients: Sequence[Sequence[TimePointImage]], spec: SubregionSpec | None = None, *,
    device: torch.device | str = "cpu", min_voxels: int | None = None,
) -> list[ScanSubregions]:
    """Partition every scan of every patient (T0 frame per patient; distance maps on ``device``).

    Returns one :class:`ScanSubregions` per scan, patient-major, listing the nodes with at least
    ``min_voxels`` voxels (default ``spec.min_voxels``); feed the list to :func:`extract_many`.
    """
    spec = spec or SubregionSpec()
    floor = spec.min_voxels if min_voxels is None else min_voxels
    out = []
    for series in patients:
        if not series:
            raise GeometryMismatchError("a patient has no scan; pass at least the T0 scan of each patient")
        frame = tumour_frame(series[0].mask, series[0].spacing, spec.frame)
        for tp in series:
            part = partition_tumour(tp.mask, tp.spacing, frame, spec, device=device)
            image = tp.ct[part.crop] if isinstance(tp.ct, torch.Tensor) else np.asarray(tp.ct)[part.crop]
            nodes = [v for v in range(spec.n_nodes) if part.counts[v] >= floor]
            out.append(ScanSubregions(image, part.labels, tp.spacing, nodes))
    return out


def _as_tensor(a: npt.ArrayLike | torch.Tensor, device: torch.device) -> torch.Tensor:
    return (a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))).to(device)


def _scan_vois(scan: ScanSubregions, settings: IbsiSettings, device: torch.device) -> PreprocessedVoi:
    """IBSI processing of one scan's sub-regions (one grid), each cut to its own box plus the 6.2 mm margin."""
    image, labels = _as_tensor(scan.image, device), _as_tensor(scan.labels, device)
    if image.shape != labels.shape or image.ndim != 3:
        raise GeometryMismatchError(f"image {tuple(image.shape)} and labels {tuple(labels.shape)} must be the same "
                                    "(Z, Y, X) shape; pass the partition labels on the image crop")
    nodes = torch.as_tensor(list(scan.nodes), device=device)
    masks = labels[None] == nodes[:, None, None, None]
    pre = crop_to_roi(preprocess(image[None].expand(len(nodes), -1, -1, -1), masks, scan.spacing, settings,
                                 margin_mm=SPHERE_RADIUS_MM))
    return compact(pre, SPHERE_RADIUS_MM)


def _stack(parts: list[PreprocessedVoi]) -> tuple[PreprocessedVoi, torch.Tensor]:
    """Zero-pad every part to the largest box (at the high end of each axis) and concatenate along B.

    Also returns the ``(B, Z, Y, X)`` bool map of real image voxels (the local-intensity sphere must not
    count the padding as image).
    """
    size = [max(p.image.shape[axis] for p in parts) for axis in (1, 2, 3)]

    def pad(t: torch.Tensor) -> torch.Tensor:
        widths = (0, size[2] - t.shape[3], 0, size[1] - t.shape[2], 0, size[0] - t.shape[1])
        return functional.pad(t, widths) if any(widths) else t

    first = parts[0]
    valid = torch.cat([pad(torch.ones_like(p.morph_mask)) for p in parts])
    stacked = PreprocessedVoi(
        image=torch.cat([pad(p.image) for p in parts]), morph_mask=torch.cat([pad(p.morph_mask) for p in parts]),
        int_mask=torch.cat([pad(p.int_mask) for p in parts]), levels=torch.cat([pad(p.levels) for p in parts]),
        n_levels=max(p.n_levels for p in parts), spacing=first.spacing, settings=first.settings)
    return stacked, valid


def _features(parts: list[PreprocessedVoi], families: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Every family on the stacked chunk; local intensity with the map of real image voxels."""
    stacked, valid = _stack(parts)
    out = features_from_preprocessed(stacked, tuple(f for f in families if f != "loc"))
    if "loc" in families:
        near = compact(stacked, SPHERE_RADIUS_MM)
        near_valid = compact(replace(stacked, image=valid), SPHERE_RADIUS_MM).image
        out.update(local_intensity(near.image, near.int_mask, near.spacing, near_valid))
    return out


def _chunk_bytes(parts: list[PreprocessedVoi]) -> int:
    size = [max(p.image.shape[axis] for p in parts) for axis in (1, 2, 3)]
    return sum(p.image.shape[0] for p in parts) * size[0] * size[1] * size[2] * BYTES_PER_VOXEL


def extract_many(
    scans: Sequence[ScanSubregions], settings: IbsiSettings, *, device: torch.device | str = "cpu",
    memory_budget_bytes: int = 2**30, families: Iterable[str] = FAMILIES,
) -> ManyFeatures:
    """IBSI features of every listed sub-region of every scan, in chunks of many scans each.

    Parameters
    ----------
    scans : sequence of ScanSubregions
        Scans of any patients and time points. Scans whose processed spacing differs (no interpolation
        and different voxel sizes) go to different chunks.
    settings : IbsiSettings
        Processing configuration (``radiomics.preprocess.IBSI_CONFIGS``).
    device : torch.device or str
        Where everything after loading runs (interpolation, masks, every feature family).
    memory_budget_bytes : int
        Upper bound of the estimated working memory of one chunk (:data:`BYTES_PER_VOXEL` per voxel of the
        padded batch). A single scan larger than the budget is still computed, alone.
    families : iterable of str
        Subset of :data:`radiomics.extractor.FAMILIES`.

    Returns
    -------
    ManyFeatures
        Rows in the order of ``scans`` and their ``nodes``; tags as :func:`extract_features` returns them.
    """
    if memory_budget_bytes <= 0:
        raise SettingsError(f"memory_budget_bytes must be positive, but was {memory_budget_bytes!r}")
    dev = torch.device(device)
    families = tuple(families)
    order = sorted(range(len(scans)), key=lambda i: int(np.prod(np.shape(scans[i].labels))))
    pending: dict[tuple[float, ...], list[tuple[int, PreprocessedVoi]]] = {}
    results: dict[int, dict[str, torch.Tensor]] = {}
    n_chunks = 0

    def flush(key: tuple[float, ...]) -> None:
        nonlocal n_chunks
        group = pending.pop(key, [])
        if not group:
            return
        feats = _features([p for _, p in group], families)
        n_chunks += 1
        start = 0
        for scan_id, part in group:
            n = part.image.shape[0]
            results[scan_id] = {tag: values[start:start + n] for tag, values in feats.items()}
            start += n

    for i in order:
        if not scans[i].nodes:
            results[i] = {}
            continue
        part = _scan_vois(scans[i], settings, dev)
        key = tuple(round(s, 9) for s in part.spacing)
        group = pending.setdefault(key, [])
        if group and _chunk_bytes([p for _, p in group] + [part]) > memory_budget_bytes:
            flush(key)
            group = pending.setdefault(key, [])
        group.append((i, part))
    for key in list(pending):
        flush(key)
    index = [(i, int(v)) for i in range(len(scans)) for v in scans[i].nodes]
    tags = sorted({tag for r in results.values() for tag in r})
    features = {tag: torch.cat([results[i][tag] for i in range(len(scans)) if scans[i].nodes]) for tag in tags}
    log.debug("extract_many: %d VOIs of %d scans in %d chunk(s) on %s", len(index), len(scans), n_chunks, dev)
    return ManyFeatures(index, features, n_chunks)
