"""extract_many: sub-regions of many scans in memory-bounded chunks give exactly the per-scan features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radiomics.batch import ManyFeatures, ScanSubregions, extract_many
from radiomics.exceptions import SettingsError
from radiomics.extractor import extract_features
from radiomics.preprocess import IBSI_CONFIGS
from radiomics.subregions import SubregionSpec, partition_tumour, tumour_frame

SPEC = SubregionSpec(n_shells=2, ring_edges_mm=(0.0, 4.0), n_sectors=2)


def _scan(seed: int, radius_mm: float, shape: tuple[int, int, int]) -> ScanSubregions:
    rng = np.random.default_rng(seed)
    spacing = (1.25, 0.9, 0.9)
    g = np.stack(np.indices(shape), 0).astype(float)
    centre = np.array(shape, float)[:, None, None, None] / 2 + rng.uniform(-1, 1, (3, 1, 1, 1))
    r = np.sqrt((((g - centre) * np.array(spacing)[:, None, None, None]) ** 2).sum(0))
    mask = r <= radius_mm
    ct = np.where(mask, 40.0 - 2.0 * r, -300.0) + rng.normal(0, 20, shape)  # ground glass: rings keep voxels
    part = partition_tumour(mask, spacing, tumour_frame(mask, spacing), SPEC)
    nodes = [v for v in range(SPEC.n_nodes) if part.counts[v] >= 40]
    return ScanSubregions(np.round(ct[part.crop]), part.labels, spacing, nodes)


def _per_scan(scan: ScanSubregions, config: str) -> dict[str, torch.Tensor]:
    image = torch.as_tensor(scan.image).double()
    labels = torch.as_tensor(scan.labels)
    masks = torch.stack([labels == v for v in scan.nodes])
    return extract_features(image[None].expand(len(scan.nodes), -1, -1, -1), masks, scan.spacing, IBSI_CONFIGS[config])


@pytest.fixture(scope="module")
def scans() -> list[ScanSubregions]:
    return [_scan(0, 9.0, (22, 30, 30)), _scan(1, 7.0, (18, 26, 28)), _scan(2, 11.0, (26, 34, 34))]


@pytest.mark.parametrize(
    ("config", "budget", "chunks"), [("C", 2**40, 1), ("C", 1, 3), ("A", 2**40, 1), ("D", 2**40, 1)]
)
def test_many_scans_equal_one_call_per_scan(scans, config, budget, chunks):
    out = extract_many(scans, IBSI_CONFIGS[config], memory_budget_bytes=budget)
    assert isinstance(out, ManyFeatures) and out.n_chunks == chunks
    assert out.index == [(i, v) for i, s in enumerate(scans) for v in s.nodes]
    row = 0
    for i, scan in enumerate(scans):
        ref = _per_scan(scan, config)
        assert set(ref) == set(out.features)
        n = len(scan.nodes)
        for tag, values in ref.items():
            np.testing.assert_allclose(out.features[tag][row:row + n].numpy(), values.numpy(), rtol=1e-9, atol=1e-9,
                                       err_msg=f"scan {i} {tag}")
        row += n
    assert len(out.features["stat_mean"]) == row and len(out.features) > 150  # the full IBSI set


def test_bad_budget_and_empty_scans(scans):
    with pytest.raises(SettingsError, match="memory_budget_bytes"):
        extract_many(scans, IBSI_CONFIGS["C"], memory_budget_bytes=0)
    empty = ScanSubregions(scans[0].image, scans[0].labels, scans[0].spacing, [])
    out = extract_many([empty, scans[1]], IBSI_CONFIGS["C"], families=("stat",))
    assert out.index == [(1, v) for v in scans[1].nodes] and len(out.features["stat_mean"]) == len(scans[1].nodes)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_extract_many_cuda_matches_cpu(scans):
    cpu = extract_many(scans, IBSI_CONFIGS["C"])
    gpu = extract_many(scans, IBSI_CONFIGS["C"], device="cuda")
    for tag, values in cpu.features.items():
        np.testing.assert_allclose(gpu.features[tag].cpu().numpy(), values.numpy(), rtol=1e-6, atol=1e-9, err_msg=tag)


def test_subregion_scans_partition_every_scan_of_every_patient():
    from radiomics.batch import subregion_scans
    from radiomics.graphs import TimePointImage

    g = np.indices((20, 24, 24)) - np.array([10, 12, 12])[:, None, None, None]
    patients = []
    for radius in (6.0, 8.0):
        series = [TimePointImage(np.full(g.shape[1:], 30.0), (g**2).sum(0) <= (radius - t) ** 2, (1.0, 1.0, 1.0),
                                 1.0 + 60 * t) for t in range(2)]
        patients.append(series)
    out = subregion_scans(patients, SPEC, min_voxels=10)
    assert len(out) == 4
    frame = tumour_frame(patients[1][0].mask, (1.0, 1.0, 1.0))
    ref = partition_tumour(patients[1][1].mask, (1.0, 1.0, 1.0), frame, SPEC)
    np.testing.assert_array_equal(out[3].labels, ref.labels)
    assert out[3].nodes == [v for v in range(SPEC.n_nodes) if ref.counts[v] >= 10]
    assert np.shape(out[3].image) == ref.labels.shape
