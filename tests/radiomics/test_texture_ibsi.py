"""The six texture families against the IBSI-1 digital phantom consensus values (Zwanenburg et al. 2020).

The phantom needs no discretisation: its integer intensities are the grey levels and N_g is the largest
level inside the ROI (6). A value matches when it lies within the published tolerance plus half a unit
in the third significant digit (the references are published to three significant digits).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from radiomics.texture import (
    glcm_features,
    gldzm_features,
    glrlm_features,
    glszm_features,
    ngldm_features,
    ngtdm_features,
    texture_features,
)

IBSI = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ibsi"
PHANTOM = IBSI / "ibsi_1_digital_phantom" / "nifti"
REFERENCE = IBSI / "reference_values" / "ibsi_1_dig_phantom.csv"
FAMILIES = {"cm": glcm_features, "rlm": glrlm_features, "szm": glszm_features, "dzm": gldzm_features,
            "ngt": ngtdm_features, "ngl": ngldm_features}  # fmt: skip
#: Reference tags per family and dimensionality (2D includes 2.5D); the tests require all of them matched.
EXPECTED = {("cm", "2D"): 100, ("cm", "3D"): 50, ("rlm", "2D"): 64, ("rlm", "3D"): 32, ("szm", "2D"): 32,
            ("szm", "3D"): 16, ("dzm", "2D"): 32, ("dzm", "3D"): 16, ("ngt", "2D"): 10, ("ngt", "3D"): 5,
            ("ngl", "2D"): 34, ("ngl", "3D"): 17}  # fmt: skip


def _require_ibsi() -> None:
    if not (PHANTOM / "image" / "phantom.nii.gz").exists() or not REFERENCE.exists():
        message = f"IBSI digital phantom not found under {IBSI.resolve()}; it ships in ../shared/data/ibsi"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def phantom() -> tuple[torch.Tensor, torch.Tensor]:
    """Levels and mask of the digital phantom as ``(1, Z, Y, X)`` tensors."""
    _require_ibsi()
    import nibabel as nib

    image = np.asarray(nib.load(PHANTOM / "image" / "phantom.nii.gz").dataobj).transpose(2, 1, 0)
    mask = np.asarray(nib.load(PHANTOM / "mask" / "mask.nii.gz").dataobj).transpose(2, 1, 0) > 0
    return torch.from_numpy(image.astype(np.int64))[None], torch.from_numpy(mask)[None]


@pytest.fixture(scope="module")
def reference() -> dict[str, tuple[float, float]]:
    """IBSI tag -> (reference value, tolerance)."""
    _require_ibsi()
    out = {}
    for line in REFERENCE.read_text().splitlines()[1:]:
        value, tolerance, tag = line.split(";")
        if value:
            out[tag] = (float(value), float(tolerance or 0.0))
    return out


def matches(value: float, ref: float, tolerance: float) -> bool:
    """Within tolerance, allowing for the three significant digits the references are rounded to."""
    rounding = 0.0 if ref == 0 else 0.5 * 10 ** (math.floor(math.log10(abs(ref))) - 2)
    return abs(value - ref) <= (tolerance + rounding) * (1 + 1e-9) + 1e-12


def n_levels_of(levels: torch.Tensor, mask: torch.Tensor) -> int:
    return int(levels[mask].max())


def test_matches_rule_rejects_a_third_digit_error() -> None:
    assert matches(0.8514, 0.851, 0.0)
    assert not matches(0.852, 0.851, 0.0)
    assert not matches(-0.0122, -0.0121, 0.0)
    assert matches(1490.4, 1490.0, 0.0) and not matches(1496.0, 1490.0, 0.0)


@pytest.mark.parametrize(("family", "dims"), sorted(EXPECTED))
def test_family_matches_ibsi_digital_phantom(phantom, reference, family: str, dims: str) -> None:
    levels, mask = phantom
    out = FAMILIES[family](levels, mask, n_levels_of(levels, mask), dims=dims)
    suffixes = ("_2D", "_2_5D") if dims == "2D" else ("_3D",)
    wanted = {t for t in reference if t.startswith(family + "_") and any(s in t for s in suffixes)}
    assert set(out) == wanted
    missed = {t: (float(out[t][0]), reference[t][0]) for t in wanted if not matches(float(out[t][0]), *reference[t])}
    assert len(wanted) - len(missed) == EXPECTED[(family, dims)], missed


@pytest.mark.parametrize("dims", ["2D", "3D"])
def test_texture_features_is_the_union_of_the_families(phantom, dims: str) -> None:
    levels, mask = phantom
    n_levels = n_levels_of(levels, mask)
    together = texture_features(levels, mask, n_levels, dims=dims, spacing=(2.0, 2.0, 2.0))
    separate: dict[str, torch.Tensor] = {}
    for fn in FAMILIES.values():
        separate.update(fn(levels, mask, n_levels, dims=dims))
    assert together.keys() == separate.keys()
    assert len(together) == (272 if dims == "2D" else 136)
    for tag, value in together.items():
        assert value.dtype == torch.float64 and value.shape == (1,)
        torch.testing.assert_close(value, separate[tag], equal_nan=True)


def test_phantom_inside_a_padded_batch_still_matches(phantom, reference) -> None:
    """The phantom placed at an offset in a larger padded batch, beside a random VOI, gives the same values."""
    levels, mask = phantom
    _, Z, Y, X = levels.shape
    gen = torch.Generator().manual_seed(5)
    big_levels = torch.randint(1, 7, (2, Z + 3, Y + 4, X + 2), generator=gen)
    big_mask = torch.rand((2, Z + 3, Y + 4, X + 2), generator=gen) > 0.3
    big_mask[1] = False
    big_levels[1, 2 : 2 + Z, 1 : 1 + Y, 2 : 2 + X] = levels[0]
    big_mask[1, 2 : 2 + Z, 1 : 1 + Y, 2 : 2 + X] = mask[0]
    for dims in ("2D", "3D"):
        out = texture_features(big_levels, big_mask, 6, dims=dims)
        assert all(matches(float(v[1]), *reference[t]) for t, v in out.items())
