"""The batched entry point: tags, batch invariance (per-VOI compaction), input forms and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from radiomics.exceptions import EmptyMaskError
from radiomics.extractor import extract_features, family_of
from radiomics.ibsi import read_reference
from radiomics.preprocess import IBSI_CONFIGS

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ibsi"


def _two_vois() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    image = torch.randint(-200, 200, (1, 14, 30, 30), generator=gen).double().expand(2, -1, -1, -1).clone()
    zz, yy, xx = torch.meshgrid(torch.arange(14.0), torch.arange(30.0), torch.arange(30.0), indexing="ij")
    ball = ((zz - 7) * 2) ** 2 + (yy - 15) ** 2 + (xx - 15) ** 2 <= 100
    mask = torch.stack([ball & (xx < 15), ball & (xx >= 15) & (yy < 18)])  # two sub-regions of one tumour
    return image, mask


@pytest.mark.parametrize("config", ["A", "C"])
def test_batch_equals_each_voi_alone(config: str) -> None:
    image, mask = _two_vois()
    spacing = (2.0, 1.0, 1.0)
    both = extract_features(image, mask, spacing, IBSI_CONFIGS[config])
    assert any(family_of(tag) == "GLCM" for tag in both)  # texture is part of the full set
    for b in range(2):
        one = extract_features(image[b], mask[b], spacing, IBSI_CONFIGS[config])  # (Z, Y, X) input
        assert set(one) == set(both)
        for tag, values in both.items():
            assert values.shape == (2,) and values.dtype == torch.float64
            assert values[b].item() == pytest.approx(one[tag][0].item(), rel=1e-9, abs=1e-12, nan_ok=True), tag


@pytest.mark.skipif(not (DATA / "reference_values").is_dir(), reason=f"IBSI data not found at {DATA}")
def test_tags_are_the_ibsi_reference_tags() -> None:
    image, mask = _two_vois()
    got = set(extract_features(image, mask, (2.0, 1.0, 1.0), IBSI_CONFIGS["C"]))
    refs = read_reference(DATA / "reference_values" / "ibsi_1_chest_config_c.csv")
    wanted = {r.tag for r in refs if r.value is not None and family_of(r.tag) != "diagnostics"}
    assert wanted <= got, sorted(wanted - got)


def test_unknown_family_and_empty_voi_in_batch() -> None:
    image, mask = _two_vois()
    with pytest.raises(ValueError, match="unknown feature families"):
        extract_features(image, mask, (2.0, 1.0, 1.0), IBSI_CONFIGS["C"], families=("shape",))
    mask[1] = False
    with pytest.raises(EmptyMaskError, match=r"\[1\]"):
        extract_features(image, mask, (2.0, 1.0, 1.0), IBSI_CONFIGS["C"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    image, mask = _two_vois()
    cpu = extract_features(image, mask, (2.0, 1.0, 1.0), IBSI_CONFIGS["E"])
    gpu = extract_features(image, mask, (2.0, 1.0, 1.0), IBSI_CONFIGS["E"], device="cuda")
    for tag, values in cpu.items():
        np.testing.assert_allclose(gpu[tag].cpu().numpy(), values.numpy(), rtol=1e-6, atol=1e-9, err_msg=tag)


@pytest.mark.parametrize("config", ["B", "C", "E"])
def test_roi_window_interpolation_equals_whole_image(config: str) -> None:
    # extract_features interpolates only around the ROIs; the values must be those of the whole-image grid.
    from radiomics.extractor import crop_to_roi, features_from_preprocessed
    from radiomics.preprocess import preprocess

    gen = torch.Generator().manual_seed(5)
    image = torch.randint(-400, 300, (1, 20, 48, 44), generator=gen).double()
    mask = torch.zeros_like(image, dtype=torch.bool)
    mask[0, 7:13, 20:33, 9:21] = True
    spacing = (2.5, 0.8, 0.8)
    families = ("morph", "loc", "stat", "ih", "ivh")  # texture sees the same levels; kept out for time
    windowed = extract_features(image, mask, spacing, IBSI_CONFIGS[config], families=families)
    pre = preprocess(image, mask, spacing, IBSI_CONFIGS[config])
    whole = features_from_preprocessed(crop_to_roi(pre), families)
    assert set(windowed) == set(whole)
    for tag in whole:
        assert windowed[tag].item() == pytest.approx(whole[tag].item(), rel=1e-9, abs=1e-9, nan_ok=True), tag
