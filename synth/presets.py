"""Cohort presets: how big the volumes are and how many patients a site enrols."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Preset:
    """Size of a synthetic cohort.

    Attributes
    ----------
    name : str
        ``quick`` (tests and the demo), ``trial`` (the registered 500-patient study) or ``chest`` (a whole
        chest as a scanner sends it: 512 × 512, 300-450 thin slices per series; a few patients per site).
    matrix : int
        In-plane matrix (rows = columns) of the reconstruction.
    slices : int
        Number of thin axial slices per protocol series (``chest``: from ``coverage_mm``, per scanner).
    total_patients : int | None
        Registered total across sites (split evenly) when ``--patients-per-site`` is not given.
    default_patients_per_site : int
        Patients per site when neither is given.
    responder_fraction : float
        Registered fraction of responders (the study registers 250 / 250).
    max_primary_mm : float
        Largest baseline primary-tumour long axis, chosen so every lesion fits the field of view.
    anatomy : str
        ``targeted`` (a reconstruction around the primary, :mod:`synth.phantom`) or ``chest`` (the whole
        thorax, :mod:`synth.chest`, written slab by slab).
    coverage_mm : float
        Scan length of a ``chest`` series (the slice count follows the scanner's slice thickness).
    """

    name: str
    matrix: int
    slices: int
    total_patients: int | None
    default_patients_per_site: int
    responder_fraction: float
    max_primary_mm: float
    anatomy: str = "targeted"
    coverage_mm: float = 0.0

    def slices_for(self, thickness_mm: float) -> int:
        """Slices per series for a scanner reconstructing ``thickness_mm`` slices."""
        if self.anatomy != "chest":
            return self.slices
        return int(np.clip(round(self.coverage_mm / thickness_mm), 300, 450))


PRESETS: dict[str, Preset] = {
    "quick": Preset("quick", matrix=112, slices=64, total_patients=None, default_patients_per_site=12,
                    responder_fraction=0.5, max_primary_mm=26.0),
    "trial": Preset("trial", matrix=144, slices=96, total_patients=500, default_patients_per_site=167,
                    responder_fraction=0.5, max_primary_mm=42.0),
    "chest": Preset("chest", matrix=512, slices=0, total_patients=None, default_patients_per_site=2,
                    responder_fraction=0.5, max_primary_mm=42.0, anatomy="chest", coverage_mm=290.0),
}


def get_preset(name: str) -> Preset:
    """Return the preset called ``name`` or raise a ``ValueError`` listing the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
