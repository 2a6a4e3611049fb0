"""Intensity-volume histogram features (IBSI 3.5, ``ivh_*``), batched over VOIs.

The IVH gives, for each intensity ``i``, the fraction ``ν(i)`` of the ROI volume with intensity ``>= i``,
and ``γ(i) = (i - X_min) / (X_max - X_min)`` the intensity fraction. Three intensity treatments
(IBSI "calibrated discrete", "calibrated continuous" and "arbitrary units" cases):

* ``("none", None)``: the (integer) intensities themselves, step 1; ``X_min``/``X_max`` are the
  re-segmentation bounds where set, else the ROI minimum/maximum;
* ``("fbs", w)``: fixed bin size ``w`` from the lower re-segmentation bound, each voxel represented by its
  bin centre ``X_gl,min + (k - 0.5) w``, step ``w``;
* ``("fbn", n)``: ``n`` bins between the ROI minimum and maximum, intensities are the bin numbers ``1..n``.

``V_x`` is ``ν`` at the smallest intensity with ``γ >= x``; ``I_x`` is the smallest intensity with
``ν <= x``.
"""

from __future__ import annotations

import torch

from radiomics.preprocess import IbsiSettings

_BIG = 1e300


def _ivh_values(image: torch.Tensor, mask: torch.Tensor, settings: IbsiSettings
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Per-voxel IVH intensities and per-VOI ``(X_min, X_max)`` with the grid step."""
    kind, param = settings.ivh
    roi_min = torch.where(mask, image, _BIG).amin((1, 2, 3))
    roi_max = torch.where(mask, image, -_BIG).amax((1, 2, 3))
    low, high = settings.reseg_range
    if kind == "fbn":
        n_bins = int(param or 1000)
        width = (roi_max - roi_min).clamp(min=1e-12).view(-1, 1, 1, 1)
        levels = (torch.floor(n_bins * (image - roi_min.view(-1, 1, 1, 1)) / width) + 1).clamp(1, n_bins)
        ones = torch.ones_like(roi_min)
        return levels, ones, ones * n_bins, 1.0
    if kind == "fbs":
        width_b = float(param or 1.0)
        floor_value = roi_min if low is None else torch.full_like(roi_min, low)
        top = roi_max if high is None else torch.full_like(roi_max, high)
        k = torch.floor((image - floor_value.view(-1, 1, 1, 1)) / width_b) + 1
        centres = floor_value.view(-1, 1, 1, 1) + (k - 0.5) * width_b
        k_top = torch.floor((top - floor_value) / width_b) + 1
        return centres, floor_value + 0.5 * width_b, floor_value + (k_top - 0.5) * width_b, width_b
    x_min = roi_min if low is None else torch.full_like(roi_min, low)
    x_max = roi_max if high is None else torch.full_like(roi_max, high)
    return image, x_min, x_max, 1.0


def intensity_volume_histogram(image: torch.Tensor, mask: torch.Tensor, settings: IbsiSettings
                               ) -> dict[str, torch.Tensor]:
    """IBSI intensity-volume histogram features.

    Parameters
    ----------
    image : Tensor
        ``(B, Z, Y, X)`` float64 intensities (HU for CT; grey levels for the digital phantom).
    mask : Tensor
        ``(B, Z, Y, X)`` bool intensity mask.
    settings : IbsiSettings
        ``settings.ivh`` selects the intensity treatment, ``settings.reseg_range`` the bounds.

    Returns
    -------
    dict of str to Tensor
        ``ivh_v10, ivh_v90, ivh_i10, ivh_i90, ivh_diff_v10_v90, ivh_diff_i10_i90, ivh_auc``, each ``(B,)``
        float64 (``V`` are volume fractions, ``I`` intensities in the IVH's units).
    """
    values, x_min, x_max, step = _ivh_values(image.double(), mask, settings)
    batch = values.shape[0]
    flat = torch.where(mask, values, torch.inf).flatten(1)
    ordered = flat.sort(1).values.contiguous()
    count = mask.flatten(1).sum(1).double()
    n_steps = torch.round((x_max - x_min) / step).long() + 1
    width = int(n_steps.max().item()) + 1
    j = torch.arange(width, device=values.device, dtype=torch.float64).expand(batch, width)
    grid = x_min[:, None] + j * step
    valid = j < n_steps[:, None]
    # ν(i): fraction with value >= i; a small tolerance absorbs float noise of bin centres.
    below = torch.searchsorted(ordered, (grid - 1e-9 * step).contiguous(), right=False).double()
    nu = 1.0 - below / count[:, None]
    span = (x_max - x_min).clamp(min=1e-12)
    gamma = (grid - x_min[:, None]) / span[:, None]
    out: dict[str, torch.Tensor] = {}
    for x in (10, 90):
        frac = x / 100.0
        first = torch.where(valid & (gamma >= frac - 1e-12), j, torch.inf).amin(1).long().clamp(max=width - 1)
        out[f"ivh_v{x}"] = nu.gather(1, first[:, None]).squeeze(1)
        first_i = torch.where(nu <= frac + 1e-12, j, torch.inf).amin(1).long().clamp(max=width - 1)
        out[f"ivh_i{x}"] = grid.gather(1, first_i[:, None]).squeeze(1)
    out["ivh_diff_v10_v90"] = out["ivh_v10"] - out["ivh_v90"]
    out["ivh_diff_i10_i90"] = out["ivh_i10"] - out["ivh_i90"]
    # Padding columns (VOIs with fewer grid steps) sit at γ = 1: zero-width segments add nothing.
    gamma_v = torch.where(valid, gamma, 1.0)
    out["ivh_auc"] = torch.trapezoid(nu, gamma_v, dim=1)
    return out
