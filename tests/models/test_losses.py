"""Losses against independent references: lifelines' Cox fit and torch/numpy cross-entropy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter

from models.exceptions import ModelInputError
from models.losses import cox_partial_nll, masked_bce


def _survival(seed: int, n: int = 80) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    time = rng.exponential(np.exp(-0.7 * x)) * 100.0  # continuous: no ties
    event = rng.random(n) < 0.7
    return pd.DataFrame({"x": x, "time": time, "event": event.astype(int)})


@pytest.mark.parametrize("seed", [0, 1])
def test_cox_nll_matches_lifelines_log_likelihood(seed: int) -> None:
    df = _survival(seed)
    cph = CoxPHFitter().fit(df, duration_col="time", event_col="event")
    beta = float(cph.params_["x"])
    # lifelines centres covariates; the partial likelihood is invariant to that shift
    risk = torch.tensor(beta * df["x"].to_numpy(), dtype=torch.float64)
    nll = cox_partial_nll(risk, torch.tensor(df["time"].to_numpy()), torch.tensor(df["event"].to_numpy()))
    assert float(nll) * df["event"].sum() == pytest.approx(-cph.log_likelihood_, rel=1e-6)


def test_cox_gradient_vanishes_at_the_lifelines_estimate() -> None:
    df = _survival(2)
    beta_hat = float(CoxPHFitter().fit(df, duration_col="time", event_col="event").params_["x"])
    beta = torch.tensor(beta_hat, dtype=torch.float64, requires_grad=True)
    x = torch.tensor(df["x"].to_numpy())
    cox_partial_nll(beta * x, torch.tensor(df["time"].to_numpy()), torch.tensor(df["event"].to_numpy())).backward()
    assert beta.grad is not None and abs(float(beta.grad)) < 1e-4


def test_cox_breslow_ties_by_hand() -> None:
    # times 1, 1, 2; events at both t=1; risk sets {0,1,2} for both: Breslow
    risk = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    nll = cox_partial_nll(risk, torch.tensor([1.0, 1.0, 2.0]), torch.tensor([1, 1, 0]))
    log_den = math.log(sum(math.exp(r) for r in [0.3, -0.2, 0.5]))
    assert float(nll) == pytest.approx(-((0.3 - log_den) + (-0.2 - log_den)) / 2)


@pytest.mark.parametrize("event", [[0, 0, 0], []])
def test_cox_without_events_is_zero_and_differentiable(event: list[int]) -> None:
    risk = torch.zeros(len(event), requires_grad=True)
    loss = cox_partial_nll(risk, torch.arange(len(event), dtype=torch.float32), torch.tensor(event))
    loss.backward()
    assert float(loss) == 0.0 and risk.grad is not None


def test_masked_bce_equals_plain_bce_on_the_mask() -> None:
    logits = torch.tensor([0.2, -1.0, 3.0, 0.5])
    targets = torch.tensor([1.0, float("nan"), 0.0, float("nan")])
    mask = ~torch.isnan(targets)
    expected = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits[mask]), targets[mask])
    torch.testing.assert_close(masked_bce(logits, targets, mask), expected)


def test_masked_bce_with_nothing_defined_is_zero() -> None:
    logits = torch.tensor([0.2, -1.0], requires_grad=True)
    loss = masked_bce(logits, torch.full((2,), float("nan")), torch.zeros(2, dtype=torch.bool))
    loss.backward()
    assert float(loss) == 0.0 and torch.isfinite(logits.grad).all()  # type: ignore[arg-type]


def test_shape_mismatch_is_reported() -> None:
    with pytest.raises(ModelInputError, match="shapes"):
        cox_partial_nll(torch.zeros(3), torch.zeros(2), torch.zeros(3))
