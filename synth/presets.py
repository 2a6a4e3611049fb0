"""Cohort presets: how big the volumes are and how many patients a site enrols."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """Size of a synthetic cohort.

    Attributes
    ----------
    name : str
        ``quick`` (tests and the demo) or ``trial`` (the registered 500-patient study).
    matrix : int
        In-plane matrix (rows = columns) of the targeted thoracic reconstruction.
    slices : int
        Number of thin axial slices per protocol series.
    total_patients : int | None
        Registered total across sites (split evenly) when ``--patients-per-site`` is not given.
    default_patients_per_site : int
        Patients per site when neither is given.
    responder_fraction : float
        Registered fraction of responders (the study registers 250 / 250).
    max_primary_mm : float
        Largest baseline primary-tumour long axis, chosen so every lesion fits the field of view.
    """

    name: str
    matrix: int
    slices: int
    total_patients: int | None
    default_patients_per_site: int
    responder_fraction: float
    max_primary_mm: float


PRESETS: dict[str, Preset] = {
    "quick": Preset("quick", matrix=112, slices=64, total_patients=None, default_patients_per_site=12,
                    responder_fraction=0.5, max_primary_mm=26.0),
    "trial": Preset("trial", matrix=144, slices=96, total_patients=500, default_patients_per_site=167,
                    responder_fraction=0.5, max_primary_mm=42.0),
}


def get_preset(name: str) -> Preset:
    """Return the preset called ``name`` or raise a ``ValueError`` listing the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
