"""Follow-up after T2, progression, death and censoring, and enrolment by response quota."""

from __future__ import annotations

import numpy as np

from synth.population import (
    FOLLOW_UP_INTERVAL,
    Lesion,
    Patient,
    _site_mix,
    ady_to_offset,
    plan_patient,
    size_for_visit,
)

PRE_PROGRESSION_DEATH_RATE = 0.0004  # per day
POST_PROGRESSION_SURVIVAL_MEAN = 270.0  # days
CONFIRMATION_INTERVAL = 42  # days from an iUPD to its confirmation scan (iRECIST window: 28-56)


def _progression_flags(patient: Patient) -> list[bool]:
    """True RECIST progression per visit: SLD +20 % and +5 mm over the nadir, or a real new lesion."""
    targets = [les for les in patient.lesions if les.category == "TARGET"]
    flags: list[bool] = []
    nadir = float("inf")
    for index in range(len(patient.visits)):
        sld = sum(les.sizes[index] for les in targets)
        new = any(les.kind == "new" and les.first_visit == index for les in patient.lesions)
        grown = index > 0 and sld >= 1.2 * nadir and sld - nadir >= 5.0
        flags.append(bool(grown or new))
        nadir = min(nadir, sld)
    return flags


def _true_progression_visit(flags: list[bool], patient: Patient) -> int | None:
    """First visit whose progression persists (iRECIST-confirmed) or is the last assessment."""
    for index, flag in enumerate(flags):
        if not flag:
            continue
        last = index == len(flags) - 1
        persists = not last and flags[index + 1]
        real_new = any(les.kind == "new" and les.first_visit <= index for les in patient.lesions)
        if persists or last or real_new:
            return index
    return None


def follow_up(rng: np.random.Generator, patient: Patient, cutoff_day: int) -> None:
    """Add FU visits every 9 weeks after T2, then settle PFS and OS truth for the patient."""
    potential = int(rng.uniform(150, cutoff_day))  # staggered entry before the data cut-off
    if rng.random() < 0.05:
        potential = int(rng.uniform(120, potential))  # lost to follow-up
    death_pre = int(rng.exponential(1.0 / PRE_PROGRESSION_DEATH_RATE))
    day = patient.days[-1]
    t1 = float(ady_to_offset(patient.days[1]))
    fu = 0
    while True:
        flags = _progression_flags(patient)
        pd_index = _true_progression_visit(flags, patient)
        confirmed_done = pd_index is not None and pd_index < len(patient.visits) - 1
        # After a progressing scan the protocol books a confirmation scan 4-8 weeks later (iRECIST);
        # otherwise the routine 9-weekly assessment.
        interval = CONFIRMATION_INTERVAL if flags[-1] else FOLLOW_UP_INTERVAL
        next_day = day + interval + int(rng.integers(-5, 6))
        if confirmed_done or next_day > min(potential, death_pre):
            break
        fu += 1
        day = next_day
        patient.visits.append(f"FU{fu}")
        patient.days.append(day)
        if rng.random() < -np.expm1(-patient.kinetics.new_lesion_rate * FOLLOW_UP_INTERVAL) and fu >= 1:
            lesion_index = len(patient.visits) - 1
            new = Lesion(f"L{len(patient.lesions) + 1:02d}", "LUNG", False, "new", "NEW",
                         (float(rng.uniform(0.3, 0.7)), 0.78, 0.35), float(rng.uniform(8, 14)), (0.8, 0.9), 0.0,
                         0.0, lesion_index, [0.0] * lesion_index)
            patient.lesions.append(new)
        for lesion in patient.lesions:
            if len(lesion.sizes) < len(patient.visits):
                lesion.sizes.append(size_for_visit(lesion, patient.kinetics, patient.days, len(patient.days) - 1, t1))
    _settle_outcomes(rng, patient, potential, death_pre)


def _settle_outcomes(rng: np.random.Generator, patient: Patient, potential: int, death_pre: int) -> None:
    flags = _progression_flags(patient)
    pd_index = _true_progression_visit(flags, patient)
    pd_day = patient.days[pd_index] if pd_index is not None else None
    death = death_pre
    if pd_day is not None:
        death = min(death, pd_day + int(rng.exponential(POST_PROGRESSION_SURVIVAL_MEAN)))
    patient.os_event = death <= potential
    patient.os_days = death if patient.os_event else potential
    patient.followup_end = patient.os_days
    if pd_day is not None and pd_day <= patient.os_days:
        patient.pfs_days, patient.pfs_event, patient.pd_visit = pd_day, True, patient.visits[pd_index or 0]
    elif patient.os_event:
        patient.pfs_days, patient.pfs_event = patient.os_days, True
    else:
        patient.pfs_days, patient.pfs_event = patient.days[-1], False  # last adequate assessment
    t2_index = 2
    progressed_by_t2 = pd_index is not None and pd_index <= t2_index
    if patient.kinetics.pseudo:
        patient.response_class = "PSEUDOPROGRESSOR"
    elif patient.responder:
        patient.response_class = "RESPONDER"
    elif progressed_by_t2:
        patient.response_class = "PROGRESSOR"
    else:
        patient.response_class = "STABLE"


def quotas(n_per_site: list[int], responder_fraction: float) -> list[int]:
    """Responders to enrol per site: a gradient of case mix whose total is exactly the registered one."""
    total = sum(n_per_site)
    target = round(total * responder_fraction)
    n_sites = len(n_per_site)
    shares = [responder_fraction + 0.1 * (1 - 2 * k / max(n_sites - 1, 1)) for k in range(n_sites)]
    raw = [s * n for s, n in zip(shares, n_per_site, strict=True)]
    counts = [int(np.floor(r)) for r in raw]
    remainders = sorted(range(n_sites), key=lambda k: raw[k] - counts[k], reverse=True)
    for k in remainders[: target - sum(counts)]:
        counts[k] += 1
    return [min(c, n) for c, n in zip(counts, n_per_site, strict=True)]


def enrol_site(
    rng: np.random.Generator,
    site: str,
    site_index: int,
    n_sites: int,
    n_patients: int,
    n_responders: int,
    study_id: str,
    max_primary_mm: float,
    cutoff_day: int,
) -> list[Patient]:
    """Screen candidates until the site's responder and non-responder quotas are filled."""
    mix = _site_mix(site_index, n_sites)
    need = {True: n_responders, False: n_patients - n_responders}
    enrolled: list[Patient] = []
    for _ in range(200 * max(n_patients, 1)):
        if not any(need.values()):
            break
        candidate = plan_patient(rng, site, mix, max_primary_mm)
        if need[candidate.responder] > 0:
            need[candidate.responder] -= 1
            enrolled.append(candidate)
    else:  # pragma: no cover - the loop bound is far above what any preset needs
        raise RuntimeError(f"site {site}: could not fill the enrolment quotas {need}")
    order = rng.permutation(len(enrolled))
    patients = [enrolled[i] for i in order]
    for number, patient in enumerate(patients, start=1):
        patient.subjid = f"{number:04d}"
        patient.usubjid = f"{study_id}-{site}-{patient.subjid}"
        follow_up(rng, patient, cutoff_day)
    return patients
