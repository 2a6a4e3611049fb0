"""``fedresponse synth``: plan, render and write a multi-site cohort, atomically.

The cohort is written into a temporary sibling folder and renamed into place only when complete,
so an interrupted run never leaves a half-written cohort behind. Rendering runs one patient per task
in worker processes (memory bounded by one patient's three series).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from evaluation.protocol import check_site_code, load_protocol
from synth.dicom_writer import SCANNERS
from synth.identity import hospital_for_site, patient_identity
from synth.outcomes import enrol_site, oracle_summary, quotas, task_oracles
from synth.population import Patient, ady_to_offset
from synth.presets import Preset, get_preset
from synth.render import PatientJob, PatientOutput, render_patient
from synth.tables import CRF_COLUMNS, crf_row, enrolment_row, reads_rows, seed_crf_errors

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1.0"
ANNOTATION_FORMATS = ("rtstruct", "seg", "nifti")
FIRST_ENROLMENT = dt.date(2024, 1, 8)
ENROLMENT_SPAN_DAYS = 820


@dataclass(frozen=True)
class CohortSummary:
    """What was written: folder, sites, patients, files, responders and the oracle AUC."""

    out: Path
    sites: list[str]
    patients: int
    responders: int
    files: int
    oracle_auc: float


def site_ids(n_sites: int, codes: list[str] | None = None) -> list[str]:
    """SITEIDs of the cohort: ``codes`` (validated, one per site) or ``S01, S02, ...``."""
    if codes is None:
        return [f"S{k + 1:02d}" for k in range(n_sites)]
    if len(codes) != n_sites or len(set(codes)) != len(codes):
        raise ValueError(f"--site-codes must name {n_sites} distinct sites, but was {codes!r}")
    return [check_site_code(code) for code in codes]


def cohort_sites(cohort: Path) -> list[str]:
    """SITEIDs of a written cohort, from its ``cohort.json`` (site folders are named by them)."""
    meta = cohort / "cohort.json"
    if not meta.exists():
        raise FileNotFoundError(f"{cohort} holds no cohort.json; pass a folder written by `fedresponse synth`")
    return [str(s) for s in json.loads(meta.read_text(encoding="utf-8"))["sites"]]


def _patients_per_site(preset: Preset, n_sites: int, patients_per_site: int | None) -> list[int]:
    if patients_per_site is not None:
        if patients_per_site < 1:
            raise ValueError(f"--patients-per-site must be at least 1, but was {patients_per_site}")
        return [patients_per_site] * n_sites
    if preset.total_patients is not None:
        base, extra = divmod(preset.total_patients, n_sites)
        return [base + (1 if k < extra else 0) for k in range(n_sites)]
    return [preset.default_patients_per_site] * n_sites


def plan_cohort(
    n_sites: int, patients_per_site: int | None, seed: int, preset: Preset, site_codes: list[str] | None = None,
) -> dict[str, list[Patient]]:
    """Enrol every site (no pixels): a dict site → patients in SUBJID order."""
    if n_sites < 1:
        raise ValueError(f"--sites must be at least 1, but was {n_sites}")
    protocol = load_protocol()
    counts = _patients_per_site(preset, n_sites, patients_per_site)
    responders = quotas(counts, preset.responder_fraction)
    plan: dict[str, list[Patient]] = {}
    for k, site in enumerate(site_ids(n_sites, site_codes)):
        rng = np.random.default_rng([seed, k, 1])
        plan[site] = enrol_site(rng, site, k, n_sites, counts[k], responders[k], protocol.study_id,
                                preset.max_primary_mm, protocol.data_cutoff_day)
    return plan


def _jobs(plan: dict[str, list[Patient]], root: Path, seed: int, preset: Preset) -> list[PatientJob]:
    jobs = []
    for k, (site, patients) in enumerate(plan.items()):
        rng = np.random.default_rng([seed, k, 2])
        hospital = hospital_for_site(k, rng)
        for patient in patients:
            first_dose = FIRST_ENROLMENT + dt.timedelta(days=int(rng.integers(ENROLMENT_SPAN_DAYS)))
            consent = first_dose + dt.timedelta(days=ady_to_offset(patient.days[0]) - int(rng.integers(1, 8)))
            identity = patient_identity(rng, k, int(patient.covariates["AGE"]), consent)  # type: ignore[call-overload]
            scanner = SCANNERS[k % len(SCANNERS)]
            jobs.append(PatientJob(patient, identity, hospital, scanner, k,
                                   ANNOTATION_FORMATS[k % len(ANNOTATION_FORMATS)], preset.matrix,
                                   preset.slices_for(scanner.thickness), first_dose, root / site, seed,
                                   preset.anatomy))
    return jobs


def _run_jobs(jobs: list[PatientJob], workers: int, on_done: Callable[[], None]) -> list[PatientOutput]:
    if workers <= 1:
        results = []
        for job in jobs:
            results.append(render_patient(job))
            on_done()
        return results
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = []
        for result in pool.map(render_patient, jobs, chunksize=1):
            results.append(result)
            on_done()
        return results


def write_csv(path: Path, rows: Iterable[dict[str, object]], columns: list[str] | None = None) -> None:
    """Write ``rows`` as CSV with a header (columns from the first row unless given)."""
    rows = list(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = columns or (list(rows[0]) if rows else [])
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def synthesize(
    out: Path, n_sites: int, patients_per_site: int | None, seed: int, preset_name: str = "quick",
    workers: int | None = None, on_patient: Callable[[], None] | None = None, force: bool = False,
    site_codes: list[str] | None = None,
) -> CohortSummary:
    """Generate the cohort into ``out`` (see docs/cohort.md); refuses to overwrite unless ``force``."""
    preset = get_preset(preset_name)
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} exists and is not empty; choose another folder or pass --force")
    plan = plan_cohort(n_sites, patients_per_site, seed, preset, site_codes)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        jobs = _jobs(plan, tmp, seed, preset)
        workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
        outputs = _run_jobs(jobs, workers, on_patient or (lambda: None))
        summary = _write_tables(tmp, plan, jobs, outputs, seed, preset)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CohortSummary(out, summary.sites, summary.patients, summary.responders, summary.files, summary.oracle_auc)


def _write_tables(
    root: Path, plan: dict[str, list[Patient]], jobs: list[PatientJob], outputs: list[PatientOutput], seed: int,
    preset: Preset,
) -> CohortSummary:
    by_subject = {job.patient.usubjid: (job, output) for job, output in zip(jobs, outputs, strict=True)}
    truth_dir = root / "truth"
    all_series, all_lesions, all_phi, subjects = [], [], [], []
    crf_by_site: dict[str, list[dict[str, object]]] = {}
    files = 0
    for k, (site, patients) in enumerate(plan.items()):
        rng = np.random.default_rng([seed, k, 3])
        crf, reads, enrolment = crf_by_site.setdefault(site, []), [], []
        for patient in patients:
            job, output = by_subject[patient.usubjid]
            files += output.files
            all_series += output.series
            all_lesions += output.lesions
            all_phi += output.phi
            truth = {(str(r["VISIT"]), str(r["LESIONID"])): (float(r["TRUE_LD_MM"]), float(r["TRUE_SA_MM"]))  # type: ignore[arg-type]
                     for r in output.lesions}
            reads += reads_rows(patient, truth, rng)
            crf.append(crf_row(patient, job.first_dose, job.first_dose + dt.timedelta(
                days=ady_to_offset(patient.days[0]) - 3)))
            enrolment.append(enrolment_row(patient, job.identity))
            subjects.append(_subject_truth(patient, job))
        write_csv(root / site / "reads.csv", reads)
        write_csv(root / site / "enrolment_log.csv", enrolment)
    all_crf = [row for rows in crf_by_site.values() for row in rows]
    errors = seed_crf_errors(all_crf, np.random.default_rng([seed, 4]))  # seeded across the cohort, in place
    for site, rows in crf_by_site.items():
        write_csv(root / site / "crf.csv", rows, CRF_COLUMNS)
    write_csv(truth_dir / "series.csv", all_series)
    write_csv(truth_dir / "lesions.csv", all_lesions)
    write_csv(truth_dir / "phi.csv", all_phi)
    write_csv(truth_dir / "subjects.csv", subjects)
    write_csv(truth_dir / "crf_errors.csv", errors, ["USUBJID", "FIELD", "VALUE", "ERROR_TYPE", "DESCRIPTION"])
    oracle_auc = _write_oracle(truth_dir, subjects)
    sites = list(plan)
    meta = {"study_id": load_protocol().study_id, "preset": preset.name, "seed": seed, "sites": sites,
            "annotation_format": {s: ANNOTATION_FORMATS[k % 3] for k, s in enumerate(sites)},
            "generator_version": GENERATOR_VERSION, "patients": len(subjects), "files": files}
    (root / "cohort.json").write_text(json.dumps(meta, indent=2))
    responders = sum(int(bool(s["RESPONDER"])) for s in subjects)
    return CohortSummary(root, sites, len(subjects), responders, files, oracle_auc)


def _subject_truth(patient: Patient, job: PatientJob) -> dict[str, object]:
    return {
        "USUBJID": patient.usubjid, "SITEID": patient.site, "RESPONSE_CLASS": patient.response_class,
        "RESPONDER": int(patient.responder), "PSEUDOPROG": int(patient.kinetics.pseudo),
        **task_oracles(patient), "PFS_DAYS": patient.pfs_days, "PFS_EVENT": int(patient.pfs_event),
        "PD_VISIT": patient.pd_visit, "OS_DAYS": patient.os_days, "OS_EVENT": int(patient.os_event),
        "DECAY_PER_DAY": round(patient.kinetics.decay, 6), "GROWTH_PER_DAY": round(patient.kinetics.growth, 6),
        "ETA": round(patient.kinetics.eta, 4), "HETEROGENEITY": round(patient.heterogeneity, 3),
        "FIRST_DOSE_DATE": job.first_dose.isoformat(),
        "T0_ADY": patient.days[0], "T1_ADY": patient.days[1], "T2_ADY": patient.days[2],
    }


def _write_oracle(truth_dir: Path, subjects: list[dict[str, object]]) -> float:
    y = np.array([int(s["RESPONDER"]) for s in subjects])  # type: ignore[call-overload]
    p = np.array([float(s["ORACLE_EARLY_P"]) for s in subjects])  # type: ignore[arg-type]
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
    (truth_dir / "oracle.json").write_text(json.dumps({
        "primary_label": "responder (target SLD at T2 <= -30 % of baseline, no new lesion)",
        "early_oracle_auc": round(auc, 4), "n": len(subjects), "responders": int(y.sum()),
        "method": "generator's Bayes-optimal P(responder | latents fixed by T1), Monte Carlo over post-T1 "
                  "randomness (decay change eta, new lesions, T2 day); AUC by scikit-learn roc_auc_score",
        "tasks": oracle_summary(subjects),
    }, indent=2))
    return auc
