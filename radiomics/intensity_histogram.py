"""Intensity histogram features (IBSI 3.4, ``ih_*``), batched over VOIs.

Computed from discretised grey levels ``1..N_g`` of the intensity mask. The histogram gradient uses
central differences inside and one-sided differences at the first and last bin (IBSI 3.4.21–24).
"""

from __future__ import annotations

import torch

from radiomics.intensity_stats import dispersion_features


def grey_level_histogram(levels: torch.Tensor, mask: torch.Tensor, n_levels: int) -> torch.Tensor:
    """Voxel counts per grey level.

    Parameters
    ----------
    levels : Tensor
        ``(B, Z, Y, X)`` int64 grey levels ``1..n_levels`` inside ``mask``.
    mask : Tensor
        ``(B, Z, Y, X)`` bool.
    n_levels : int
        Number of grey levels ``N_g``.

    Returns
    -------
    Tensor
        ``(B, N_g)`` float64 counts; column ``i`` counts level ``i + 1``.
    """
    batch = levels.shape[0]
    idx = torch.where(mask, levels - 1, n_levels).flatten(1).clamp(0, n_levels)
    counts = torch.zeros(batch, n_levels + 1, dtype=torch.float64, device=levels.device)
    counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
    return counts[:, :n_levels]


def intensity_histogram(levels: torch.Tensor, mask: torch.Tensor, n_levels: int,
                        voi_levels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """IBSI intensity histogram features (``ih_*``, 23 features).

    Parameters
    ----------
    levels : Tensor
        ``(B, Z, Y, X)`` int64 grey levels ``1..n_levels`` inside ``mask`` (0 outside).
    mask : Tensor
        ``(B, Z, Y, X)`` bool intensity mask.
    n_levels : int
        Number of grey levels ``N_g`` (bins of the histogram, including empty ones).
    voi_levels : Tensor, optional
        ``(B,)`` int64 per-VOI ``N_g`` when it differs between VOIs (fixed bin size: each VOI's highest
        level); the histogram gradient then ends at each VOI's own last bin. Default: ``n_levels`` for all.

    Returns
    -------
    dict of str to Tensor
        IBSI tags to ``(B,)`` float64 values. ``ih_mode``, ``ih_max_grad_g`` and ``ih_min_grad_g`` are grey
        levels (the lowest one on ties).
    """
    values = levels.double()
    out = dispersion_features(values, mask, "ih")
    hist = grey_level_histogram(levels, mask, n_levels)
    prob = hist / hist.sum(1, keepdim=True)
    grey = torch.arange(1, n_levels + 1, dtype=torch.float64, device=levels.device)
    out["ih_mode"] = grey[hist.argmax(1)]
    logp = torch.where(prob > 0, torch.log2(prob.clamp(min=1e-300)), torch.zeros_like(prob))
    out["ih_entropy"] = -(prob * logp).sum(1)
    out["ih_uniformity"] = (prob**2).sum(1)
    if voi_levels is None:
        voi_levels = torch.full((levels.shape[0],), n_levels, dtype=torch.int64, device=levels.device)
    grad = _histogram_gradient(hist, voi_levels)
    inside = torch.arange(n_levels, device=levels.device)[None, :] < voi_levels[:, None]
    high = torch.where(inside, grad, -torch.inf)
    low = torch.where(inside, grad, torch.inf)
    out["ih_max_grad"] = high.max(1).values
    out["ih_max_grad_g"] = grey[high.argmax(1)]
    out["ih_min_grad"] = low.min(1).values
    out["ih_min_grad_g"] = grey[low.argmin(1)]
    return out


def _histogram_gradient(hist: torch.Tensor, voi_levels: torch.Tensor) -> torch.Tensor:
    """``(B, N_g)`` histogram gradient: one-sided at the first and at each VOI's last bin, central inside."""
    if hist.shape[1] == 1:
        return torch.zeros_like(hist)
    padded = torch.nn.functional.pad(hist, (1, 1))
    grad = (padded[:, 2:] - padded[:, :-2]) / 2.0
    grad[:, 0] = hist[:, 1] - hist[:, 0]
    last = (voi_levels - 1).clamp(min=1, max=hist.shape[1] - 1)[:, None]
    grad.scatter_(1, last, hist.gather(1, last) - hist.gather(1, last - 1))
    return grad
