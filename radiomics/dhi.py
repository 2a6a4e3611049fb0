"""The Dynamic Heterogeneity Index (DHI): how fast the habitat structure of a tumour changes.

Definition (``docs/dhi.md`` is the reference text). For consecutive scans a → b of one lesion, with
study days d_a < d_b, ITH scores (:func:`radiomics.habitats.ith_score`) and habitat proportions p_a, p_b
(habitats fitted at T0, :class:`radiomics.habitats.HabitatModel`):

    ΔITH_ab = ITH_b − ITH_a                                    (signed, in [−1, 1])
    JSD_ab  = Jensen–Shannon divergence of p_a and p_b, base 2 (in [0, 1])
    DHI_ab  = (|ΔITH_ab| + JSD_ab) · 30 / (d_b − d_a)          (per 30 days, in [0, 2 · 30 / Δd])

Conventions for degenerate lesions (``status`` of the interval says which applied):
``"vanished"`` — the lesion has no voxel at b (complete response): ITH_b = 0 and JSD = 1 (the whole
composition is gone); ``"small"`` — fewer than ``min_voxels`` voxels at a or b: computed as usual but to
be read with care; otherwise ``"ok"``. A lesion absent at a cannot start an interval (``"absent"``, DHI 0).

:func:`icc` gives the intraclass correlation used to measure the DHI's repeatability
(``benchmarks/bench_dhi.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from radiomics.exceptions import GeometryMismatchError, NonCTIntensityError, SettingsError
from radiomics.habitats import HabitatModel, HabitatSettings, ith_score, proportions
from radiomics.preprocess import CT_MAX_HU, CT_MIN_HU

PER_DAYS = 30.0


@dataclass(frozen=True)
class HabitatState:
    """Habitat summary of one lesion at one scan.

    Attributes
    ----------
    day : float
        Study day (ADY).
    n_voxels : int
        Tumour voxels S.
    ith : float
        ITH score in [0, 1] (0 when the lesion vanished).
    proportions : tuple of float, length K
        Fraction of voxels per habitat (all 0 when the lesion vanished).
    """

    day: float
    n_voxels: int
    ith: float
    proportions: tuple[float, ...]


@dataclass(frozen=True)
class DhiInterval:
    """DHI of one interval between consecutive scans ``start`` → ``end`` (indices into the series)."""

    start: int
    end: int
    days: float
    delta_ith: float
    jsd: float
    dhi: float
    status: Literal["ok", "small", "vanished", "absent"]


def js_divergence(p: npt.ArrayLike, q: npt.ArrayLike) -> float:
    """Jensen–Shannon divergence in bits (0 for identical, 1 for disjoint distributions)."""
    a, b = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"p and q must be 1-D of the same length, but had shapes {a.shape} and {b.shape}")
    a, b = a / a.sum(), b / b.sum()
    m = 0.5 * (a + b)

    def kl(x: npt.NDArray[np.float64]) -> float:
        nz = x > 0
        return float((x[nz] * np.log2(x[nz] / m[nz])).sum())

    return min(max(0.5 * kl(a) + 0.5 * kl(b), 0.0), 1.0)


def _check_hu(values: torch.Tensor, t: int) -> None:
    if values.numel() == 0:
        return
    lo, hi = float(values.min()), float(values.max())
    if lo < CT_MIN_HU or hi > CT_MAX_HU:
        raise NonCTIntensityError(
            f"scan {t}: tumour intensities span [{lo:g}, {hi:g}] HU, outside plausible CT [{CT_MIN_HU:g}, "
            f"{CT_MAX_HU:g}]; pass the volume in HU (rescale applied, padding masked)"
        )
    if values.numel() > 50 and hi - lo < 10.0 and hi <= 1.0:
        raise NonCTIntensityError(f"scan {t}: tumour intensities span [{lo:g}, {hi:g}]: a normalised image, not HU")


def habitat_states(
    series: Sequence[tuple[torch.Tensor | npt.ArrayLike, torch.Tensor | npt.ArrayLike, float]],
    generator: torch.Generator,
    settings: HabitatSettings | None = None,
    device: torch.device | str = "cpu",
) -> list[HabitatState]:
    """Fit habitats on the first scan and summarise every scan of one lesion.

    Parameters
    ----------
    series : sequence of (ct, mask, day)
        ``ct`` (Z, Y, X) in HU and ``mask`` (Z, Y, X) per scan, in time order, on a common voxel spacing
        (resample first; the local window is counted in voxels).
    generator : torch.Generator
        Seeds k-means (CPU generator).
    settings : HabitatSettings, optional
    device : torch.device or str
    """
    settings = settings or HabitatSettings()
    tensors = [(torch.as_tensor(np.asarray(c)).to(device), torch.as_tensor(np.asarray(m)).to(device).bool(), float(d))
               for c, m, d in series]
    for t, (c, m, _) in enumerate(tensors):
        if c.shape != m.shape:
            raise GeometryMismatchError(f"scan {t}: CT {tuple(c.shape)} and mask {tuple(m.shape)} differ in shape")
        _check_hu(c[m], t)
    if settings.hu_range is not None:
        lo, hi = settings.hu_range
        tensors = [(c, m & (c >= lo) & (c <= hi), d) for c, m, d in tensors]
    model = HabitatModel(settings).fit(tensors[0][0], tensors[0][1], generator)
    states = []
    for c, m, day in tensors:
        labels = model.assign(c, m)
        states.append(HabitatState(
            day=day,
            n_voxels=int(m.sum()),
            ith=ith_score(labels, settings.n_habitats, settings.connectivity, settings.min_region_voxels,
                          settings.ith_mode),
            proportions=tuple(float(v) for v in proportions(labels, settings.n_habitats)),
        ))
    return states


def dhi_intervals(
    states: Sequence[HabitatState], min_voxels: int = 50, per_days: float = PER_DAYS
) -> list[DhiInterval]:
    """DHI for each pair of consecutive scans (see the module docstring for the definition)."""
    out = []
    for a in range(len(states) - 1):
        sa, sb = states[a], states[a + 1]
        days = sb.day - sa.day
        if days <= 0:
            raise SettingsError(
                f"scan days must increase, but scan {a} is day {sa.day} and scan {a + 1} is day {sb.day}"
            )
        rate = per_days / days
        status: Literal["ok", "small", "vanished", "absent"]
        if sa.n_voxels == 0:
            out.append(DhiInterval(a, a + 1, days, 0.0, 0.0, 0.0, "absent"))
            continue
        if sb.n_voxels == 0:
            delta, jsd, status = -sa.ith, 1.0, "vanished"
        else:
            delta, jsd = sb.ith - sa.ith, js_divergence(sa.proportions, sb.proportions)
            status = "small" if min(sa.n_voxels, sb.n_voxels) < min_voxels else "ok"
        out.append(DhiInterval(a, a + 1, days, delta, jsd, (abs(delta) + jsd) * rate, status))
    return out


def icc(ratings: npt.ArrayLike, form: Literal["2,1", "3,1"] = "3,1") -> float:
    """Intraclass correlation of an (n subjects, k conditions) table (Shrout & Fleiss 1979; McGraw & Wong 1996).

    ``"3,1"``: two-way mixed, consistency, single measurement — (BMS − EMS) / (BMS + (k − 1) EMS).
    ``"2,1"``: two-way random, absolute agreement, single measurement —
    (BMS − EMS) / (BMS + (k − 1) EMS + k (JMS − EMS) / n).
    """
    x = np.asarray(ratings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"ratings must be a finite (n ≥ 2, k ≥ 2) table, but had shape {x.shape}")
    n, k = x.shape
    grand = x.mean()
    ss_rows = k * ((x.mean(1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(0) - grand) ** 2).sum()
    ss_err = ((x - grand) ** 2).sum() - ss_rows - ss_cols
    bms, jms, ems = ss_rows / (n - 1), ss_cols / (k - 1), ss_err / ((n - 1) * (k - 1))
    if form == "3,1":
        den = bms + (k - 1) * ems
    elif form == "2,1":
        den = bms + (k - 1) * ems + k * (jms - ems) / n
    else:
        raise ValueError(f"form must be '2,1' or '3,1', but was {form!r}")
    if den <= 0:
        raise ValueError("the ratings have no variance between subjects; the ICC is undefined")
    return float((bms - ems) / den)
