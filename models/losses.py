"""Losses of the multi-task network: Cox partial likelihood for PFS and a masked binary cross-entropy.

Both return 0 (still connected to the graph) for a batch with nothing to learn from — no event, or no
patient with a defined label — so that an empty or event-free Poisson batch of DP-SGD still yields a
valid (zero) per-sample gradient to which Opacus adds its noise.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional

from models.exceptions import ModelInputError


def _check_same_length(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len({s for s in shapes.values()}) != 1 or any(len(s) != 1 for s in shapes.values()):
        raise ModelInputError(f"expected 1-D tensors of one length, but got shapes {shapes}")


def cox_partial_nll(risk: Tensor, time: Tensor, event: Tensor) -> Tensor:
    """Negative Cox partial log-likelihood (Breslow ties), averaged over events.

    ``−(1/d) Σ_{i: event} [ r_i − log Σ_{j: t_j ≥ t_i} exp(r_j) ]`` with d the number of events
    (Cox 1972; Breslow 1974). The risk set is the batch, as in DeepSurv (Katzman et al. 2018).

    Parameters
    ----------
    risk : Tensor, shape (B,)
        Log relative hazard per patient.
    time : Tensor, shape (B,)
        PFS time in days.
    event : Tensor, shape (B,)
        1 for progression/death, 0 for censored.

    Returns
    -------
    Tensor, scalar
    """
    _check_same_length(risk=risk, time=time, event=event)
    at_risk = time.unsqueeze(0) >= time.unsqueeze(1)  # [i, j]: j still at risk at t_i
    log_denominator = torch.logsumexp(risk.unsqueeze(0).masked_fill(~at_risk, float("-inf")), dim=1)
    events = event.to(risk.dtype)
    return -((risk - log_denominator) * events).sum() / events.sum().clamp(min=1.0)


def masked_bce(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Binary cross-entropy with logits, averaged over entries where ``mask`` is true.

    Parameters
    ----------
    logits, targets : Tensor, shape (B,)
        ``targets`` may hold NaN where ``mask`` is false (undefined label).
    mask : Tensor, shape (B,), bool

    Returns
    -------
    Tensor, scalar
    """
    _check_same_length(logits=logits, targets=targets, mask=mask)
    weights = mask.to(logits.dtype)
    safe_targets = torch.where(mask, targets, torch.zeros_like(targets)).to(logits.dtype)
    losses = functional.binary_cross_entropy_with_logits(logits, safe_targets, reduction="none")
    return (losses * weights).sum() / weights.sum().clamp(min=1.0)
