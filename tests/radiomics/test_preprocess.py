"""IBSI image processing: grid alignment, interpolation (vs SciPy), masks, re-segmentation, discretisation,
and the typed input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from radiomics.exceptions import (
    EmptyMaskError,
    GeometryMismatchError,
    MaskOutsideImageError,
    NonCTIntensityError,
    SettingsError,
)
from radiomics.interpolation import aligned_grid, apply_separable, interpolation_matrices, resample
from radiomics.preprocess import IBSI_CONFIGS, IbsiSettings, discretise, preprocess, resegment


@pytest.mark.parametrize(
    ("n", "spacing", "new_spacing", "n_new"),
    [
        (204, 0.977, 2.0, 100),  # IBSI CT phantom x (diagnostic img_dim_x_interp_img = 100)
        (201, 0.977, 2.0, 99),  # y: 99
        (60, 3.0, 2.0, 90),  # z: 90
        (5, 2.0, 2.0, 5),
        (1, 1.0, 5.0, 1),  # a grid never vanishes (ceil)
    ],
)
def test_aligned_grid_size_and_centre(n: int, spacing: float, new_spacing: float, n_new: int) -> None:
    size, positions = aligned_grid(n, spacing, new_spacing)
    assert size == n_new
    # IBSI: the centres of both grids coincide, and the new grid has the new spacing.
    assert positions.mean().item() * spacing == pytest.approx((n - 1) * spacing / 2.0)
    if size > 1:
        np.testing.assert_allclose(np.diff(positions.numpy() * spacing), new_spacing)


def _scipy_resample(volume: np.ndarray, spacing: tuple[float, float, float], new_spacing: tuple[float, float, float],
                    order: int) -> np.ndarray:
    coords = [aligned_grid(n, s, t)[1].numpy() for n, s, t in zip(volume.shape, spacing, new_spacing, strict=True)]
    grid = np.meshgrid(*coords, indexing="ij")
    return ndimage.map_coordinates(volume, grid, order=order, mode="mirror" if order == 3 else "nearest")


@pytest.mark.parametrize(("method", "order", "tol"), [("linear", 1, 1e-9), ("cubic", 3, 1e-6)])
def test_interpolation_matches_scipy(method: str, order: int, tol: float) -> None:
    rng = np.random.default_rng(5)
    volume = rng.normal(0.0, 100.0, size=(9, 11, 13))
    spacing, new_spacing = (3.0, 0.9, 0.8), (2.0, 2.0, 2.0)
    mats, out_spacing = interpolation_matrices(volume.shape, spacing, new_spacing, method)  # type: ignore[arg-type]
    ours = apply_separable(torch.from_numpy(volume)[None], mats)[0].numpy()
    ref = _scipy_resample(volume, spacing, new_spacing, order)
    assert out_spacing == new_spacing
    assert ours.shape == ref.shape
    # SciPy's spline prefilter treats the boundary slightly differently; compare away from the edges.
    inner = (slice(2, -2),) * 3 if method == "cubic" else (slice(None),) * 3
    np.testing.assert_allclose(ours[inner], ref[inner], atol=tol * 100.0 if method == "cubic" else tol)


def test_linear_interpolation_is_exact_for_linear_ramps() -> None:
    z, y, x = np.meshgrid(np.arange(6.0), np.arange(7.0), np.arange(8.0), indexing="ij")
    ramp = 3.0 * z - 2.0 * y + 0.5 * x
    settings = IbsiSettings(name="t", new_spacing=(1.5, 1.5, 1.5), ct=False, round_intensities=False)
    image, _, _ = resample(torch.from_numpy(ramp)[None], torch.ones(1, 6, 7, 8, dtype=torch.bool),
                           (1.0, 1.0, 1.0), settings)
    _, pz = aligned_grid(6, 1.0, 1.5)
    _, py = aligned_grid(7, 1.0, 1.5)
    _, px = aligned_grid(8, 1.0, 1.5)
    gz, gy, gx = torch.meshgrid(pz.clamp(0, 5), py.clamp(0, 6), px.clamp(0, 7), indexing="ij")
    np.testing.assert_allclose(image[0].numpy(), (3.0 * gz - 2.0 * gy + 0.5 * gx).numpy(), atol=1e-9)


@pytest.mark.parametrize(("new_spacing", "boundary"), [(2.0, 0.5), (0.5, 0.25)])
def test_resample_rounds_ct_and_thresholds_mask_at_half(new_spacing: float, boundary: float) -> None:
    # Mask 0 1 1 1 on a 1 mm grid. At 2 mm the aligned grid puts a centre exactly halfway between the 0 and the
    # first 1 voxel (partial volume 0.5 → kept, IBSI threshold is inclusive); at 0.5 mm centres fall a quarter
    # into a voxel (0.25 → dropped, 0.75 → kept).
    mask = torch.tensor([0, 1, 1, 1], dtype=torch.bool).view(1, 1, 1, 4).expand(1, 2, 2, 4)
    image = torch.tensor([10.2, 20.7, 30.0, 40.4], dtype=torch.float64).view(1, 1, 1, 4).expand(1, 2, 2, 4)
    settings = IbsiSettings(name="t", new_spacing=(None, None, new_spacing))
    out_image, out_mask, spacing = resample(image, mask, (1.0, 1.0, 1.0), settings)
    _, positions = aligned_grid(4, 1.0, new_spacing)
    frac = np.interp(positions.numpy(), [0, 1, 2, 3], [0, 1, 1, 1])
    assert spacing == (1.0, 1.0, new_spacing)
    assert out_mask[0, 0, 0].tolist() == (frac >= 0.5).tolist()
    assert bool((np.abs(frac - boundary) < 1e-12).any())  # the boundary case is really exercised
    assert torch.equal(out_image, out_image.round())
    assert not torch.equal(image.round(), image)  # ... and rounding really had something to do


@pytest.mark.parametrize(
    ("reseg_range", "sigma", "expected"),
    [
        ((-500.0, 400.0), None, [False, True, True, True, True, True, True, True, True, False]),
        ((None, 0.0), None, [True, True, True, True, True, True, False, False, False, False]),
        ((None, None), 1.0, [False, False, True, True, True, True, True, True, False, False]),
    ],
)
def test_resegment(reseg_range: tuple[float | None, float | None], sigma: float | None, expected: list[bool]) -> None:
    values = torch.tensor([-900.0, -500.0, -100.0, -50.0, -10.0, 0.0, 10.0, 50.0, 400.0, 900.0], dtype=torch.float64)
    image = values.view(1, 1, 1, -1)
    mask = torch.ones_like(image, dtype=torch.bool)
    settings = IbsiSettings(name="t", reseg_range=reseg_range, reseg_sigma=sigma)
    out = resegment(image, mask, settings)
    if sigma is not None:  # reference from numpy: mean ± 1 population sd
        mean, sd = values.numpy().mean(), values.numpy().std()
        expected = list((values.numpy() >= mean - sd) & (values.numpy() <= mean + sd))
    assert out.flatten().tolist() == expected


def test_fixed_bin_size_starts_at_range_lower_bound() -> None:
    image = torch.tensor([-500.0, -475.1, -475.0, 0.0, 377.0, 400.0], dtype=torch.float64).view(1, 1, 1, -1)
    mask = torch.ones_like(image, dtype=torch.bool)
    levels, n = discretise(image, mask, IBSI_CONFIGS["A"])  # FBS 25 HU from -500
    assert levels.flatten().tolist() == [1, 1, 2, 21, 36, 37]
    assert n == 37


def test_fixed_bin_number_maps_max_to_last_bin_per_voi() -> None:
    image = torch.stack([torch.linspace(0.0, 1.0, 33), torch.linspace(-100.0, 500.0, 33)]).view(2, 1, 1, 33).double()
    mask = torch.ones_like(image, dtype=torch.bool)
    levels, n = discretise(image, mask, IBSI_CONFIGS["D"])
    assert n == 32
    for b in range(2):
        assert levels[b].min().item() == 1 and levels[b].max().item() == 32
        ref = np.minimum(np.floor(32 * np.linspace(0, 1, 33)) + 1, 32)
        assert levels[b].flatten().tolist() == ref.astype(int).tolist()
    outside = discretise(image, torch.zeros_like(mask).index_fill_(3, torch.tensor([0]), True), IBSI_CONFIGS["D"])[0]
    assert int(outside[:, :, :, 1:].abs().sum()) == 0  # 0 outside the ROI


def _ct_voi(value: float = 40.0) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.full((1, 4, 5, 6), -800.0, dtype=torch.float64)
    mask = torch.zeros_like(image, dtype=torch.bool)
    mask[:, 1:3, 1:4, 1:5] = True
    image[mask] = value
    return image, mask


@pytest.mark.parametrize(
    ("mutate", "error", "fragment"),
    [
        (lambda im, m: (im, m & False), EmptyMaskError, "contain no voxel"),
        (lambda im, m: (im, m[:, :3]), GeometryMismatchError, "same shape"),
        (lambda im, m: (im.masked_fill(m, -2000.0), m), MaskOutsideImageError, "-2000"),
        (lambda im, m: (im.masked_fill(m, float("nan")), m), MaskOutsideImageError, "NaN"),
        (lambda im, m: (im.masked_fill(m, 9000.0), m), NonCTIntensityError, "9000"),
        (lambda im, m: (im.masked_fill(m, 0.4), m), NonCTIntensityError, "normalised"),
        (lambda im, m: (im.masked_fill(m, 800.0), m), EmptyMaskError, "re-segmentation"),
    ],
)
def test_bad_input_raises_typed_error_with_value(mutate, error: type[Exception], fragment: str) -> None:  # type: ignore[no-untyped-def]
    image, mask = mutate(*_ct_voi())
    with pytest.raises(error, match=fragment):
        preprocess(image, mask, (1.0, 1.0, 1.0), IBSI_CONFIGS["A"])


def test_bad_spacing_and_settings() -> None:
    image, mask = _ct_voi()
    with pytest.raises(GeometryMismatchError, match="spacing"):
        preprocess(image, mask, (1.0, 0.0, 1.0), IBSI_CONFIGS["A"])
    with pytest.raises(SettingsError, match="bin_width"):
        IbsiSettings(name="x", discretisation="fbs", bin_width=None)
    with pytest.raises(SettingsError, match="reseg_range"):
        IbsiSettings(name="x", reseg_range=(400.0, -500.0))
    with pytest.raises(SettingsError, match="texture_dims"):
        IbsiSettings(name="x", texture_dims=("4D",))  # type: ignore[arg-type]


def test_roi_vanishing_on_coarse_grid_is_reported() -> None:
    image = torch.zeros(1, 8, 8, 8, dtype=torch.float64)
    mask = torch.zeros_like(image, dtype=torch.bool)
    mask[0, 3, 3, 3] = True  # one 0.5 mm voxel: gone on a 4 mm grid
    with pytest.raises(EmptyMaskError, match="vanished"):
        preprocess(image, mask, (0.5, 0.5, 0.5), IbsiSettings(name="t", new_spacing=(4.0, 4.0, 4.0)))


def test_preprocess_batch_equals_single_vois() -> None:
    rng = torch.Generator().manual_seed(3)
    image = torch.randint(-300, 300, (2, 10, 12, 12), generator=rng).double()
    mask = torch.zeros_like(image, dtype=torch.bool)
    mask[0, 2:8, 3:9, 2:10] = True
    mask[1, 4:9, 1:6, 5:11] = True
    settings = IBSI_CONFIGS["E"]
    both = preprocess(image, mask, (1.5, 0.8, 0.8), settings)
    for b in range(2):
        one = preprocess(image[b : b + 1], mask[b : b + 1], (1.5, 0.8, 0.8), settings)
        assert torch.equal(both.levels[b], one.levels[0])
        assert torch.equal(both.int_mask[b], one.int_mask[0])
        np.testing.assert_allclose(both.image[b].numpy(), one.image[0].numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_preprocess_cuda_matches_cpu() -> None:
    image, mask = _ct_voi()
    cpu = preprocess(image, mask, (1.0, 1.0, 1.0), IBSI_CONFIGS["C"])
    gpu = preprocess(image.cuda(), mask.cuda(), (1.0, 1.0, 1.0), IBSI_CONFIGS["C"])
    assert torch.equal(cpu.levels, gpu.levels.cpu())
