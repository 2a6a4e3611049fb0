"""Intensity-based statistical features (IBSI 3.3, ``stat_*``), batched over VOIs.

All features are computed from the intensities of the ROI intensity mask, without discretisation.
Variance, skewness and kurtosis use population (``1/N``) moments; kurtosis is the excess kurtosis
(IBSI subtracts 3). Percentiles use linear interpolation between order statistics.
"""

from __future__ import annotations

import torch

_DIMS = (1, 2, 3)


def masked_quantiles(values: torch.Tensor, mask: torch.Tensor, q: list[float]) -> torch.Tensor:
    """Per-VOI quantiles of ``values`` inside ``mask``.

    Parameters
    ----------
    values : Tensor
        ``(B, ...)`` float64.
    mask : Tensor
        ``(B, ...)`` bool, at least one voxel per VOI.
    q : list of float
        Quantile levels in [0, 1].

    Returns
    -------
    Tensor
        ``(len(q), B)`` float64.
    """
    flat = torch.where(mask, values, torch.nan).flatten(1)
    return torch.nanquantile(flat, torch.tensor(q, dtype=flat.dtype, device=flat.device), dim=1)


def masked_moments(values: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Count, mean, population variance, skewness and excess kurtosis per VOI, each ``(B,)``."""
    weight = mask.to(values.dtype).flatten(1)
    flat = values.flatten(1) * weight
    count = weight.sum(1)
    mean = flat.sum(1) / count
    centred = (values.flatten(1) - mean[:, None]) * weight
    m2 = (centred**2).sum(1) / count
    m3 = (centred**3).sum(1) / count
    m4 = (centred**4).sum(1) / count
    safe = torch.where(m2 > 0, m2, torch.ones_like(m2))
    skew = torch.where(m2 > 0, m3 / safe**1.5, torch.zeros_like(m2))
    kurt = torch.where(m2 > 0, m4 / safe**2 - 3.0, torch.zeros_like(m2))
    return {"count": count, "mean": mean, "var": m2, "skew": skew, "kurt": kurt}


def dispersion_features(values: torch.Tensor, mask: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
    """Features shared by ``stat_*`` and ``ih_*``: moments, percentiles, deviations, dispersion.

    Parameters
    ----------
    values : Tensor
        ``(B, Z, Y, X)`` float64 intensities (``stat``) or grey levels (``ih``).
    mask : Tensor
        ``(B, Z, Y, X)`` bool intensity mask.
    prefix : str
        ``"stat"`` or ``"ih"``.

    Returns
    -------
    dict of str to Tensor
        ``{prefix}_mean, _var, _skew, _kurt, _median, _min, _p10, _p90, _max, _iqr, _range, _mad, _rmad,
        _medad, _cov, _qcod``, each ``(B,)`` float64.
    """
    moments = masked_moments(values, mask)
    p = masked_quantiles(values, mask, [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
    vmin, p10, p25, median, p75, p90, vmax = p
    weight = mask.to(values.dtype)
    count = moments["count"]
    mad = ((values - moments["mean"].view(-1, 1, 1, 1)).abs() * weight).sum(_DIMS) / count
    medad = ((values - median.view(-1, 1, 1, 1)).abs() * weight).sum(_DIMS) / count
    robust = mask & (values >= p10.view(-1, 1, 1, 1)) & (values <= p90.view(-1, 1, 1, 1))
    rweight = robust.to(values.dtype)
    rcount = rweight.sum(_DIMS).clamp(min=1)
    rmean = (values * rweight).sum(_DIMS) / rcount
    rmad = ((values - rmean.view(-1, 1, 1, 1)).abs() * rweight).sum(_DIMS) / rcount
    mean = moments["mean"]
    return {
        f"{prefix}_mean": mean,
        f"{prefix}_var": moments["var"],
        f"{prefix}_skew": moments["skew"],
        f"{prefix}_kurt": moments["kurt"],
        f"{prefix}_median": median,
        f"{prefix}_min": vmin,
        f"{prefix}_p10": p10,
        f"{prefix}_p90": p90,
        f"{prefix}_max": vmax,
        f"{prefix}_iqr": p75 - p25,
        f"{prefix}_range": vmax - vmin,
        f"{prefix}_mad": mad,
        f"{prefix}_rmad": rmad,
        f"{prefix}_medad": medad,
        f"{prefix}_cov": moments["var"].sqrt() / mean,
        f"{prefix}_qcod": (p75 - p25) / (p75 + p25),
    }


def intensity_statistics(image: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """IBSI intensity-based statistical features (``stat_*``, 18 features).

    Parameters
    ----------
    image : Tensor
        ``(B, Z, Y, X)`` float64 intensities (HU for CT).
    mask : Tensor
        ``(B, Z, Y, X)`` bool ROI intensity mask.

    Returns
    -------
    dict of str to Tensor
        IBSI tags (``stat_mean`` ... ``stat_rms``) to ``(B,)`` float64 values; energy in HU².
    """
    values = image.double()
    out = dispersion_features(values, mask, "stat")
    weight = mask.to(values.dtype)
    energy = (values**2 * weight).sum(_DIMS)
    out["stat_energy"] = energy
    out["stat_rms"] = (energy / weight.sum(_DIMS)).sqrt()
    return out
