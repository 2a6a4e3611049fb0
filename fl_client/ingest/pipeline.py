"""``ingest_site``: one site's export → the site study store (docs/store.md), nothing lost.

Order of work: read the key and the old manifest → classify every file → pseudonymise patients →
(re)build the images of every subject that has a new file (others keep their rows) → CRF edit checks,
eligibility, measurements → write tables, the manifest last → append the audit entry → save the key.
An exception before the manifest is renamed leaves the previous store as it was.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pydicom

from evaluation.protocol import StudyProtocol, check_site_code, configs_dir, load_protocol
from fl_client.crf.checks import ELIGIBILITY_COLUMNS, QUERY_COLUMNS, eligibility, run_checks
from fl_client.crf.dvp import DataValidationPlan, load_dvp
from fl_client.exceptions import IngestError
from fl_client.ingest import reid
from fl_client.ingest.deid import PatientPseudonym, date_shift_days, phi_tokens
from fl_client.ingest.discovery import FileRecord, classify_all
from fl_client.ingest.images import FileOutcome, SubjectContext, SubjectImages, build_subject
from fl_client.ingest.manifest import MANIFEST_COLUMNS, is_known, known_files, manifest_frame
from fl_client.ingest.qc import LESION_COLUMNS, QC_COLUMNS, findings_frame, subject_findings
from fl_client.ingest.sitetables import (
    READS_COLUMNS,
    Enrolment,
    read_crf,
    read_enrolment,
    read_reads,
    shift_crf_dates,
)
from fl_client.ingest.store_tables import StoreTables, old_tables, pending_dir, recover, write_tables
from fl_client.ingest.visits import parse_da
from fl_client.ingest.workers import PARALLEL_FROM_FILES, Parallelism, ordered_map
from fl_client.ingest.writer import BackgroundWriter
from fl_client.progress import NoProgress, ProgressSink
from privacy.audit import AuditLog

log = logging.getLogger(__name__)
STORE_FORMAT = "fedresponse-site-store/1"


@dataclass
class IngestConfig:
    """Who runs the ingest, for which site, and where the key goes.

    Attributes
    ----------
    site : str
        SITEID: 2-8 capitals or digits (:func:`evaluation.protocol.check_site_code`), e.g. ``S01``, ``QY``.
    passphrase : str
        Protects the re-identification key (held by the PI).
    who, why : str
        Recorded in the audit log.
    key_file : Path or None
        Default: ``<store>/../<site>.reid.enc`` (outside the store).
    protocol, dvp : optional
        Defaults: ``configs/study.yaml`` and ``configs/dvp.yaml``.
    scrypt_n : int
        Key-derivation cost (tests lower it).
    workers : int
        Processes for discovery and image building (default: up to 2, the cores of a site server we plan
        for); used for exports of at least ``parallel_from_files`` files.
    progress : ProgressSink or None
        Told the ``files`` discovered, and the ``patients`` and ``series`` built (rich bars in the CLI).
    """

    site: str
    passphrase: str
    who: str = "site-operator"
    why: str = "site ingest of a PACS export"
    key_file: Path | None = None
    protocol: StudyProtocol | None = None
    dvp: DataValidationPlan | None = None
    scrypt_n: int = reid.SCRYPT_N
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    parallel_from_files: int = PARALLEL_FROM_FILES
    progress: ProgressSink | None = None  # counts files, patients and series (the CLI draws bars)

    @property
    def parallel(self) -> Parallelism:
        return Parallelism(self.workers, self.parallel_from_files)


@dataclass
class IngestSummary:
    """What a run did (also the details of its audit entry)."""

    store: Path
    site: str
    files: dict[str, int] = field(default_factory=dict)
    new_files: int = 0
    subjects: int = 0
    rebuilt_subjects: int = 0
    series: int = 0
    visits: int = 0
    slices: int = 0
    queries: int = 0
    eligible: int = 0
    rejects: int = 0
    seconds: float = 0.0
    audit_hash: str = ""


def _validate(src: Path, out: Path, config: IngestConfig) -> Path:
    if not src.is_dir():
        raise IngestError(f"source {src} is not a folder; pass the site's export folder (holding pacs/)")
    try:
        check_site_code(config.site)
    except ValueError as exc:
        raise IngestError(str(exc)) from None
    key_file = (config.key_file or out.resolve().parent / f"{config.site}.reid.enc").resolve()
    if key_file.is_relative_to(out.resolve()):
        raise IngestError(f"the re-identification key {key_file} must be written outside the store {out}")
    if src.resolve().is_relative_to(out.resolve()):
        raise IngestError(f"the store {out} must not contain the source {src}")
    return key_file


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assign(records: list[FileRecord], enrolment: dict[str, Enrolment] | None, key: reid.ReidKey,
            study_id: str, site: str) -> dict[str, PatientPseudonym]:
    """PatientID → pseudonym; records of patients absent from the enrolment log are quarantined."""
    known = {v["PatientID"]: u for u, v in key.subjects.items()}
    examples: dict[str, FileRecord] = {}
    for record in records:
        if record.patient_id and not record.status:
            examples.setdefault(record.patient_id, record)
    out: dict[str, PatientPseudonym] = {}
    for patient_id, example in sorted(examples.items()):
        if enrolment is not None:
            if patient_id not in enrolment:
                continue
            entry = enrolment[patient_id]
            usubjid, subjid, name, birth = entry.usubjid, entry.subjid, entry.patient_name, entry.birth_date
        else:  # no enrolment log: number subjects in order of first appearance in the key
            usubjid = known.get(patient_id) or f"{study_id}-{site}-{len(key.subjects) + 1:04d}"
            subjid, name, birth = usubjid[-4:], example.patient_name, example.birth_date
        shift = date_shift_days(usubjid, key.secret)
        key.subjects[usubjid] = {"PatientID": patient_id, "PatientName": name, "PatientBirthDate": birth,
                                 "SUBJID": subjid, "DATE_SHIFT_DAYS": shift}
        known[patient_id] = usubjid
        out[patient_id] = PatientPseudonym(usubjid, shift, phi_tokens([patient_id, name, birth,
                                                                       example.patient_name, example.birth_date]))
    for record in records:
        if record.patient_id and not record.status and record.patient_id not in out:
            record.status = "QUARANTINED"
            record.reason = "PatientID not in the enrolment log: not enrolled, or a wrong patient in the export"
    return out


def _first_doses(crf: pd.DataFrame | None) -> dict[str, Any]:
    if crf is None or "FIRST_DOSE_DATE" not in crf.columns:
        return {}
    return {str(u): parse_da(str(d)) for u, d in zip(crf["USUBJID"], crf["FIRST_DOSE_DATE"], strict=True)}


def _by_patient(records: list[FileRecord]) -> dict[str, tuple[list[FileRecord], list[FileRecord]]]:
    """PatientID → (usable CT records, usable RTSTRUCT/SEG records)."""
    out: dict[str, tuple[list[FileRecord], list[FileRecord]]] = {}
    for record in records:
        if record.patient_id and not record.status and record.kind in ("CT", "RTSTRUCT", "SEG"):
            ct, annotations = out.setdefault(record.patient_id, ([], []))
            (ct if record.kind == "CT" else annotations).append(record)
    return out


def _sidecars(records: list[FileRecord]) -> dict[str, tuple[FileRecord, dict[str, Any]]]:
    """SeriesInstanceUID → (NIfTI record, sidecar) for NIfTI masks with a sidecar of the same stem."""
    from fl_client.ingest.annotations import load_sidecar

    by_stem = {r.path.with_name(r.path.name.split(".")[0]): r for r in records if r.kind == "NIFTI"}
    out: dict[str, tuple[FileRecord, dict[str, Any]]] = {}
    for record in records:
        if record.kind != "SIDECAR":
            continue
        content = load_sidecar(record.path)
        mask = by_stem.get(record.path.with_name(record.path.name.split(".")[0]))
        if mask is None:
            record.status, record.reason = "SKIPPED", "annotation sidecar without a NIfTI mask of the same name"
            continue
        out[str(content["SeriesInstanceUID"])] = (mask, content)
        record.status, record.reason = "INGESTED", f"sidecar of {mask.relpath}"
    return out


def _build_images(records: list[FileRecord], pseudonyms: dict[str, PatientPseudonym], key: reid.ReidKey,
                  doses: dict[str, Any], store: Path, protocol: StudyProtocol, rebuild: set[str],
                  parallel: Parallelism, progress: ProgressSink | None = None) -> dict[str, SubjectImages]:
    sidecars = _sidecars(records)
    sink = progress or NoProgress()
    inputs = _by_patient(records)
    jobs: list[tuple[list[FileRecord], SubjectContext]] = []
    for patient_id, who in sorted(pseudonyms.items(), key=lambda item: item[1].usubjid):
        if who.usubjid not in rebuild:
            continue
        ct, annotations = inputs.get(patient_id, ([], []))
        ctx = SubjectContext(who=who, secret=key.secret, first_dose=doses.get(who.usubjid), protocol=protocol,
                             store=pending_dir(store), annotations=annotations, sidecars=sidecars)
        log.debug("ingesting %s: %d CT files, %d annotation objects", who.usubjid, len(ct), len(annotations))
        jobs.append((ct, ctx))
    sink.expect("patients", len(jobs))
    sink.expect("series", sum(len({r.series_uid for r in ct}) for ct, _ in jobs))
    series_left = [len({r.series_uid for r in ct}) for ct, _ in jobs][::-1]  # results arrive in job order

    def done(_: SubjectImages) -> None:
        sink.advance("patients")
        sink.advance("series", series_left.pop())

    if parallel.active(sum(len(ct) for ct, _ in jobs)) and len(jobs) > 1:
        results = ordered_map(_build_job, jobs, parallel.workers, on_result=done)
    else:
        results = []
        with BackgroundWriter() as writer:
            for ct, ctx in jobs:
                results.append(_build_job((ct, replace(ctx, writer=writer))))
                done(results[-1])
    return {ctx.who.usubjid: result for (_, ctx), result in zip(jobs, results, strict=True)}


def _build_job(job: tuple[list[FileRecord], SubjectContext]) -> SubjectImages:
    return build_subject(*job)


@contextmanager
def _lenient_reading() -> Iterator[None]:
    """Read exports as they are: pydicom's per-value validation warnings (over-long SH, ...) are noise here."""
    previous = pydicom.config.settings.reading_validation_mode
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        pydicom.config.settings.reading_validation_mode = previous


def ingest_site(src: Path, out: Path, config: IngestConfig) -> IngestSummary:
    """Ingest one site's export into its store; see the module docstring and docs/store.md.

    Raises
    ------
    IngestError
        A fatal problem (bad arguments, unreadable tables, wrong passphrase); the store is unchanged.
    """
    with _lenient_reading():
        return _ingest(src, out, config)


def _ingest(src: Path, out: Path, config: IngestConfig) -> IngestSummary:
    start = time.perf_counter()
    src, out = Path(src), Path(out)
    key_file = _validate(src, out, config)
    protocol = config.protocol or load_protocol()
    plan = config.dvp or load_dvp()
    with _exclusive(out):
        return _locked_ingest(src, out, config, key_file, protocol, plan, start)


@contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One ingest per store at a time (advisory lock on ``STORE/.ingest.lock``)."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".ingest.lock").open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise IngestError(f"another ingest is running on {out}; wait for it to finish and run again") from exc
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _locked_ingest(src: Path, out: Path, config: IngestConfig, key_file: Path, protocol: StudyProtocol,
                   plan: DataValidationPlan, start: float) -> IngestSummary:
    recovered = recover(out)
    if recovered:
        log.warning("%s: %s", out, recovered)
    old = old_tables(out)
    key = reid.load_key(key_file, config.passphrase) if key_file.exists() else reid.ReidKey.new(config.site)
    if key.site != config.site:
        raise IngestError(f"key file {key_file} belongs to site {key.site}, not {config.site}; pass --key-file")
    records = classify_all(src, config.parallel, config.progress)
    known = known_files(old.manifest)
    new = [r for r in records if not is_known(r, known)]
    vanished = len(known) - (len(records) - len(new))
    summary = IngestSummary(store=out, site=config.site, new_files=len(new))
    audit = AuditLog(out / "audit.jsonl")
    if old.complete and not new and not vanished:
        summary.files = dict(Counter(old.manifest["STATUS"]))
        summary.subjects, summary.series = len(old.subjects), len(old.series)
        summary.seconds = time.perf_counter() - start
        entry = audit.append("ingest.run", why=config.why, who=config.who,
                             details={"source": str(src.resolve()), "new_files": 0, "result": "nothing new"})
        summary.audit_hash = entry.hash
        return summary
    if vanished:
        log.warning("%d file(s) listed in the manifest are no longer in %s: their rows stay (PRESENT = False) and "
                    "their content stays in the store unless their subject is rebuilt", vanished, src)
    if not key_file.exists():  # the secret must be safe before anything derived from it is written
        reid.save_key(key, key_file, config.passphrase, n=config.scrypt_n)
    tables = _collect(src, out, config, key, records, new, old, protocol, plan, summary)
    reid.save_key(key, key_file, config.passphrase, n=config.scrypt_n)
    write_tables(out, tables, _store_info(config, protocol))
    _finish(config, key_file, summary, tables, audit, src, start)
    return summary


def _collect(src: Path, out: Path, config: IngestConfig, key: reid.ReidKey, records: list[FileRecord],
             new: list[FileRecord], old: StoreTables, protocol: StudyProtocol, plan: DataValidationPlan,
             summary: IngestSummary) -> StoreTables:
    enrol_path, crf_path, reads_path = (src / "enrolment_log.csv", src / "crf.csv", src / "reads.csv")
    enrolment = read_enrolment(enrol_path, protocol.study_id, config.site) if enrol_path.exists() else None
    pseudonyms = _assign(records, enrolment, key, protocol.study_id, config.site)
    crf_raw = read_crf(crf_path) if crf_path.exists() else None
    new_patients = {r.patient_id for r in new} | ({"*"} if crf_path in {r.path for r in new} else set())
    rebuild = {p.usubjid for pid, p in pseudonyms.items() if pid in new_patients or "*" in new_patients
               or not old.complete or p.usubjid not in set(old.visits.get("USUBJID", []))}
    images = _build_images(records, pseudonyms, key, _first_doses(crf_raw), out, protocol, rebuild, config.parallel,
                           config.progress)
    measurements = (read_reads(reads_path, protocol.study_id, config.site) if reads_path.exists()
                    else pd.DataFrame(columns=READS_COLUMNS))
    shifts = {u: int(v["DATE_SHIFT_DAYS"]) for u, v in key.subjects.items()}
    if crf_raw is not None:
        for usubjid in crf_raw["USUBJID"]:
            shifts.setdefault(str(usubjid), date_shift_days(str(usubjid), key.secret))
    crf = shift_crf_dates(crf_raw, shifts) if crf_raw is not None else pd.DataFrame(columns=["USUBJID"])
    tables = old.merge(images, set(pseudonyms[p].usubjid for p in pseudonyms))
    usubjids = sorted({p.usubjid for p in pseudonyms.values()} | set(crf["USUBJID"].astype(str)))
    subject_qc = [f for u in usubjids for f in subject_findings(
        u, list(tables.visits.loc[tables.visits["USUBJID"] == u, "VISIT"]), measurements, protocol)]
    tables.qc = pd.concat([tables.qc[tables.qc["SERIES_UID"] != ""], findings_frame(subject_qc)], ignore_index=True)
    tables.queries = run_checks(crf, plan, protocol) if len(crf) else pd.DataFrame(columns=QUERY_COLUMNS)
    tables.eligibility = _eligibility(crf, plan, protocol, usubjids, tables.qc)
    tables.crf, tables.measurements = crf, measurements
    tables.subjects = _subjects_frame(usubjids, key, config.site)
    outcomes = {rel: o for img in images.values() for rel, o in img.outcomes.items()}
    tables.manifest = manifest_frame(records, outcomes, old.manifest, pseudonyms, len(AuditLog(
        out / "audit.jsonl").entries()))
    summary.slices = sum(img.slices for img in images.values())
    summary.rebuilt_subjects = len(images)
    return tables


def _eligibility(crf: pd.DataFrame, plan: DataValidationPlan, protocol: StudyProtocol, usubjids: list[str],
                 qc: pd.DataFrame) -> pd.DataFrame:
    by_crf = eligibility(crf, plan, protocol) if len(crf) else pd.DataFrame(columns=ELIGIBILITY_COLUMNS)
    reasons = {str(r.USUBJID): [x for x in str(r.REASONS).split("; ") if x] for r in by_crf.itertuples()}
    for u in usubjids:
        reasons.setdefault(u, ["no CRF record for this subject"])
    for row in _eligibility_findings(qc, protocol).itertuples():
        reasons.setdefault(str(row.USUBJID), []).append(f"imaging {row.CHECK} at {row.VISIT}: {row.MESSAGE}")
    rows = [{"USUBJID": u, "ELIGIBLE": not r, "REASONS": "; ".join(r)} for u, r in sorted(reasons.items())]
    return pd.DataFrame(rows, columns=ELIGIBILITY_COLUMNS)


def _eligibility_findings(qc: pd.DataFrame, protocol: StudyProtocol) -> pd.DataFrame:
    """The REJECT findings that decide eligibility: those of protocol visits and of the subject.

    An off-schedule study (kept, as the imaging guideline asks) does not make a subject ineligible; but a
    subject with no protocol visit at all also gets its unscheduled studies' rejections, which say why
    its images could not serve (e.g. the IBSI phantom's 3 mm slices).
    """
    rejects = qc[qc["SEVERITY"] == "REJECT"]
    scheduled = rejects["VISIT"].isin(protocol.visits)
    with_protocol_visit = set(qc.loc[qc["VISIT"].isin(protocol.visits) & (qc["SERIES_UID"] != ""), "USUBJID"])
    keep = scheduled | ~rejects["USUBJID"].isin(with_protocol_visit)
    return rejects[keep]


def _subjects_frame(usubjids: list[str], key: reid.ReidKey, site: str) -> pd.DataFrame:
    rows = [{"USUBJID": u, "SUBJID": u[-4:], "SITEID": site, "HAS_IMAGES": u in key.subjects} for u in usubjids]
    return pd.DataFrame(rows, columns=["USUBJID", "SUBJID", "SITEID", "HAS_IMAGES"])


def _store_info(config: IngestConfig, protocol: StudyProtocol) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        software = version("fedresponse")
    except PackageNotFoundError:
        software = "unknown"
    return {"format": STORE_FORMAT, "study_id": protocol.study_id, "site_id": config.site,
            "protocol_sha256": _sha(configs_dir() / "study.yaml"), "software": f"fedresponse {software}"}


def _finish(config: IngestConfig, key_file: Path, summary: IngestSummary, tables: StoreTables, audit: AuditLog,
            src: Path, start: float) -> None:
    summary.files = dict(Counter(tables.manifest["STATUS"]))
    summary.subjects, summary.series, summary.visits = len(tables.subjects), len(tables.series), len(tables.visits)
    summary.queries = len(tables.queries)
    summary.eligible = int(tables.eligibility["ELIGIBLE"].sum()) if len(tables.eligibility) else 0
    summary.rejects = int((tables.qc["SEVERITY"] == "REJECT").sum())
    summary.seconds = time.perf_counter() - start
    details = {k: v for k, v in vars(summary).items() if k not in ("store", "audit_hash")}
    details.update(source=str(src.resolve()), key_file_sha256=_sha(key_file),
                   protocol_sha256=_sha(configs_dir() / "study.yaml"), manifest_columns=MANIFEST_COLUMNS)
    summary.audit_hash = audit.append("ingest.run", why=config.why, who=config.who, details=details).hash
    log.info("ingest of %s done in %.1f s: %s", config.site, summary.seconds, summary.files)


__all__ = ["LESION_COLUMNS", "QC_COLUMNS", "STORE_FORMAT", "FileOutcome", "IngestConfig", "IngestSummary",
           "ingest_site"]
