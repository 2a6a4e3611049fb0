"""Batching, devices, degenerate VOIs and input errors of :func:`radiomics.texture.texture_features`."""

from __future__ import annotations

import pytest
import torch

from radiomics.exceptions import GeometryMismatchError, RadiomicsError, SettingsError
from radiomics.texture import gldzm_features, texture_features

N_LEVELS = 8
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
    ),
]


def random_voi(gen: torch.Generator, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A blob-shaped mask with smoothly varying levels, so that runs and zones have various lengths."""
    Z, Y, X = shape
    zz, yy, xx = torch.meshgrid(torch.arange(Z), torch.arange(Y), torch.arange(X), indexing="ij")
    centre = torch.tensor([Z, Y, X], dtype=torch.float64) / 2
    r2 = ((zz - centre[0]) / Z) ** 2 + ((yy - centre[1]) / Y) ** 2 + ((xx - centre[2]) / X) ** 2
    mask = (r2 < 0.22) & (torch.rand(shape, generator=gen) > 0.05)
    smooth = torch.nn.functional.avg_pool3d(torch.rand((1, 1, *shape), generator=gen), (1, 3, 3), 1, (0, 1, 1))[0, 0]
    levels = (smooth - smooth.min()) / (smooth.max() - smooth.min()) * (N_LEVELS - 1)
    return levels.round().long() + 1, mask


def pad_batch(vois: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad VOIs of different shapes into one ``(B, Z, Y, X)`` batch (origin corner aligned)."""
    shape = [max(v[0].shape[k] for v in vois) for k in range(3)]
    levels = torch.zeros((len(vois), *shape), dtype=torch.int64)
    mask = torch.zeros((len(vois), *shape), dtype=torch.bool)
    for b, (lv, mk) in enumerate(vois):
        Z, Y, X = lv.shape
        levels[b, :Z, :Y, :X] = lv
        mask[b, :Z, :Y, :X] = mk
    return levels, mask


@pytest.fixture(scope="module")
def vois() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(2026)
    shapes = [(5, 9, 7), (3, 12, 12), (8, 6, 10), (1, 5, 5)]
    out = [random_voi(gen, s) for s in shapes]
    single = torch.zeros((2, 3, 3), dtype=torch.bool)
    single[1, 1, 1] = True  # one voxel: no GLCM pair, no NGTDM neighbourhood
    out.append((torch.full((2, 3, 3), 4, dtype=torch.int64), single))
    out.append((torch.ones((2, 2, 2), dtype=torch.int64), torch.zeros((2, 2, 2), dtype=torch.bool)))  # empty VOI
    return out


@pytest.mark.parametrize("dims", ["2D", "3D"])
def test_features_of_a_voi_alone_equal_those_in_a_padded_batch(vois, dims: str) -> None:
    levels, mask = pad_batch(vois)
    batch = texture_features(levels, mask, N_LEVELS, dims=dims)
    for b, (lv, mk) in enumerate(vois):
        alone = texture_features(lv[None], mk[None], N_LEVELS, dims=dims)
        for tag, value in batch.items():
            torch.testing.assert_close(value[b : b + 1], alone[tag], equal_nan=True, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dims", ["2D", "3D"])
def test_per_voi_n_levels_equal_separate_calls(vois, dims: str) -> None:
    """One call with each VOI's own N_g (fixed bin size) gives what a call per VOI with its N_g gives."""
    levels, mask = pad_batch(vois)
    n_levels = torch.tensor([N_LEVELS, N_LEVELS + 5, N_LEVELS + 1, 12, 4, 1])
    batch = texture_features(levels, mask, n_levels, dims=dims)
    for b, (lv, mk) in enumerate(vois):
        alone = texture_features(lv[None], mk[None], int(n_levels[b]), dims=dims)
        for tag, value in batch.items():
            torch.testing.assert_close(value[b : b + 1], alone[tag], equal_nan=True, rtol=1e-12, atol=1e-12)
    assert (
        batch[f"cm_inv_diff_norm_{dims}_avg"][1]
        != texture_features(levels[1:2], mask[1:2], N_LEVELS, dims=dims)[f"cm_inv_diff_norm_{dims}_avg"][0]
    )


@pytest.mark.parametrize(
    ("n_levels", "says"),
    [
        (torch.tensor([8, 8]), "shape (6,)"),
        (torch.full((6,), 8.0), "torch.float32"),
        (torch.tensor([8, 8, 8, 8, 8, 0]), "must be positive"),
        (torch.tensor([8, 8, 8, 8, 3, 8]), "VOI 4 reached 4 > n_levels[4] = 3"),
    ],
)
def test_bad_per_voi_n_levels_is_refused(vois, n_levels: torch.Tensor, says: str) -> None:
    levels, mask = pad_batch(vois)
    with pytest.raises(RadiomicsError) as info:
        texture_features(levels, mask, n_levels, dims="3D")
    assert says in str(info.value)


@pytest.mark.parametrize("dims", ["2D", "3D"])
def test_degenerate_vois_give_nan_only_where_undefined(vois, dims: str) -> None:
    levels, mask = pad_batch(vois)
    out = texture_features(levels, mask, N_LEVELS, dims=dims)
    suffix = "2D" if dims == "2D" else "3D"
    ordinary, single, empty = slice(0, 3), 4, 5
    for tag, value in out.items():
        assert torch.isnan(value[empty]), tag
        assert torch.isfinite(value[ordinary]).all(), tag
    assert torch.isnan(out[f"cm_contrast_{suffix}_avg"][single])
    assert torch.isnan(out[f"ngt_strength_{suffix}"][single])
    assert out[f"ngl_dc_perc_{suffix}"][single] == 1.0 and out[f"szm_sze_{suffix}"][single] == 1.0
    assert out[f"rlm_r_perc_{suffix}_comb"][single] == 1.0 and out[f"dzm_sde_{suffix}"][single] == 1.0


@pytest.mark.parametrize("device", DEVICES)
def test_outputs_stay_on_the_input_device_as_float64(vois, device: str) -> None:
    levels, mask = pad_batch(vois[:3])
    cpu = texture_features(levels, mask, N_LEVELS, dims="3D")
    out = texture_features(levels.to(device), mask.to(device), N_LEVELS, dims="3D")
    for tag, value in out.items():
        assert value.device.type == device and value.dtype == torch.float64 and value.shape == (3,)
        torch.testing.assert_close(value.cpu(), cpu[tag], rtol=1e-9, atol=1e-12)


def test_a_texture_that_is_rotated_in_plane_keeps_its_2d_features(vois) -> None:
    """Rotation by 90 degrees in-plane maps the four 2D directions onto each other: avg and comb are invariant."""
    lv, mk = vois[0]
    straight = texture_features(lv[None], mk[None], N_LEVELS, dims="2D")
    rotated = texture_features(lv.rot90(1, (1, 2))[None], mk.rot90(1, (1, 2))[None], N_LEVELS, dims="2D")
    for tag, value in straight.items():
        torch.testing.assert_close(rotated[tag], value, rtol=1e-10, atol=1e-12)
    permuted = texture_features(lv.permute(2, 1, 0)[None], mk.permute(2, 1, 0)[None], N_LEVELS, dims="3D")
    original = texture_features(lv[None], mk[None], N_LEVELS, dims="3D")
    for tag, value in original.items():
        torch.testing.assert_close(permuted[tag], value, rtol=1e-10, atol=1e-12)


def test_gldzm_morph_mask_only_changes_distances() -> None:
    lv, _ = random_voi(torch.Generator().manual_seed(7), (9, 11, 11))
    mk = torch.ones_like(lv, dtype=torch.bool)
    resegmented = mk & (lv != lv[mk].median())
    plain = gldzm_features(lv[None], resegmented[None], N_LEVELS, dims="3D")
    morph = gldzm_features(lv[None], resegmented[None], N_LEVELS, dims="3D", morph_mask=mk[None])
    assert torch.equal(plain["dzm_glnu_3D"], morph["dzm_glnu_3D"])
    assert morph["dzm_lde_3D"] > plain["dzm_lde_3D"]  # no border where re-segmentation removed voxels


def _bad(name: str):
    levels = torch.ones((1, 2, 3, 3), dtype=torch.int64)
    mask = torch.ones((1, 2, 3, 3), dtype=torch.bool)
    kwargs: dict = {"n_levels": 4, "dims": "3D"}
    if name == "dims":
        kwargs["dims"] = "2.5D"
    elif name == "n_levels":
        kwargs["n_levels"] = 0
    elif name == "shape":
        mask = mask[0]
    elif name == "dtype":
        levels = levels.float()
    elif name == "range":
        levels[0, 1, 1, 1] = 9
    elif name == "morph":
        kwargs["morph_mask"] = torch.zeros_like(mask)
    elif name == "spacing":
        kwargs["spacing"] = (1.0, 0.0, 1.0)
    return levels, mask, kwargs


@pytest.mark.parametrize(
    ("case", "error", "says"),
    [
        ("dims", SettingsError, "'2.5D'"),
        ("n_levels", SettingsError, "but was 0"),
        ("shape", GeometryMismatchError, "and (2, 3, 3)"),
        ("dtype", RadiomicsError, "torch.float32"),
        ("range", RadiomicsError, "ranged 1..9"),
        ("morph", GeometryMismatchError, "outside morph_mask"),
        ("spacing", GeometryMismatchError, "(1.0, 0.0, 1.0)"),
    ],
)
def test_bad_input_is_refused_with_the_value_seen(case: str, error: type[Exception], says: str) -> None:
    levels, mask, kwargs = _bad(case)
    n_levels = kwargs.pop("n_levels")
    with pytest.raises(error) as info:
        texture_features(levels, mask, n_levels, **kwargs)
    assert says in str(info.value)


@pytest.mark.parametrize("dims", ["2D", "3D"])
def test_sorting_and_dense_counting_agree(vois, dims: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large batches count matrix entries by sorting instead of dense bincounts; both must give the same."""
    import radiomics.texture._grid as grid_module
    import radiomics.texture.glcm as glcm_module

    levels, mask = pad_batch(vois)
    dense = texture_features(levels, mask, N_LEVELS, dims=dims)
    monkeypatch.setattr(grid_module, "dense_is_cheaper", lambda space, n_keys: False)
    monkeypatch.setattr(glcm_module, "dense_is_cheaper", lambda space, n_keys: False)
    sorted_ = texture_features(levels, mask, N_LEVELS, dims=dims)
    for tag, value in dense.items():
        torch.testing.assert_close(sorted_[tag], value, equal_nan=True, rtol=1e-12, atol=1e-12)
