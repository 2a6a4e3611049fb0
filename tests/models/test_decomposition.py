"""Level/slope/curvature decomposition against numpy's interpolating polynomial, and model shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.decomposition import UNIT_DAYS, DecompositionTransformer, divided_differences
from models.exceptions import ModelConfigError


def test_components_match_the_interpolating_parabola() -> None:
    rng = np.random.default_rng(0)
    days = np.array([-7.0, 64.0, 101.0])
    values = rng.normal(size=(3, 4))
    parts = dict((name, comp) for name, comp, _ in divided_differences(
        torch.tensor(values[None]), torch.tensor(days[None])))
    for g in range(4):
        a, b, c = np.polyfit(days / UNIT_DAYS, values[:, g], 2)  # exact through 3 points
        assert float(parts["curvature"][0, 0, g]) == pytest.approx(2 * a, rel=1e-9)
        assert float(parts["level"][0, 0, g]) == pytest.approx(np.polyval([a, b, c], days[0] / UNIT_DAYS))
        # slope over an interval = derivative of the parabola at its midpoint
        mid = (days[0] + days[1]) / 2 / UNIT_DAYS
        assert float(parts["slope"][0, 0, g]) == pytest.approx(2 * a * mid + b, rel=1e-9)


@pytest.mark.parametrize(
    ("t", "names"), [(1, ["level"]), (2, ["level", "slope"]), (3, ["level", "slope", "curvature"])]
)
def test_component_set_follows_the_mode(t: int, names: list[str]) -> None:
    model = DecompositionTransformer(5, t, [[0, 1], [2, 3, 4]], d_model=8, embed_dim=6)
    assert model.component_names == names
    emb, weights = model.forward_with_weights(torch.randn(4, t, 5), torch.tensor([[-7.0, 62.0, 104.0][:t]] * 4))
    assert emb.shape == (4, 6) and weights.shape == (4, len(names))
    torch.testing.assert_close(weights.sum(-1), torch.ones(4))


@pytest.mark.parametrize("groups", [[[0, 5]], [[]], []])
def test_bad_groups_are_rejected(groups: list[list[int]]) -> None:
    with pytest.raises(ModelConfigError, match="groups"):
        DecompositionTransformer(5, 3, groups)
