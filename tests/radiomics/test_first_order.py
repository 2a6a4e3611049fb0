"""First-order families (stat_*, ih_*, ivh_*, loc_*) against SciPy/numpy and hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from radiomics.intensity_histogram import grey_level_histogram, intensity_histogram
from radiomics.intensity_stats import intensity_statistics
from radiomics.ivh import intensity_volume_histogram
from radiomics.local_intensity import SPHERE_RADIUS_MM, local_intensity
from radiomics.preprocess import IbsiSettings


def _random_voi(seed: int, shape: tuple[int, int, int] = (6, 7, 8)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = np.round(rng.gamma(2.0, 40.0, size=shape) - 60.0)
    mask = rng.random(shape) > 0.35
    return image, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_statistics_match_scipy_and_numpy(seed: int) -> None:
    image, mask = _random_voi(seed)
    x = image[mask]
    feats = intensity_statistics(torch.from_numpy(image)[None], torch.from_numpy(mask)[None])
    got = {k: v.item() for k, v in feats.items()}
    p10, p25, p75, p90 = np.percentile(x, [10, 25, 75, 90])
    robust = x[(x >= p10) & (x <= p90)]
    expected = {
        "stat_mean": x.mean(), "stat_var": x.var(), "stat_skew": stats.skew(x), "stat_kurt": stats.kurtosis(x),
        "stat_median": np.median(x), "stat_min": x.min(), "stat_max": x.max(), "stat_p10": p10, "stat_p90": p90,
        "stat_iqr": p75 - p25, "stat_range": np.ptp(x), "stat_mad": np.abs(x - x.mean()).mean(),
        "stat_rmad": np.abs(robust - robust.mean()).mean(), "stat_medad": np.abs(x - np.median(x)).mean(),
        "stat_cov": x.std() / x.mean(), "stat_qcod": (p75 - p25) / (p75 + p25), "stat_energy": (x**2).sum(),
        "stat_rms": math.sqrt((x**2).mean()),
    }
    assert set(got) == set(expected)
    for tag, value in expected.items():
        assert got[tag] == pytest.approx(float(value), rel=1e-9, abs=1e-9), tag


def test_histogram_features_hand_worked() -> None:
    # Grey levels 1,1,1,2,4,4 on N_g = 5 bins: counts [3, 1, 0, 2, 0].
    levels = torch.tensor([1, 1, 1, 2, 4, 4], dtype=torch.int64).view(1, 1, 1, 6)
    mask = torch.ones_like(levels, dtype=torch.bool)
    hist = grey_level_histogram(levels, mask, 5)
    assert hist[0].tolist() == [3.0, 1.0, 0.0, 2.0, 0.0]
    f = {k: v.item() for k, v in intensity_histogram(levels, mask, 5).items()}
    # gradient: [1-3, (0-3)/2, (2-1)/2, (0-0)/2, 0-2] = [-2, -1.5, 0.5, 0, -2]
    assert f["ih_max_grad"] == 0.5 and f["ih_max_grad_g"] == 3
    assert f["ih_min_grad"] == -2.0 and f["ih_min_grad_g"] == 1  # tie between 1 and 5: the lowest level
    assert f["ih_mode"] == 1
    p = np.array([3, 1, 2]) / 6
    assert f["ih_entropy"] == pytest.approx(stats.entropy(p, base=2))
    assert f["ih_uniformity"] == pytest.approx((p**2).sum())
    assert f["ih_mean"] == pytest.approx(13 / 6)


def test_ivh_discrete_case_hand_worked() -> None:
    # Intensities 1..5 (one voxel each) + five voxels at 1; X_min=1, X_max=5 (ROI), step 1.
    values = torch.tensor([1, 2, 3, 4, 5, 1, 1, 1, 1, 1], dtype=torch.float64).view(1, 1, 1, 10)
    mask = torch.ones_like(values, dtype=torch.bool)
    f = {k: v.item() for k, v in intensity_volume_histogram(values, mask, IbsiSettings(name="t", ct=False)).items()}
    # ν(i) = fraction >= i: ν(1)=1, ν(2)=0.4, ν(3)=0.3, ν(4)=0.2, ν(5)=0.1
    assert f["ivh_v10"] == pytest.approx(0.4)  # γ >= 0.1 first at i = 2 (γ = 0.25)
    assert f["ivh_v90"] == pytest.approx(0.1)  # γ >= 0.9 first at i = 5
    assert f["ivh_i10"] == 5.0  # ν <= 0.1 first at i = 5
    assert f["ivh_i90"] == 2.0  # ν <= 0.9 first at i = 2
    assert f["ivh_diff_i10_i90"] == 3.0
    assert f["ivh_auc"] == pytest.approx(np.trapezoid([1, 0.4, 0.3, 0.2, 0.1], [0, 0.25, 0.5, 0.75, 1.0]))


def test_ivh_fixed_bin_size_uses_bin_centres() -> None:
    values = torch.tensor([-1000.0, -998.0, 0.0, 399.0], dtype=torch.float64).view(1, 1, 1, 4)
    mask = torch.ones_like(values, dtype=torch.bool)
    settings = IbsiSettings(name="t", reseg_range=(-1000.0, 400.0), ivh=("fbs", 2.5))
    f = intensity_volume_histogram(values, mask, settings)
    # bin centres: -998.75, -996.25, 1.25, 398.75; ν <= 0.1 first at the centre above 398.75
    assert f["ivh_i10"].item() == pytest.approx(401.25)
    assert f["ivh_i90"].item() == pytest.approx(-996.25)


def _brute_local_mean(image: np.ndarray, centre: tuple[int, int, int], spacing: tuple[float, float, float]) -> float:
    idx = np.argwhere(np.ones_like(image, dtype=bool))
    d = np.sqrt((((idx - np.array(centre)) * np.array(spacing)) ** 2).sum(1))
    return float(image.reshape(-1)[d <= SPHERE_RADIUS_MM].mean())


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (3.0, 0.977, 0.977)])
def test_local_peaks_against_brute_force(spacing: tuple[float, float, float]) -> None:
    rng = np.random.default_rng(9)
    image = np.round(rng.normal(0, 100, size=(7, 16, 16)))
    mask = np.zeros_like(image, dtype=bool)
    mask[1:5, 3:12, 2:9] = True
    image[2, 5, 4] = 900.0  # a unique maximum inside the ROI
    f = local_intensity(torch.from_numpy(image)[None], torch.from_numpy(mask)[None], spacing)
    assert f["loc_peak_loc"].item() == pytest.approx(_brute_local_mean(image, (2, 5, 4), spacing), rel=1e-9)
    brute_glob = max(_brute_local_mean(image, tuple(c), spacing) for c in np.argwhere(mask))  # type: ignore[arg-type]
    assert f["loc_peak_glob"].item() == pytest.approx(brute_glob, rel=1e-9)


def test_uniform_image_gives_its_value_everywhere() -> None:
    image = torch.full((2, 5, 6, 7), 42.0, dtype=torch.float64)
    mask = torch.zeros_like(image, dtype=torch.bool)
    mask[:, 1:4, 1:5, 2:6] = True
    f = local_intensity(image, mask, (1.0, 1.0, 1.0))
    assert f["loc_peak_loc"].tolist() == pytest.approx([42.0, 42.0])
    s = intensity_statistics(image, mask)
    assert s["stat_var"].tolist() == [0.0, 0.0] and s["stat_skew"].tolist() == [0.0, 0.0]


def test_first_order_batch_equals_each_voi_alone() -> None:
    # Two VOIs with different intensity ranges: the IVH grids differ in length and get padded in the batch.
    a, ma = _random_voi(3)
    b, mb = _random_voi(4)
    image = torch.from_numpy(np.stack([a, b * 3.0]))
    mask = torch.from_numpy(np.stack([ma, mb]))
    settings = IbsiSettings(name="t", ct=False)
    both = {**intensity_statistics(image, mask), **intensity_volume_histogram(image, mask, settings),
            **local_intensity(image, mask, (1.0, 1.0, 1.0))}
    for i in range(2):
        one = {**intensity_statistics(image[i : i + 1], mask[i : i + 1]),
               **intensity_volume_histogram(image[i : i + 1], mask[i : i + 1], settings),
               **local_intensity(image[i : i + 1], mask[i : i + 1], (1.0, 1.0, 1.0))}
        for tag, values in both.items():
            assert values[i].item() == pytest.approx(one[tag][0].item(), rel=1e-9), tag
