"""Sub-region graphs: batched features against numpy/scipy, degenerate series, storage and batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch_geometric.loader import DataLoader

from radiomics.exceptions import EmptyMaskError, GeometryMismatchError, MaskOutsideImageError, NonCTIntensityError
from radiomics.graphs import (
    NODE_FEATURES,
    TimePointImage,
    build_patient_graph,
    first_order_features,
    load_graphs,
    pad_time,
    save_graphs,
    spatiotemporal_edge_index,
)
from radiomics.subregions import SubregionError, SubregionSpec

SHAPE = (34, 40, 40)


def lesion(radius: float, day: float, rng: np.random.Generator, centre=(16.5, 19.5, 19.5)) -> TimePointImage:
    g = np.meshgrid(*[np.arange(n) - c for n, c in zip(SHAPE, centre, strict=True)], indexing="ij")
    r = np.sqrt(sum(x**2 for x in g))
    mask = r <= radius
    ct = np.where(mask, 30 + 25 * rng.standard_normal(SHAPE), -820 + 60 * rng.standard_normal(SHAPE))
    return TimePointImage(ct.clip(-1024, 3071).astype(np.float32), mask, (1.0, 1.0, 1.0), day)


def reference_stats(v: np.ndarray) -> list[float]:
    """The same ten statistics from numpy/scipy (independent of the torch segment arithmetic)."""
    p10, p90 = np.percentile(v, [10, 90])
    inner = v[(v >= p10) & (v <= p90)]
    bins = np.floor((v + 1000.0) / 25.0).clip(min=0).astype(int)
    p = np.bincount(bins) / v.size
    p = p[p > 0]
    rmad = np.abs(inner - inner.mean()).mean() if inner.size else 0.0
    return [v.mean(), np.median(v), p10, p90, stats.iqr(v), rmad,
            stats.skew(v), stats.kurtosis(v, fisher=True), -(p * np.log2(p)).sum(), (p**2).sum()]


def test_first_order_features_match_numpy_and_scipy():
    rng = np.random.default_rng(3)
    sizes = [1, 2, 7, 50, 333, 0, 1000]
    values = np.concatenate([rng.gamma(2.0, 40.0, n) - 300 for n in sizes])
    segment = np.repeat(np.arange(len(sizes)), sizes)
    perm = rng.permutation(values.size)  # voxel order must not matter
    got = first_order_features(torch.as_tensor(values[perm]), torch.as_tensor(segment[perm]), len(sizes)).numpy()
    assert got.shape == (len(sizes), 10)
    for s, n in enumerate(sizes):
        if n == 0:
            assert (got[s] == 0).all()
            continue
        expected = np.nan_to_num(reference_stats(values[segment == s]))  # scipy: nan skew for n = 1
        np.testing.assert_allclose(got[s], expected, rtol=2e-5, atol=1e-3, err_msg=f"segment of {n} voxels")


def test_texture_columns():
    rng = np.random.default_rng(6)
    tp = lesion(8.0, 1, rng)
    ct = np.where(tp.mask, 40.0, np.asarray(tp.ct)).astype(np.float32)  # flat tumour, noisy lung around it
    g = build_patient_graph([TimePointImage(ct, tp.mask, tp.spacing, 1)], "P")
    entr, contrast, idn = (NODE_FEATURES.index(n) for n in ("cm_joint_entr", "cm_contrast", "cm_inv_diff_norm"))
    shells, rings = slice(0, 24), slice(24, 48)
    assert (g.x[0, shells, entr] == 0).all() and (g.x[0, shells, contrast] == 0).all()
    torch.testing.assert_close(g.x[0, shells, idn], torch.ones(24))
    assert (g.x[0, rings, contrast] > 0).all() and (g.x[0, rings, entr] > 1).all()
    assert (g.x[0, rings, idn] < 1).all()


def test_constant_segment_has_zero_shape_statistics():
    got = first_order_features(torch.full((20,), 40.0), torch.zeros(20, dtype=torch.long), 1)[0]
    mean, median, p10, p90, iqr, rmad, skew, kurt, entropy, uniformity = got.tolist()
    assert (mean, median, p10, p90, iqr, rmad, skew, kurt, entropy, uniformity) == (40, 40, 40, 40, 0, 0, 0, 0, 0, 1)


@pytest.fixture(scope="module")
def complete_response_graph():
    rng = np.random.default_rng(11)
    series = [lesion(10.0, 1, rng), lesion(5.0, 64, rng), lesion(0.0, 106, rng)]  # vanished at T2
    return build_patient_graph(series, "FEDRESP-S01-0001")


def test_graph_shapes_and_degenerate_time_point(complete_response_graph):
    g = complete_response_graph
    spec = SubregionSpec()
    T, V, F = 3, spec.n_nodes, len(NODE_FEATURES)
    assert g.x.shape == (T, V, F) and g.node_valid.shape == (T, V)
    assert g.edge_index.shape == (2, 224) and g.days.tolist() == [1.0, 64.0, 106.0]
    assert torch.isfinite(g.x).all()
    assert g.node_valid[0].all()
    assert not g.node_valid[2].any()  # vanished: every node present, flagged empty, zeros
    assert (g.x[2, :, 0] == 1).all() and (g.x[2, :, 1:] == 0).all()
    assert g.tumour_volume[2] == 0 and g.tumour_volume[1] < g.tumour_volume[0]
    # Volume ratio to T0 adds up to 1 over the tumour shells at T0 and shrinks at T1.
    shells = slice(0, spec.n_shells * spec.n_sectors)
    assert g.x[0, shells, 1].sum().item() == pytest.approx(1.0, abs=1e-5)
    assert 0.05 < g.x[1, shells, 1].sum().item() < 0.25  # (5/10)^3 = 0.125
    # Tumour nodes are soft tissue, outer rings are lung.
    mean = NODE_FEATURES.index("stat_mean")
    assert (g.x[0, shells, mean] > 0).all() and (g.x[0, -spec.n_sectors :, mean] < -600).all()


def test_invalid_nodes_are_zeroed_and_flagged():
    rng = np.random.default_rng(5)
    g = build_patient_graph([lesion(1.5, 1, rng), lesion(1.0, 50, rng)], "FEDRESP-S01-0002")
    spec = SubregionSpec()
    assert not g.node_valid.all()  # a 1–2 mm lesion cannot fill 24 tumour nodes with 5 voxels each
    invalid = ~g.node_valid
    assert (g.x[..., 0][invalid] == 1).all() and (g.x[..., 1:][invalid] == 0).all()
    assert (g.x[..., 0][g.node_valid] == 0).all()
    assert g.node_valid[:, spec.n_shells * spec.n_sectors :].all()  # rings are populated
    assert torch.isfinite(g.x).all()


def test_save_load_and_batch_in_a_torch_geometric_loader(tmp_path, complete_response_graph):
    rng = np.random.default_rng(2)
    other = build_patient_graph([lesion(7.0, 1, rng), lesion(8.0, 70, rng), lesion(9.0, 120, rng)], "P2")
    path = tmp_path / "site" / "graphs.pt"
    save_graphs([complete_response_graph, other], path, SubregionSpec())
    assert [p.name for p in path.parent.iterdir()] == ["graphs.pt"]  # no temporary file left behind
    loaded = load_graphs(path)
    assert [g.usubjid for g in loaded] == ["FEDRESP-S01-0001", "P2"]
    torch.testing.assert_close(loaded[1].x, other.x)
    batch = next(iter(DataLoader(loaded, batch_size=2, shuffle=False)))
    assert batch.x.shape == (2, 3, 48, len(NODE_FEATURES))
    assert batch.edge_index.shape == (2, 2, 224) and (batch.edge_index[1] == batch.edge_index[0]).all()
    assert batch.days.shape == (2, 3) and batch.node_valid.shape == (2, 3, 48) and batch.pos.shape == (2, 48, 3)
    assert batch.usubjid == ["FEDRESP-S01-0001", "P2"]


def test_loading_another_file_is_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"format": "something-else"}, path)
    with pytest.raises(ValueError, match="not a sub-region graph file"):
        load_graphs(path)


def test_pad_time_allows_mixed_series_in_one_batch(complete_response_graph):
    rng = np.random.default_rng(4)
    early = build_patient_graph([lesion(7.0, 1, rng), lesion(6.0, 63, rng)], "P3")
    padded = pad_time(early, 3)
    assert padded.time_valid.tolist() == [True, True, False]
    assert padded.x.shape == (3, 48, len(NODE_FEATURES)) and (padded.x[2, :, 0] == 1).all()
    batch = next(iter(DataLoader([complete_response_graph, padded], batch_size=2)))
    assert batch.x.shape[:2] == (2, 3)
    with pytest.raises(ValueError, match="cannot pad"):
        pad_time(complete_response_graph, 2)


def test_spatiotemporal_edges():
    spatial = torch.tensor([[0, 1], [1, 0]])
    st = spatiotemporal_edge_index(spatial, n_nodes=2, n_time=3)
    pairs = set(zip(st[0].tolist(), st[1].tolist(), strict=True))
    assert pairs == {(0, 1), (1, 0), (2, 3), (3, 2), (4, 5), (5, 4), (0, 2), (2, 0), (1, 3), (3, 1), (2, 4), (4, 2),
                     (3, 5), (5, 3)}


def _normalised(rng):
    tp = lesion(8.0, 1, rng)
    scaled = (np.asarray(tp.ct) + 1024) / 4095
    return [TimePointImage(scaled, tp.mask, tp.spacing, 1)], NonCTIntensityError, "normalised"


def _raw_stored_values(rng):
    tp = lesion(8.0, 1, rng)
    shifted = np.asarray(tp.ct) + 5000  # e.g. unsigned stored values without the rescale intercept
    return [TimePointImage(shifted, tp.mask, tp.spacing, 1)], NonCTIntensityError, "outside plausible CT"


def _shape_mismatch(rng):
    tp = lesion(8.0, 1, rng)
    return [TimePointImage(np.asarray(tp.ct)[:-1], tp.mask, tp.spacing, 1)], GeometryMismatchError, "differs from mask"


def _tumour_on_padding(rng):
    tp = lesion(8.0, 1, rng)
    ct = np.asarray(tp.ct).copy()
    ct[19] = -3024.0  # a slice of scanner padding through the lesion
    return [TimePointImage(ct, tp.mask, tp.spacing, 1)], MaskOutsideImageError, "padding"


def _empty_baseline(rng):
    tp = lesion(0.0, 1, rng)
    return [tp], EmptyMaskError, "T0"


def _days_not_increasing(rng):
    return [lesion(8.0, 10, rng), lesion(8.0, 10, rng)], SubregionError, "must increase"


BAD_INPUTS = [_normalised, _raw_stored_values, _shape_mismatch, _tumour_on_padding, _empty_baseline,
              _days_not_increasing]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_reported(case):
    series, error, message = case(np.random.default_rng(0))
    with pytest.raises(error, match=message):
        build_patient_graph(series, "P")


def test_padding_outside_the_field_of_view_is_left_out_of_the_rings():
    rng = np.random.default_rng(8)
    tp = lesion(8.0, 1, rng)
    ct = np.asarray(tp.ct).copy()
    ct[:, :, :8] = -3024.0  # the field of view ends ~3.5 mm from the lesion (x = 19.5 ± 8)
    clean = build_patient_graph([tp], "P")
    cut = build_patient_graph([TimePointImage(ct, tp.mask, tp.spacing, 1)], "P")
    torch.testing.assert_close(cut.x[:, :24], clean.x[:, :24])  # tumour shells unchanged
    ratio = NODE_FEATURES.index("node_volume_ratio_t0")
    assert (cut.x[0, 24:, ratio] <= clean.x[0, 24:, ratio]).all()
    assert (cut.x[0, 24:, ratio] < clean.x[0, 24:, ratio]).any()  # rings lost their padded voxels
    assert cut.x[0, 24:, NODE_FEATURES.index("stat_p10")][cut.node_valid[0, 24:]].min() > -1100


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(9)
    series = [lesion(10.0, 1, rng), lesion(7.0, 60, rng)]
    cpu = build_patient_graph(series, "P", device="cpu")
    gpu = build_patient_graph(series, "P", device="cuda")
    torch.testing.assert_close(gpu.x, cpu.x, rtol=1e-3, atol=1e-2)
