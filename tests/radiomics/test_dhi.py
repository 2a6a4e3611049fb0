"""Habitats, the ITH score and the Dynamic Heterogeneity Index on hand-made maps and synthetic tumours."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import jensenshannon

from radiomics.dhi import (
    COMPONENTS,
    DHI_COLUMNS,
    DhiDefinition,
    HabitatState,
    dhi_intervals,
    glcm_entropy,
    habitat_states,
    icc,
    icc_ci,
    interval_rows,
    js_divergence,
)
from radiomics.exceptions import EmptyMaskError, GeometryMismatchError, SettingsError
from radiomics.habitats import HabitatModel, HabitatSettings, interior, ith_score, kmeans, local_features, mixing_index

#: Unit standardisation, equal weights: DHI = (√JSD·r + ΔM·r + ΔH·r) / 3.
UNIT = DhiDefinition.from_mapping({c: {"weight": 1.0, "mean": 0.0, "sd": 1.0} for c in COMPONENTS})


def _blocks():
    lab = np.full((6, 6, 6), -1)
    lab[0:2, 0:5, 0:1] = 0  # habitat 0, region of 10
    lab[4:6, 0:3, 0:1] = 0  # habitat 0, region of 6
    lab[0:5, 0:2, 3:5] = 1  # habitat 1, one region of 20
    return lab, 1 - (10 / 2 + 20 / 1) / 36


def _checkerboard():
    idx = np.indices((4, 4, 4)).sum(axis=0)
    return idx % 2, 1 - (1 / 32 + 1 / 32) / 64  # every voxel its own face-connected region


def _two_halves():
    lab = np.zeros((4, 4, 4), int)
    lab[:, :, 2:] = 1
    return lab, 0.0


@pytest.mark.parametrize("case", [_blocks, _checkerboard, _two_halves])
def test_ith_score_by_hand_in_3d(case):
    labels, expected = case()
    assert ith_score(labels, n_habitats=2, mode="volume") == pytest.approx(expected)


def test_ith_score_by_hand_per_slice():
    lab = np.full((2, 4, 4), -1)
    lab[0, 0, 0:3] = 0  # slice 0, habitat 0: regions of 3 and 1 → a/n = 3/2
    lab[0, 3, 3] = 0
    lab[0, 2, 0:2] = lab[0, 3, 0:2] = 1  # slice 0, habitat 1: one region of 4 → 4
    lab[1, 1, 1:3] = 0  # slice 1, habitat 0: one region of 2 → 2
    assert ith_score(lab, 2) == pytest.approx(1 - (1.5 + 4 + 2) / 10)
    checker, _ = _checkerboard()  # 4 slices, each habitat 8 isolated pixels per slice: a/n = 1/8
    assert ith_score(checker, 2) == pytest.approx(1 - 4 * 2 * (1 / 8) / 64)
    # A region spanning two slices is two regions in "slices" mode and one in "volume" mode.
    column = np.zeros((2, 1, 1), int)
    assert ith_score(column, 1) == ith_score(column, 1, mode="volume") == 0.0


def test_ith_connectivity_joins_diagonal_neighbours():
    lab = np.full((3, 3, 3), -1)
    lab[0, 0, 0] = lab[1, 1, 1] = 0  # touch at a corner only
    lab[2, 2, 2] = 1
    assert ith_score(lab, 2, connectivity=1, mode="volume") == pytest.approx(1 - (1 / 2 + 1) / 3)
    assert ith_score(lab, 2, connectivity=3, mode="volume") == pytest.approx(0.0)
    assert ith_score(np.full((2, 2, 2), -1), 2) == 0.0
    with pytest.raises(SettingsError, match="mode"):
        ith_score(lab, 2, mode="2d")  # type: ignore[arg-type]


def test_local_features_use_tumour_voxels_only():
    rng = np.random.default_rng(0)
    ct = rng.normal(0, 50, (9, 10, 11))
    mask = np.zeros(ct.shape, bool)
    mask[2:7, 3:8, 2:9] = True
    mask[4, 5, 5] = False
    feats = local_features(torch.as_tensor(ct), torch.as_tensor(mask), window=3).double().numpy()
    w = np.maximum(ndimage.uniform_filter(mask.astype(float), 3, mode="constant") * 27, 1.0)
    s1 = ndimage.uniform_filter(ct * mask, 3, mode="constant") * 27
    s2 = ndimage.uniform_filter(ct * ct * mask, 3, mode="constant") * 27
    mean = s1 / w
    assert feats.shape == (mask.sum(), 2)
    np.testing.assert_allclose(feats[:, 0], mean[mask], atol=1e-3)
    np.testing.assert_allclose(feats[:, 1], np.sqrt(np.maximum(s2 / w - mean**2, 0))[mask], atol=1e-3)


def test_kmeans_recovers_separated_clusters_reproducibly():
    rng = np.random.default_rng(1)
    truth = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    x = torch.as_tensor(np.concatenate([c + rng.normal(0, 0.5, (200, 2)) for c in truth]), dtype=torch.float32)
    a = kmeans(x, 3, torch.Generator().manual_seed(5))
    b = kmeans(x, 3, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    found = sorted(a.numpy().round(0).tolist())
    assert found == sorted(truth.tolist())


def _tumour(core_radius: float, radius: float = 14.0, seed: int = 0, patchy: bool = False):
    """A ball with a necrotic core (−20 HU), and an enhancing (70 HU) and a plain (25 HU) half-shell.

    ``patchy``: the same three tissues in equal parts, but as random blobs of a few voxels (a smoothed
    random field cut at its terciles) instead of three compartments.
    """
    rng = np.random.default_rng(seed)
    n = 36
    g = np.indices((n, n, n)) - (n - 1) / 2
    r = np.sqrt((g**2).sum(0))
    mask = r <= radius
    if patchy:
        field = ndimage.gaussian_filter(rng.standard_normal(mask.shape), 2.0)
        ct = np.choose(np.digitize(field, np.quantile(field[mask], [1 / 3, 2 / 3])), [-20.0, 25.0, 70.0])
    else:
        ct = np.where(r < core_radius, -20.0, np.where(g[2] > 0, 70.0, 25.0))
    ct = np.where(mask, ct + rng.normal(0, 15, mask.shape), -800.0)
    return ct.astype(np.float32), mask, r, g


def test_habitats_find_the_compartments():
    ct, mask, r, g = _tumour(core_radius=7.0)
    model = HabitatModel(HabitatSettings(n_habitats=3)).fit(torch.as_tensor(ct), torch.as_tensor(mask),
                                                             torch.Generator().manual_seed(0))
    labels = model.assign(torch.as_tensor(ct), torch.as_tensor(mask)).numpy()
    truth = np.where(r < 7.0, 0, np.where(g[2] > 0, 1, 2))[mask]
    # Each true compartment is one habitat (the contingency table is close to a permutation).
    table = np.zeros((3, 3))
    np.add.at(table, (truth, labels[mask]), 1)
    assert table.max(axis=1).sum() / mask.sum() > 0.9
    assert len(set(table.argmax(axis=1).tolist())) == 3
    assert ith_score(labels, 3) < 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compact_tumour_is_less_heterogeneous_than_patchy_one(seed):
    gen = torch.Generator().manual_seed(seed)
    compact = habitat_states([(*_tumour(7.0, seed=seed)[:2], 1.0)], gen)[0]
    patchy = habitat_states([(*_tumour(7.0, seed=seed, patchy=True)[:2], 1.0)], gen)[0]
    assert compact.ith < 0.1 and patchy.ith > compact.ith + 0.1


def test_habitats_correspond_over_time():
    gen = torch.Generator().manual_seed(3)
    t0 = _tumour(core_radius=5.0, seed=1)[:2]
    t1 = _tumour(core_radius=10.0, seed=2)[:2]  # the necrotic core grew
    states = habitat_states([(*t0, 1.0), (*t0, 43.0), (*t1, 85.0), (t0[0], np.zeros_like(t0[1]), 127.0)], gen)
    # The necrotic core goes from (5/14)³ = 5 % to (10/14)³ = 36 % of the volume: some habitat gains > 15 points.
    assert max(b - a for a, b in zip(states[0].proportions, states[2].proportions, strict=True)) > 0.15
    rows = dhi_intervals(states, UNIT)
    assert [x.status for x in rows] == ["ok", "ok", "vanished"]
    assert rows[0].dhi == pytest.approx(0.0, abs=1e-12)  # same image: nothing changed
    assert rows[1].jsd > 0.02 and rows[1].z["density"] == pytest.approx(np.sqrt(rows[1].jsd) * 30 / 42)
    assert rows[2].jsd == 1.0 and rows[2].delta_ith == pytest.approx(-states[2].ith)


def test_dhi_arithmetic_against_scipy_jensen_shannon():
    a = HabitatState(day=1, n_voxels=500, ith=0.2, proportions=(0.5, 0.5, 0.0), mixing=0.4, texture_entropy=5.0,
                     mask_voxels=599)
    b = HabitatState(day=61, n_voxels=400, ith=0.5, proportions=(1.0, 0.0, 0.0), mixing=0.1, texture_entropy=5.6,
                     mask_voxels=299)
    jsd = jensenshannon(a.proportions, b.proportions, base=2) ** 2
    assert js_divergence(a.proportions, b.proportions) == pytest.approx(jsd)
    definition = DhiDefinition.from_mapping({"density": {"weight": 2.0, "mean": 0.1, "sd": 0.2},
                                             "spatial": {"weight": 1.0, "mean": 0.0, "sd": 0.05},
                                             "texture": {"weight": -1.0, "mean": 0.1, "sd": 0.5}})
    (row,) = dhi_intervals([a, b], definition)
    assert row.status == "ok" and row.days == 60
    assert row.delta_ith == pytest.approx(0.3)
    assert row.dlogvol == pytest.approx(np.log(300 / 600))
    z_density = (np.sqrt(jsd) * 0.5 - 0.1) / 0.2
    z_spatial = (-0.3 * 0.5 - 0.0) / 0.05
    z_texture = (0.6 * 0.5 - 0.1) / 0.5
    assert row.z == pytest.approx({"density": z_density, "spatial": z_spatial, "texture": z_texture})
    assert row.dhi == pytest.approx((2 * z_density + z_spatial - z_texture) / 4)
    (csv_row,) = interval_rows([a, b], [row], ("T0", "T1"))
    assert list(csv_row) == list(DHI_COLUMNS[2:]) and csv_row["DHI"] == row.dhi and csv_row["VOXELS_TO"] == 299


@pytest.mark.parametrize(
    "data",
    [{"density": {"weight": 1.0, "mean": 0.0, "sd": 1.0}},  # components missing
     {c: {"weight": 0.0, "mean": 0.0, "sd": 1.0} for c in ("density", "spatial", "texture")},  # all weights 0
     {c: {"weight": 1.0, "mean": 0.0, "sd": 0.0} for c in ("density", "spatial", "texture")}],  # sd 0
)
def test_bad_dhi_definitions_are_reported(data):
    with pytest.raises(SettingsError, match="DHI"):
        DhiDefinition.from_mapping(data)


@pytest.mark.parametrize(
    ("n_a", "n_b", "status"),
    [(500, 10, "small"), (10, 500, "small"), (0, 500, "absent"), (500, 0, "vanished"), (50, 50, "ok")],
)
def test_dhi_status(n_a, n_b, status):
    a = HabitatState(1, n_a, 0.3 if n_a else 0.0, (0.5, 0.5) if n_a else (0.0, 0.0), mixing=0.5 if n_a else 0.0)
    b = HabitatState(50, n_b, 0.1 if n_b else 0.0, (0.2, 0.8) if n_b else (0.0, 0.0))
    (row,) = dhi_intervals([a, b], UNIT, min_voxels=50)
    assert row.status == status
    assert np.isfinite(row.dhi) and np.isfinite(row.dlogvol)
    if status == "vanished":  # the whole composition is gone, the map's mixing too; texture unknown (0)
        assert row.jsd == 1.0 and row.delta_mixing == -0.5 and row.delta_texture == 0.0
    if status == "small":
        assert row.z["spatial"] == row.z["texture"] == 0.0 and row.z["density"] != 0.0
    if status == "absent":
        assert row.dhi == 0.0 and set(row.z.values()) == {0.0}


def test_dhi_needs_increasing_days():
    s = HabitatState(10, 100, 0.1, (1.0, 0.0))
    with pytest.raises(SettingsError, match="scan days must increase"):
        dhi_intervals([s, s], UNIT)


def test_mixing_index_by_hand():
    halves, _ = _two_halves()  # 4 slices x 24 in-plane pairs, 4 per slice across the interface
    d0 = 1 - 2 * 32 * 31 / (64 * 63)
    assert mixing_index(halves, 2) == pytest.approx((16 / 96) / d0)
    assert mixing_index(halves, 2, mode="volume") == pytest.approx((16 / 144) / d0)  # + 48 agreeing z pairs
    checker, _ = _checkerboard()  # every pair disagrees: more mixed than random
    assert mixing_index(checker, 2) == pytest.approx(1 / d0)
    assert mixing_index(np.zeros((3, 3, 3), int), 2) == 0.0  # one habitat: nothing to mix
    with pytest.raises(SettingsError, match="mode"):
        mixing_index(halves, 2, mode="2d")  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixing_index_is_one_under_its_permutation_null(seed):
    rng = np.random.default_rng(seed)
    mask = _tumour(7.0, seed=seed)[1]
    labels = np.full(mask.shape, -1)
    labels[mask] = rng.choice(3, size=int(mask.sum()), p=[0.6, 0.3, 0.1])
    assert mixing_index(labels, 3) == pytest.approx(1.0, abs=0.03)


def _blob_labels(radius: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(2 * radius + 4)
    g = np.indices((n, n, n)) - (n - 1) / 2
    mask = np.sqrt((g**2).sum(0)) <= radius
    field = ndimage.gaussian_filter(rng.standard_normal(mask.shape), 2.0)
    labels = np.digitize(field, np.quantile(field[mask], [1 / 3, 2 / 3]))
    return np.where(mask, labels, -1)


def test_mixing_index_does_not_follow_tumour_size():
    """Same texture of habitat blobs, a ball of radius 8 vs 20 voxels (15x the volume): M barely moves."""
    small = np.mean([mixing_index(_blob_labels(8.0, s), 3) for s in range(3)])
    large = np.mean([mixing_index(_blob_labels(20.0, s), 3) for s in range(3)])
    assert 0.1 < small < 0.9 and abs(small - large) < 0.1 * large


def test_interior_erodes_and_falls_back_for_small_tumours():
    ball = _tumour(5.0)[1]
    core = interior(torch.as_tensor(ball), depth=2).numpy()
    expected = ndimage.binary_erosion(ball, np.ones((3, 3, 3)), iterations=2)
    np.testing.assert_array_equal(core, expected)
    tiny = np.zeros((7, 7, 7), bool)
    tiny[2:5, 2:5, 2:5] = True  # 27 voxels: eroding leaves one voxel, below min_voxels
    np.testing.assert_array_equal(interior(torch.as_tensor(tiny), depth=2, min_voxels=5).numpy(), tiny)


def _glcm_entropy_numpy(levels: np.ndarray, mask: np.ndarray) -> float:
    """Merged 3-D GLCM joint entropy by brute force over the 13 directions (IBSI 3.6, both pair orders)."""
    n = int(levels.max()) + 1
    counts = np.zeros((n, n))
    dirs = [(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
            if (dz, dy, dx) > (0, 0, 0)]
    Z, Y, X = levels.shape
    for dz, dy, dx in dirs:
        for z, y, x in np.argwhere(mask):
            z2, y2, x2 = z + dz, y + dy, x + dx
            if 0 <= z2 < Z and 0 <= y2 < Y and 0 <= x2 < X and mask[z2, y2, x2]:
                counts[levels[z, y, x], levels[z2, y2, x2]] += 1
                counts[levels[z2, y2, x2], levels[z, y, x]] += 1
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def test_glcm_entropy_against_brute_force():
    rng = np.random.default_rng(4)
    ct = rng.normal(20, 60, (5, 6, 7)).astype(np.float32)
    mask = rng.random(ct.shape) < 0.7
    levels = np.floor((np.clip(ct, -1000, 400) + 1000) / 25).astype(int) + 1
    assert glcm_entropy(torch.as_tensor(ct), torch.as_tensor(mask)) == pytest.approx(
        _glcm_entropy_numpy(levels, mask), rel=1e-9)
    assert glcm_entropy(torch.as_tensor(ct), torch.zeros(ct.shape, dtype=torch.bool)) == 0.0


def test_icc_bootstrap_ci_brackets_the_estimate():
    rng = np.random.default_rng(0)
    truth = rng.normal(0, 1, (60, 1))
    ratings = truth + rng.normal(0, 0.3, (60, 4))
    point, lo, hi = icc_ci(ratings, "2,1", np.random.default_rng(1), n_boot=300)
    assert point == icc(ratings, "2,1") and lo < point < hi
    assert 0.8 < point < 1.0 and hi - lo < 0.2
    assert icc_ci(ratings, "2,1", np.random.default_rng(1), n_boot=300) == (point, lo, hi)


# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; ICC(2,1) = 0.29, ICC(3,1) = 0.71.
SHROUT_FLEISS = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]


@pytest.mark.parametrize(("form", "expected"), [("2,1", 0.29), ("3,1", 0.71)])
def test_icc_reproduces_shrout_fleiss(form, expected):
    assert icc(SHROUT_FLEISS, form) == pytest.approx(expected, abs=0.005)


def test_icc_edge_cases():
    x = np.arange(10.0)[:, None] + np.zeros((1, 3))
    assert icc(x, "3,1") == pytest.approx(1.0)
    offset = x + np.array([0.0, 5.0, 10.0])
    assert icc(offset, "3,1") == pytest.approx(1.0)  # consistency ignores a constant offset
    assert icc(offset, "2,1") < 0.9  # absolute agreement does not
    with pytest.raises(ValueError, match="no variance"):
        icc(np.ones((4, 3)))
    with pytest.raises(ValueError, match="shape"):
        icc(np.ones(4))


def test_bad_inputs_are_reported():
    gen = torch.Generator().manual_seed(0)
    ct, mask = _tumour(5.0)[:2]
    with pytest.raises(EmptyMaskError, match="fewer than the 3 habitats"):
        habitat_states([(ct, np.zeros_like(mask), 1.0)], gen)
    with pytest.raises(GeometryMismatchError, match="differ in shape"):
        habitat_states([(ct, mask[:-1], 1.0)], gen)


@pytest.mark.parametrize(
    "kwargs",
    [{"n_habitats": 1}, {"window": 4}, {"connectivity": 4}, {"n_init": 0}, {"max_fit_voxels": 2},
     {"texture_weight": -1.0}, {"min_region_voxels": 0}, {"ith_mode": "2d"}, {"hu_range": (400.0, -500.0)}],
)
def test_bad_settings_are_reported(kwargs):
    with pytest.raises(SettingsError, match=r"but (was|were)"):
        HabitatSettings(**kwargs)


@pytest.mark.parametrize(("mode", "connectivity", "seed"), [("slices", 1, 0), ("slices", 2, 1), ("volume", 1, 2),
                                                            ("volume", 3, 3)])
def test_region_count_in_torch_equals_scipy(mode, connectivity, seed):
    """The device path of ith_score (min-label propagation) finds exactly scipy's regions."""
    from radiomics.habitats import _region_stats, _region_stats_torch

    rng = np.random.default_rng(seed)
    lab = _blob_labels(7.0, seed)
    lab[rng.random(lab.shape) < 0.05] = -1  # holes
    if mode == "volume":
        structure = ndimage.generate_binary_structure(3, connectivity)
    else:
        structure = np.zeros((3, 3, 3), bool)
        structure[1] = ndimage.generate_binary_structure(2, connectivity)
    for i in range(3):
        ref_sizes, ref_z = _region_stats(lab == i, structure, 2)
        sizes, z = _region_stats_torch(torch.as_tensor(lab == i), structure, 2)
        assert sorted(sizes.tolist()) == sorted(ref_sizes.tolist()) and len(sizes) >= 1
        if mode == "slices":  # the slice of each region too
            ref = sorted(zip(ref_z.tolist(), ref_sizes.tolist(), strict=True))
            assert sorted(zip(z.tolist(), sizes.tolist(), strict=True)) == ref


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ith_score_cuda_matches_cpu():
    lab = _blob_labels(9.0, 4)
    for mode in ("slices", "volume"):
        gpu = ith_score(torch.as_tensor(lab, device="cuda"), 3, mode=mode)
        assert gpu == pytest.approx(ith_score(lab, 3, mode=mode))
