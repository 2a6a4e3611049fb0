"""Who the synthetic patients are: covariates, lesions, scan schedule, trajectories and outcomes.

Everything here is cheap (no images): the cohort is planned first, enrolled by response quota as the
study registers it (250 responders / 250 non-responders in the ``trial`` preset), and only then
rendered. Sites differ in case mix (PD-L1 and EGFR/ALK prevalence, stage, ECOG), so data are non-IID.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from synth.kinetics import Kinetics, draw_kinetics, oracle_probability, responder_from_burden

PSEUDOPROGRESSION_RATE = 0.04
FOLLOW_UP_INTERVAL = 63


@dataclass
class Lesion:
    """One lesion of one patient, in fractions of the field of view and true sizes per visit."""

    lesion_id: str
    organ: str
    node: bool
    kind: str  # primary | metastasis | node | small_node | new | inflammatory
    category: str  # TARGET | NONTARGET | NEW (at the visit it is first seen)
    centre: tuple[float, float, float]  # (z, y, x) as fractions of the field of view
    base_mm: float  # long axis (non-nodal) or short axis (nodal) at its first appearance
    aspect: tuple[float, float]  # (y/x, z/x) semi-axis ratios
    angle: float  # in-plane rotation, radians
    drift: float  # per-lesion log size drift per 100 days
    first_visit: int  # index into Patient.visits where it appears
    sizes: list[float] = field(default_factory=list)  # true measure (mm) per visit, 0 = absent


@dataclass
class Patient:
    """The plan of one synthetic patient (no pixels)."""

    site: str
    subjid: str
    usubjid: str
    covariates: dict[str, object]
    kinetics: Kinetics
    heterogeneity: float
    necrosis0: float
    ggo_fraction: float
    visits: list[str]
    days: list[int]  # ADY per visit (CDISC: day 1 = first dose)
    lesions: list[Lesion]
    responder: bool = False
    response_class: str = ""
    oracle_p: float = 0.0
    pfs_days: int = 0
    pfs_event: bool = False
    os_days: int = 0
    os_event: bool = False
    pd_visit: str = ""
    followup_end: int = 0

    @property
    def imaged_visits(self) -> list[str]:
        return [v for v in self.visits if v.startswith("T")]


def ady_to_offset(ady: int) -> int:
    """Days from the first dose for a CDISC study day (day 1 = first dose, no day 0)."""
    return ady - 1 if ady > 0 else ady


def _site_mix(site_index: int, n_sites: int) -> dict[str, float]:
    """Case mix of a site: a gradient from a PD-L1-rich to an EGFR/ALK-rich population."""
    w = site_index / max(n_sites - 1, 1)
    return {"pdl1_high": 0.45 - 0.25 * w, "driver": 0.06 + 0.18 * w, "stage4": 0.55 + 0.2 * w, "ecog1": 0.45 + 0.2 * w}


def draw_covariates(rng: np.random.Generator, mix: dict[str, float]) -> dict[str, object]:
    """Demographic, clinical and molecular covariates of one patient."""
    sex = "M" if rng.random() < 0.68 else "F"
    smoking = rng.choice(["NEVER", "FORMER", "CURRENT"], p=[0.25, 0.5, 0.25])
    histology = rng.choice(["ADENOCARCINOMA", "SQUAMOUS", "LARGE_CELL", "NSCLC_NOS"], p=[0.6, 0.3, 0.04, 0.06])
    never_smoking_adeno = histology == "ADENOCARCINOMA" and smoking == "NEVER"
    driver = (never_smoking_adeno and rng.random() < 0.6) or rng.random() < mix["driver"]
    egfr = "POSITIVE" if driver and rng.random() < 0.75 else ("UNKNOWN" if rng.random() < 0.05 else "NEGATIVE")
    alk = "POSITIVE" if driver and egfr != "POSITIVE" else ("UNKNOWN" if rng.random() < 0.05 else "NEGATIVE")
    u = rng.random()
    pdl1 = int(rng.integers(50, 101)) if u < mix["pdl1_high"] else int(rng.integers(1, 50)) if u < 0.75 else 0
    stage = rng.choice(["IVA", "IVB"]) if rng.random() < mix["stage4"] else rng.choice(["IIIA", "IIIB", "IIIC"])
    height = float(np.round(rng.normal(170 if sex == "M" else 160, 7), 1))
    return {
        "AGE": int(np.clip(rng.normal(63, 8.5), 35, 84)),
        "SEX": sex,
        "HEIGHT_CM": height,
        "WEIGHT_KG": float(np.round(np.clip(rng.normal(22.5, 3.0) * (height / 100) ** 2, 42, 125), 1)),
        "SMOKING": str(smoking),
        "PACKYEARS": 0 if smoking == "NEVER" else int(np.clip(rng.normal(35, 15), 5, 90)),
        "ECOG": int(rng.random() < mix["ecog1"]),
        "STAGE": str(stage),
        "HISTOLOGY": str(histology),
        "EGFR": egfr,
        "ALK": alk,
        "PDL1_TPS": pdl1,
        "LINE": 1 if rng.random() < 0.8 else 2,
        "PRIOR_RT": "Y" if rng.random() < 0.12 else "N",
    }


def log_decay_mean(cov: dict[str, object]) -> float:
    """Mean log decay rate: PD-L1 raises the chance of response, EGFR/ALK drivers lower it."""
    pdl1 = int(cov["PDL1_TPS"])  # type: ignore[call-overload]
    value = np.log(0.0042)
    value += 0.75 if pdl1 >= 50 else 0.3 if pdl1 >= 1 else 0.0
    value -= 1.0 if "POSITIVE" in (cov["EGFR"], cov["ALK"]) else 0.0
    value -= 0.3 * int(cov["ECOG"])  # type: ignore[call-overload]
    value += 0.15 if cov["HISTOLOGY"] == "SQUAMOUS" else 0.0
    value -= 0.1 * (int(cov["LINE"]) - 1)  # type: ignore[call-overload]
    return float(value)


def draw_schedule(rng: np.random.Generator) -> tuple[list[str], list[int]]:
    """Protocol CT days: T0 within 28 days before cycle 1, T1 after 3 and T2 after 5 cycles (21 days)."""
    t0 = int(rng.integers(-21, -2))
    t1 = int(62 + rng.integers(-5, 6))
    if rng.random() < 0.02:  # a late T1 scan: a protocol deviation the QC must flag
        t1 = int(rng.integers(74, 80))
    t2 = int(t1 + 42 + rng.integers(-4, 5))
    return ["T0", "T1", "T2"], [t0, t1, t2]


def _lesion(
    rng: np.random.Generator, lid: str, kind: str, centre: tuple[float, float, float], base: float, first: int
) -> Lesion:
    organ = {"primary": "LUNG", "metastasis": "LUNG", "new": "LUNG", "inflammatory": "LUNG"}.get(kind, "LYMPH NODE")
    node = organ == "LYMPH NODE"
    category = "NEW" if first > 0 else ("TARGET" if kind in ("primary", "metastasis", "node") else "NONTARGET")
    return Lesion(
        lesion_id=lid, organ=organ, node=node, kind=kind, category=category, centre=centre, base_mm=base,
        aspect=(float(rng.uniform(0.65, 0.95)), float(rng.uniform(0.7, 1.0))), angle=float(rng.uniform(0, np.pi)),
        drift=float(rng.normal(0, 0.12)), first_visit=first,
    )


def draw_lesions(rng: np.random.Generator, max_primary_mm: float) -> list[Lesion]:
    """Baseline lesions: a lung primary, often a mediastinal node and a lung metastasis, non-target nodes."""
    lesions = [_lesion(rng, "L01", "primary", (rng.uniform(0.42, 0.58), rng.uniform(0.42, 0.55),
                                                   rng.uniform(0.5, 0.62)), rng.uniform(14, max_primary_mm), 0)]
    if rng.random() < 0.6:
        lesions.append(_lesion(rng, f"L{len(lesions) + 1:02d}", "node",
                               (rng.uniform(0.35, 0.65), rng.uniform(0.45, 0.6), 0.18), rng.uniform(15, 20), 0))
    if rng.random() < 0.4:
        lesions.append(_lesion(rng, f"L{len(lesions) + 1:02d}", "metastasis",
                               (rng.uniform(0.3, 0.7), rng.uniform(0.75, 0.82), rng.uniform(0.3, 0.75)),
                               rng.uniform(10, 16), 0))
    if rng.random() < 0.5:
        lesions.append(_lesion(rng, f"L{len(lesions) + 1:02d}", "small_node",
                               (rng.uniform(0.25, 0.75), rng.uniform(0.28, 0.36), 0.16), rng.uniform(10.5, 14), 0))
    return lesions


def _new_lesion(rng: np.random.Generator, patient: Patient, kind: str, first: int) -> Lesion:
    lid = f"L{len(patient.lesions) + 1:02d}"
    centre = (float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.72, 0.8)), float(rng.uniform(0.36, 0.46)))
    return _lesion(rng, lid, kind, centre, float(rng.uniform(7, 13)), first)


def plan_patient(
    rng: np.random.Generator, site: str, mix: dict[str, float], max_primary_mm: float
) -> Patient:
    """Draw one candidate patient; SUBJID/USUBJID are assigned at enrolment."""
    cov = draw_covariates(rng, mix)
    kin = draw_kinetics(rng, log_decay_mean(cov), pseudo=bool(rng.random() < PSEUDOPROGRESSION_RATE))
    visits, days = draw_schedule(rng)
    patient = Patient(
        site=site, subjid="", usubjid="", covariates=cov, kinetics=kin,
        heterogeneity=float(rng.uniform(0.3, 1.0)), necrosis0=float(rng.uniform(0.0, 0.25)),
        ggo_fraction=float(rng.uniform(0.1, 0.4)) if cov["HISTOLOGY"] == "ADENOCARCINOMA" else 0.0,
        visits=visits, days=days, lesions=draw_lesions(rng, max_primary_mm),
    )
    _grow_trajectories(rng, patient)
    return patient


def _measure_at(lesion: Lesion, kin: Kinetics, day: int, t1: float) -> float:
    offset = ady_to_offset(day)
    if lesion.kind == "small_node":
        # Non-target nodes follow the disease but stay sub-measurable.
        return float(np.clip(lesion.base_mm * kin.burden(offset, t1) ** 0.5, 4.0, 14.5))
    size = lesion.base_mm * float(kin.burden(offset, t1)) * np.exp(lesion.drift * max(offset, 0) / 100.0)
    if lesion.node:
        return max(size, 5.0)  # nodes shrink to normal size, they do not vanish
    return size if size >= 2.5 else 0.0  # below the resolution of the scan: gone


def _grow_trajectories(rng: np.random.Generator, patient: Patient) -> None:
    """Fill in true sizes for T0-T2 and new lesions appearing at T1 or T2."""
    kin = patient.kinetics
    t1 = float(ady_to_offset(patient.days[1]))
    new_by_t1 = rng.random() < -np.expm1(-kin.new_lesion_rate * t1)
    new_by_t2 = new_by_t1 or rng.random() < -np.expm1(-kin.new_lesion_rate * (patient.days[2] - patient.days[1]))
    if new_by_t2:
        patient.lesions.append(_new_lesion(rng, patient, "new", 1 if new_by_t1 else 2))
    if kin.pseudo and rng.random() < 0.5:
        patient.lesions.append(_new_lesion(rng, patient, "inflammatory", 1))
    for lesion in patient.lesions:
        lesion.sizes = [size_for_visit(lesion, kin, patient.days, i, t1) for i in range(len(patient.days))]
    targets = [les for les in patient.lesions if les.category == "TARGET"]
    sld0 = sum(les.sizes[0] for les in targets)
    sld2 = sum(les.sizes[2] for les in targets)
    real_new_by_t2 = any(les.kind == "new" and les.first_visit <= 2 for les in patient.lesions)
    patient.responder = bool(responder_from_burden(np.array(sld2 / sld0), np.array(real_new_by_t2)))
    drifts = np.array([les.drift for les in targets])
    sizes = np.array([les.sizes[0] for les in targets])
    patient.oracle_p = oracle_probability(kin, t1, float(ady_to_offset(patient.days[1] + 42)), drifts, sizes,
                                          bool(new_by_t1), rng)


def size_for_visit(lesion: Lesion, kin: Kinetics, days: list[int], index: int, t1: float) -> float:
    if index < lesion.first_visit:
        return 0.0
    if lesion.kind == "inflammatory":
        return lesion.base_mm if index == lesion.first_visit else 0.0  # resolves by the next scan
    if lesion.kind == "new":
        grow = np.exp(kin.growth * (ady_to_offset(days[index]) - ady_to_offset(days[lesion.first_visit])))
        return float(lesion.base_mm * grow)
    if kin.pseudo and index == 1 and lesion.kind != "small_node":
        # Pseudoprogression: immune infiltration enlarges the lesion beyond its baseline size at T1,
        # whatever the tumour cells are doing underneath.
        return lesion.base_mm * kin.pseudo_factor
    return _measure_at(lesion, kin, days[index], t1)
