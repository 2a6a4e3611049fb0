"""The Dynamic Heterogeneity Index (DHI): how fast texture, density distribution and spatial structure change.

Definition (``docs/dhi.md`` is the reference text). Habitats are fitted at T0
(:class:`radiomics.habitats.HabitatModel`) and every scan is summarised by a :class:`HabitatState`.
For consecutive scans a → b with study days d_a < d_b and ``r = per_days / (d_b − d_a)``, three
components, each free of tumour size by construction:

    density  = √JSD(p_a, p_b) · r          Jensen–Shannon distance (√ of the divergence in bits, a metric)
                                           of the habitat proportions
    spatial  = (M_b − M_a) · r             signed change of the mixing index M (join counts against a
                                           permutation null on the same mask, :func:`mixing_index`)
    texture  = (H_b − H_a) · r             signed change of the IBSI GLCM joint entropy H [TU9B] (bits;
                                           3-D merged, fixed bin size 25 HU) of the tumour

each z-scored with a pre-specified location and scale, and combined with pre-specified signed weights
(``configs/study.yaml`` ``heterogeneity.dhi_components``; :class:`DhiDefinition`):

    DHI = Σ_c w_c (x_c − μ_c) / σ_c  /  Σ_c |w_c|

Conventions for degenerate lesions (``status`` says which applied): ``"vanished"`` — no voxel at b
(complete response): JSD = 1, M_b = 0, H_b = H_a; ``"small"`` — fewer than ``min_voxels`` voxels at a
or b: the density component as usual, the spatial and texture z-scores 0 (no information: the mixing and
the GLCM entropy of a few dozen voxels are noise); ``"absent"`` — no voxel at a: every component 0 and
DHI 0 (the reference centre). ITH (Li et al. 2022) and ΔITH stay in the table for comparison.

:func:`icc` gives the intraclass correlation used to measure repeatability (``benchmarks/bench_dhi.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from radiomics.exceptions import GeometryMismatchError, NonCTIntensityError, SettingsError
from radiomics.habitats import (
    HabitatModel,
    HabitatSettings,
    interior,
    ith_score,
    local_features,
    mixing_index,
    proportions,
)
from radiomics.preprocess import CT_MAX_HU, CT_MIN_HU
from radiomics.texture.glcm import glcm_features

PER_DAYS = 30.0
COMPONENTS: tuple[str, ...] = ("density", "spatial", "texture")
#: GLCM discretisation of the texture component: fixed bin size 25 HU from -1000 HU (IBSI configuration C).
TEXTURE_RANGE_HU = (-1000.0, 400.0)
TEXTURE_BIN_HU = 25.0


@dataclass(frozen=True)
class DhiComponent:
    """Pre-specified standardisation of one DHI component: ``weight · (x − mean) / sd``."""

    weight: float
    mean: float
    sd: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight) and math.isfinite(self.mean) and math.isfinite(self.sd)) or self.sd <= 0:
            raise SettingsError(f"a DHI component needs a finite weight and mean and sd > 0, but was {self!r}")


@dataclass(frozen=True)
class DhiDefinition:
    """Weights and reference scales of the DHI components (``configs/study.yaml`` ``heterogeneity``)."""

    components: Mapping[str, DhiComponent]
    per_days: float = PER_DAYS

    def __post_init__(self) -> None:
        if set(self.components) != set(COMPONENTS):
            raise SettingsError(
                f"the DHI needs exactly the components {list(COMPONENTS)}, but got {sorted(self.components)}; "
                "set them in configs/study.yaml heterogeneity.dhi_components"
            )
        if sum(abs(c.weight) for c in self.components.values()) <= 0 or self.per_days <= 0:
            raise SettingsError(f"DHI weights must not all be 0 and per_days must be > 0, but were {self!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Mapping[str, float]], per_days: float = PER_DAYS) -> DhiDefinition:
        """From ``{"density": {"weight": .., "mean": .., "sd": ..}, ...}`` (the protocol's block)."""
        return cls({name: DhiComponent(**dict(values)) for name, values in data.items()}, per_days)

    def z(self, name: str, value: float) -> float:
        """Standardised component ``(value − mean) / sd``."""
        c = self.components[name]
        return (value - c.mean) / c.sd

    def combine(self, z: Mapping[str, float]) -> float:
        """``Σ w_c z_c / Σ |w_c|``."""
        total = sum(abs(c.weight) for c in self.components.values())
        return sum(c.weight * z[name] for name, c in self.components.items()) / total


@dataclass(frozen=True)
class HabitatState:
    """Habitat summary of one lesion at one scan.

    Attributes
    ----------
    day : float
        Study day (ADY).
    n_voxels : int
        Tumour voxels S (after HU re-segmentation).
    ith : float
        ITH score in [0, 1] (0 when the lesion vanished).
    proportions : tuple of float, length K
        Fraction of voxels per habitat (all 0 when the lesion vanished).
    mixing : float
        Mixing index M (:func:`radiomics.habitats.mixing_index`; 0 when vanished).
    texture_entropy : float
        GLCM joint entropy of the tumour, bits (0 when vanished).
    mask_voxels : int or None
        Voxels of the lesion mask as drawn (before re-segmentation); the size the volume change uses.
    """

    day: float
    n_voxels: int
    ith: float
    proportions: tuple[float, ...]
    mixing: float = 0.0
    texture_entropy: float = 0.0
    mask_voxels: int | None = None

    @property
    def size(self) -> int:
        """Voxels used for the volume change (the drawn mask when known)."""
        return self.n_voxels if self.mask_voxels is None else self.mask_voxels


@dataclass(frozen=True)
class DhiInterval:
    """DHI of one interval between consecutive scans ``start`` → ``end`` (indices into the series).

    ``z`` holds the standardised components (:data:`COMPONENTS`); ``dlogvol`` = ln((S_b + 1) / (S_a + 1))
    of the drawn masks, the size change a DHI must not merely restate.
    """

    start: int
    end: int
    days: float
    delta_ith: float
    jsd: float
    dhi: float
    status: Literal["ok", "small", "vanished", "absent"]
    delta_mixing: float = 0.0
    delta_texture: float = 0.0
    dlogvol: float = 0.0
    z: Mapping[str, float] = field(default_factory=dict)


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


def glcm_entropy(ct: torch.Tensor, mask: torch.Tensor) -> float:
    """IBSI GLCM joint entropy [TU9B] (3-D, merged over 13 directions) of one tumour, bits; 0 without a pair.

    Discretised with a fixed bin size of 25 HU from −1000 HU (intensities clipped to [−1000, 400] HU), so
    the value is comparable across scans and patients. Computed on the tumour's bounding box.
    """
    m = mask.bool()
    if int(m.sum()) < 2:
        return 0.0
    idx = torch.nonzero(m)
    box = tuple(slice(int(a), int(b) + 1) for a, b in zip(idx.min(0).values, idx.max(0).values, strict=True))
    lo, hi = TEXTURE_RANGE_HU
    levels = ((ct[box].clamp(lo, hi) - lo) / TEXTURE_BIN_HU).floor().long() + 1
    n_levels = int((hi - lo) // TEXTURE_BIN_HU) + 1
    value = float(glcm_features(levels[None], m[box][None], n_levels, dims="3D")["cm_joint_entr_3D_comb"][0])
    return value if math.isfinite(value) else 0.0


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
    drawn = [int(m.sum()) for _, m, _ in tensors]
    if settings.hu_range is not None:
        lo, hi = settings.hu_range
        tensors = [(c, m & (c >= lo) & (c <= hi), d) for c, m, d in tensors]
    model = HabitatModel(settings).fit(tensors[0][0], tensors[0][1], generator)
    states = []
    for (c, m, day), size in zip(tensors, drawn, strict=True):
        labels = model.assign_features(local_features(c, m, settings.window), m)
        core = interior(m, settings.window // 2)
        states.append(HabitatState(
            day=day,
            n_voxels=int(m.sum()),
            ith=ith_score(labels, settings.n_habitats, settings.connectivity, settings.min_region_voxels,
                          settings.ith_mode),
            proportions=tuple(float(v) for v in proportions(labels, settings.n_habitats)),
            mixing=mixing_index(torch.where(core, labels, -1), settings.n_habitats, settings.ith_mode),
            texture_entropy=glcm_entropy(c, core),
            mask_voxels=size,
        ))
    return states


def component_rates(jsd: float, delta_mixing: float, delta_texture: float, days: float, per_days: float = PER_DAYS
                    ) -> dict[str, float]:
    """Raw DHI components per ``per_days``: JS distance √JSD, ΔM and ΔH (before standardisation)."""
    rate = per_days / days
    return {"density": math.sqrt(jsd) * rate, "spatial": delta_mixing * rate, "texture": delta_texture * rate}


def _interval(sa: HabitatState, sb: HabitatState, a: int, definition: DhiDefinition, min_voxels: int) -> DhiInterval:
    days = sb.day - sa.day
    if days <= 0:
        raise SettingsError(f"scan days must increase, but scan {a} is day {sa.day} and scan {a + 1} is day {sb.day}")
    dlogvol = math.log((sb.size + 1.0) / (sa.size + 1.0))
    if sa.n_voxels == 0:
        zeros = dict.fromkeys(COMPONENTS, 0.0)
        return DhiInterval(a, a + 1, days, 0.0, 0.0, 0.0, "absent", dlogvol=dlogvol, z=zeros)
    status: Literal["ok", "small", "vanished", "absent"]
    if sb.n_voxels == 0:
        delta, jsd, d_mix, d_tex, status = -sa.ith, 1.0, -sa.mixing, 0.0, "vanished"
    else:
        delta, jsd = sb.ith - sa.ith, js_divergence(sa.proportions, sb.proportions)
        d_mix, d_tex = sb.mixing - sa.mixing, sb.texture_entropy - sa.texture_entropy
        status = "small" if min(sa.n_voxels, sb.n_voxels) < min_voxels else "ok"
    raw = component_rates(jsd, d_mix, d_tex, days, definition.per_days)
    z = {name: definition.z(name, value) for name, value in raw.items()}
    if status == "small":  # mixing and GLCM entropy of a few dozen voxels are noise: no information (0)
        z["spatial"] = z["texture"] = 0.0
    return DhiInterval(a, a + 1, days, delta, jsd, definition.combine(z), status, d_mix, d_tex, dlogvol, z)


def dhi_intervals(
    states: Sequence[HabitatState], definition: DhiDefinition, min_voxels: int = 50
) -> list[DhiInterval]:
    """DHI for each pair of consecutive scans (see the module docstring for the definition)."""
    return [_interval(states[a], states[a + 1], a, definition, min_voxels) for a in range(len(states) - 1)]


def interval_rows(states: Sequence[HabitatState], intervals: Sequence[DhiInterval], visits: Sequence[str]
                  ) -> list[dict[str, object]]:
    """The ``dhi.csv`` rows of one lesion, columns :data:`DHI_COLUMNS` minus ``USUBJID, LESIONID``."""
    rows: list[dict[str, object]] = []
    for iv in intervals:
        a, b = states[iv.start], states[iv.end]
        rows.append({
            "FROM": visits[iv.start], "TO": visits[iv.end], "DAYS": iv.days,
            "ITH_FROM": a.ith, "ITH_TO": b.ith, "DELTA_ITH": iv.delta_ith, "JSD": iv.jsd,
            "MIX_FROM": a.mixing, "MIX_TO": b.mixing, "DELTA_MIX": iv.delta_mixing,
            "GLCM_ENTR_FROM": a.texture_entropy, "GLCM_ENTR_TO": b.texture_entropy, "DELTA_GLCM_ENTR": iv.delta_texture,
            "VOXELS_FROM": a.size, "VOXELS_TO": b.size, "DLOGVOL": iv.dlogvol,
            "Z_DENSITY": iv.z["density"], "Z_SPATIAL": iv.z["spatial"], "Z_TEXTURE": iv.z["texture"],
            "DHI": iv.dhi, "STATUS": iv.status,
        })
    return rows


#: Columns of ``fedresponse radiomics dhi`` (``docs/dhi.md``); DHI and STATUS stay last.
DHI_COLUMNS: tuple[str, ...] = (
    "USUBJID", "LESIONID", "FROM", "TO", "DAYS", "ITH_FROM", "ITH_TO", "DELTA_ITH", "JSD", "MIX_FROM", "MIX_TO",
    "DELTA_MIX", "GLCM_ENTR_FROM", "GLCM_ENTR_TO", "DELTA_GLCM_ENTR", "VOXELS_FROM", "VOXELS_TO", "DLOGVOL",
    "Z_DENSITY", "Z_SPATIAL", "Z_TEXTURE", "DHI", "STATUS",
)


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


def icc_ci(
    ratings: npt.ArrayLike, form: Literal["2,1", "3,1"], rng: np.random.Generator, n_boot: int = 1000,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """ICC with a percentile bootstrap CI over subjects (rows resampled with replacement).

    Returns (icc, low, high); resamples without between-subject variance are skipped.
    """
    x = np.asarray(ratings, dtype=np.float64)
    point = icc(x, form)
    draws = []
    for _ in range(n_boot):
        try:
            draws.append(icc(x[rng.integers(0, x.shape[0], x.shape[0])], form))
        except ValueError:
            continue
    if not draws:
        return point, math.nan, math.nan
    lo, hi = np.quantile(draws, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return point, float(lo), float(hi)
