"""Follow-up after T2, progression, death and censoring, and enrolment by response quota."""

from __future__ import annotations

import zlib
from copy import deepcopy

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


#: Landmarks (days) of the full-mode durable-benefit tasks (6 and 12 months).
BENEFIT_LANDMARKS = {"dcb6": 183, "dcb12": 365}
ORACLE_DRAWS = 64


def at_t2(patient: Patient) -> Patient:
    """A copy of ``patient`` as it stood at its T2 scan: visits, days and lesion sizes up to T2, no outcome yet."""
    copy = deepcopy(patient)
    copy.visits, copy.days = copy.visits[:3], copy.days[:3]
    copy.lesions = [les for les in copy.lesions if les.first_visit <= 2]
    for lesion in copy.lesions:
        lesion.sizes = lesion.sizes[:3]
    return copy


def benefit_oracle(patient: Patient, draws: int = ORACLE_DRAWS) -> dict[str, float]:
    """P(durable benefit at each landmark | every latent fixed by T2), by Monte Carlo over what is not.

    Fixed by T2: the kinetics (decay, growth and the post-T1 change ``eta``, which the T2 burden reveals),
    every lesion and its drift, new lesions by T2 and hence progression by T2. Not fixed: new lesions after
    T2, the follow-up visit days, death before progression and follow-up length. Each draw re-runs
    :func:`follow_up` from the T2 state with its own generator; a draw censored before a landmark says
    nothing about it and is left out of that landmark. Early progressors get 0 (progression is fixed).
    The generator is seeded from the subject id, so the oracle never perturbs the cohort's own stream.
    """
    rng = np.random.default_rng([zlib.crc32(patient.usubjid.encode()), 17])
    hits = {name: [0, 0] for name in BENEFIT_LANDMARKS}
    for _ in range(draws):
        copy = at_t2(patient)
        follow_up(rng, copy, 10_000)  # a far data cut-off: follow-up ends by progression, death or loss
        for name, day in BENEFIT_LANDMARKS.items():
            if copy.pfs_event and copy.pfs_days < day:
                hits[name][1] += 1
            elif copy.pfs_days >= day:
                hits[name][0] += 1
                hits[name][1] += 1
    return {name: (good / total if total else float("nan")) for name, (good, total) in hits.items()}


def pseudo_oracle(patient: Patient) -> float:
    """Score of the T1 pseudoprogression task from the latents at T1 (higher = pseudoprogression).

    The flare enlarges the lesions at T1 whatever the tumour cells do (``pseudo_factor``); the generator
    knows the tumour-cell burden underneath, ``R(t1)`` without the flare, and whether a *real* new lesion
    appeared by T1. The score is ``−log R(t1)`` (shrinking cells under a flare), pushed to the bottom by a
    real new lesion. This is the ceiling for any model of the T1 scans; it is only defined (and scored)
    for patients whose T1 scan reads as progression.
    """
    t1 = float(ady_to_offset(patient.days[1]))
    burden = float(patient.kinetics.burden(t1, t1))
    real_new = any(les.kind == "new" and les.first_visit <= 1 for les in patient.lesions)
    return -float(np.log(max(burden, 1e-6))) - (10.0 if real_new else 0.0)


def progressing_at_t1(patient: Patient) -> bool:
    """Whether the truth at T1 reads as RECIST progression (SLD +20 % and +5 mm, or a new lesion incl. a flare)."""
    targets = [les for les in patient.lesions if les.category == "TARGET"]
    sld0, sld1 = (sum(les.sizes[i] for les in targets) for i in (0, 1))
    new = any(les.first_visit == 1 for les in patient.lesions)
    return bool((sld1 >= 1.2 * sld0 and sld1 - sld0 >= 5.0) or new)


def task_oracles(patient: Patient) -> dict[str, float]:
    """Per-subject oracle scores of every task: early (``ORACLE_EARLY_P``, computed at planning), durable
    benefit at 6 and 12 months from T2, and the T1 pseudoprogression score (NaN unless progressing at T1)."""
    benefit = benefit_oracle(patient)
    return {
        "ORACLE_EARLY_P": round(patient.oracle_p, 4),
        "ORACLE_DCB6_P": round(benefit["dcb6"], 4),
        "ORACLE_DCB12_P": round(benefit["dcb12"], 4),
        "ORACLE_PSEUDO_SCORE": round(pseudo_oracle(patient), 4) if progressing_at_t1(patient) else float("nan"),
    }


def _task_auc(pairs: list[tuple[float, float]]) -> dict[str, object]:
    from sklearn.metrics import roc_auc_score

    y = np.array([label for label, _ in pairs])
    s = np.array([score for _, score in pairs])
    auc = round(float(roc_auc_score(y, s)), 4) if 0 < y.sum() < len(y) else None  # None: one class only
    return {"auc": auc, "n": len(y), "positives": int(y.sum())}


def oracle_summary(subjects: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    """Oracle AUC of every task against its truth label, over the subjects of ``truth/subjects.csv`` rows.

    ``early``: truth responder vs ``ORACLE_EARLY_P``; ``full_dcb6``/``full_dcb12``: no true PFS event before
    183/365 days (censored before the landmark: left out) vs ``ORACLE_DCB*_P``; ``pseudo``: true
    pseudoprogression among the subjects progressing at T1 vs ``ORACLE_PSEUDO_SCORE``. The pipeline's
    labels differ from these truths (readers, confirmation rules): benchmarks re-score the per-subject
    oracles against the pipeline's labels on the patients they evaluate.
    """
    def value(row: dict[str, object], key: str) -> float:
        return float(row[key])  # type: ignore[arg-type]

    out = {"early": _task_auc([(value(r, "RESPONDER"), value(r, "ORACLE_EARLY_P")) for r in subjects])}
    for name, day in BENEFIT_LANDMARKS.items():
        pairs = []
        for r in subjects:
            days, event = value(r, "PFS_DAYS"), bool(value(r, "PFS_EVENT"))
            if event and days < day:
                pairs.append((0.0, value(r, f"ORACLE_{name.upper()}_P")))
            elif days >= day:
                pairs.append((1.0, value(r, f"ORACLE_{name.upper()}_P")))
        out[f"full_{name}"] = _task_auc(pairs)
    pseudo = [(value(r, "PSEUDOPROG"), value(r, "ORACLE_PSEUDO_SCORE")) for r in subjects
              if np.isfinite(value(r, "ORACLE_PSEUDO_SCORE"))]
    out["pseudo"] = _task_auc(pseudo) if pseudo else {"auc": None, "n": 0, "positives": 0}
    return out
