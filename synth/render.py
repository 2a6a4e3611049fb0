"""Render and write one patient's imaging (T0, T1, T2): CT series, extra objects, annotations, truth rows.

One call per patient, so the cohort can be generated in parallel processes with memory bounded by a
single patient's three series.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import config as pydicom_config
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from synth.annotations import rtstruct_dataset, seg_dataset, write_nifti_annotation
from synth.chest import ChestBody
from synth.dicom_writer import (
    Scanner,
    StudyInfo,
    burned_in_capture,
    ct_series_datasets,
    uid,
    write_dataset,
    write_series,
)
from synth.identity import Hospital, PatientIdentity, accession_number
from synth.phantom import Grid, LesionPatch, apply_patch, lesion_look, lesion_patch, render_visit
from synth.population import Patient, ady_to_offset

THICK_RECON_PROBABILITY = 0.3
BURNED_IN_PROBABILITY = 0.08


@dataclass
class PatientJob:
    """Everything a worker needs to render one patient."""

    patient: Patient
    identity: PatientIdentity
    hospital: Hospital
    scanner: Scanner
    site_index: int
    annotation_format: str  # rtstruct | seg | nifti
    matrix: int
    slices: int
    first_dose: dt.date
    site_dir: Path
    seed: int
    anatomy: str = "targeted"  # or "chest": synth.chest, written slab by slab


@dataclass
class PatientOutput:
    """Rows for the truth tables, returned by the worker."""

    series: list[dict[str, object]] = field(default_factory=list)
    lesions: list[dict[str, object]] = field(default_factory=list)
    phi: list[dict[str, object]] = field(default_factory=list)
    files: int = 0


def visit_date(first_dose: dt.date, ady: int) -> dt.date:
    """Calendar date of study day ``ady`` (day 1 = ``first_dose``)."""
    return first_dose + dt.timedelta(days=ady_to_offset(ady))


def _opaque_path(rng: np.random.Generator, root: Path) -> Path:
    parts = [f"{int(rng.integers(16**8)):08X}", f"{int(rng.integers(16**8)):08x}"]
    return root.joinpath(*parts)


def feret_axes(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[float, float]:
    """Largest in-plane long axis and largest perpendicular short axis (mm) of a 3D mask.

    The lesion is the union of its voxel squares: per axial slice the convex hull of the pixel corners
    gives the long axis (maximum Feret diameter) and the width of the hull perpendicular to it
    (the RECIST short axis); each is maximised over slices.
    """
    _, dy, dx = spacing
    best_long = best_short = 0.0
    offsets = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        rows, cols = np.nonzero(mask[k])
        corners = (np.column_stack([rows, cols])[:, None, :] + offsets[None]).reshape(-1, 2) * np.array([dy, dx])
        try:
            points = corners[ConvexHull(corners).vertices]
        except QhullError:
            points = corners
        diff = points[:, None, :] - points[None, :, :]
        dist = np.sqrt((diff**2).sum(-1))
        i, j = np.unravel_index(int(dist.argmax()), dist.shape)
        long_axis = float(dist[i, j])
        direction = diff[i, j] / max(long_axis, 1e-9)
        normal = np.array([-direction[1], direction[0]])
        projection = points @ normal
        best_long = max(best_long, long_axis)
        best_short = max(best_short, float(projection.max() - projection.min()))
    return best_long, best_short


def _grid_for(job: PatientJob, rng: np.random.Generator) -> Grid:
    ps = float(np.clip(round(job.scanner.pixel_spacing + rng.uniform(-0.05, 0.05), 3), 0.6, 0.9))
    origin = (-ps * job.matrix / 2 + rng.uniform(-20, 20), -ps * job.matrix / 2 + rng.uniform(-20, 20) - 40.0,
              rng.uniform(-300, -120))
    return Grid((job.slices, job.matrix, job.matrix), (job.scanner.thickness, ps, ps), origin)


def render_patient(job: PatientJob) -> PatientOutput:
    """Render T0-T2 of ``job.patient`` into ``job.site_dir`` and return its truth rows."""
    # Values are generated here and checked by an independent validator (dciodvfy) in the tests;
    # pydicom's per-assignment validation would triple the writing time.
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    patient = job.patient
    rng = np.random.default_rng([job.seed, job.site_index, int(patient.subjid), 17])
    if job.anatomy == "chest":
        return _render_chest_patient(job, rng)
    grid = _grid_for(job, rng)
    base_frame = np.array([grid.origin[2], grid.origin[1], grid.origin[0]])
    ext = np.array(grid.extent_mm)
    out = PatientOutput()
    seed_words = [job.seed, job.site_index, int(patient.subjid)]
    for index, visit in enumerate(patient.imaged_visits):
        shift = np.zeros(3) if index == 0 else rng.uniform([-5, -4, -4], [5, 4, 4])
        hu, labels, label_map = render_visit(patient, index, grid, base_frame + shift, ext, job.scanner.noise_hu,
                                             seed_words)
        info = _study_info(job, rng, visit, index)
        _write_visit(job, rng, info, grid, hu, labels, label_map, visit, out)
        _truth_rows(patient, index, visit, labels, label_map, grid, out)
    out.phi.extend(_phi_rows(job))
    return out


def _truth_rows(patient: Patient, index: int, visit: str, labels: np.ndarray, label_map: dict[int, str],
                grid: Grid, out: PatientOutput) -> None:
    for label, lesion_id in label_map.items():
        mask = labels == label
        long_axis, short_axis = feret_axes(mask, grid.spacing)
        touches = bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
                       or mask[:, :, 0].any() or mask[:, :, -1].any())
        out.lesions.append({
            "USUBJID": patient.usubjid, "VISIT": visit, "ADY": patient.days[index], "LESIONID": lesion_id,
            "LABEL": label, "TRUE_LD_MM": round(long_axis, 2), "TRUE_SA_MM": round(short_axis, 2),
            "TRUE_VOLUME_MM3": round(float(mask.sum()) * float(np.prod(grid.spacing)), 1),
            "PLAN_MM": round(next(les.sizes[index] for les in patient.lesions if les.lesion_id == lesion_id), 2),
            "TOUCHES_EDGE": touches,
        })


SLAB = 16  # slices rendered at once in the chest preset (plus HALO on each side for the filters)
HALO = 4  # >= the radius of both Gaussian kernels (scipy: int(4 sigma + 0.5)), so slabs join exactly
NOISE_SIGMA = 0.7


def _filtered_noise_std(sigma: float) -> float:
    """Standard deviation of unit white noise after scipy's 3-D Gaussian filter (the norm of its kernel),
    a constant, so that every slab gets the same noise level (a per-slab estimate would differ by slab)."""
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (x / sigma) ** 2)
    weights /= weights.sum()
    return float(np.sqrt((weights**2).sum()) ** 3)


def _render_chest_patient(job: PatientJob, rng: np.random.Generator) -> PatientOutput:
    """The ``chest`` preset: a whole thorax at the scanner's matrix, each series rendered, encoded and
    written slab by slab (memory: a slab of HU, the series' uint8 labels and its headers)."""
    from synth.chest import draw_body

    patient = job.patient
    ps = float(np.clip(round(job.scanner.pixel_spacing + rng.uniform(-0.05, 0.05), 3), 0.6, 0.9))
    dz = job.scanner.thickness
    origin = (-ps * job.matrix / 2 + rng.uniform(-5, 5), -ps * job.matrix / 2 + rng.uniform(-5, 5),
              rng.uniform(-300, -120))
    grid = Grid((job.slices, job.matrix, job.matrix), (dz, ps, ps), origin)
    body = draw_body(np.random.default_rng([job.seed, job.site_index, int(patient.subjid), 0]), ps * job.matrix,
                     job.slices * dz)
    centre = np.array([origin[2] + 0.5 * job.slices * dz, 0.0, 0.0])  # body centre at carina height (z, y, x)
    out = PatientOutput()
    for index, visit in enumerate(patient.imaged_visits):
        shift = np.zeros(3) if index == 0 else rng.uniform([-5, -4, -4], [5, 4, 4])
        info = _study_info(job, rng, visit, index)
        labels, label_map = _write_chest_visit(job, rng, info, grid, body, centre + shift, index, out)
        _truth_rows(patient, index, visit, labels, label_map, grid, out)
    out.phi.extend(_phi_rows(job))
    return out


def _write_chest_visit(job: PatientJob, rng: np.random.Generator, info: StudyInfo, grid: Grid, body: ChestBody,
                       frame: np.ndarray, index: int, out: PatientOutput) -> tuple[np.ndarray, dict[int, str]]:
    patient = job.patient
    seed_words = [job.seed, job.site_index, int(patient.subjid)]
    visit_rng = np.random.default_rng([*seed_words, 1 + index])
    box_origin, box_extent = body.target_box
    patches: list[LesionPatch] = []
    label_map: dict[int, str] = {}
    labels = np.zeros(grid.shape, dtype=np.uint8)
    for lesion in patient.lesions:
        size = lesion.sizes[index]
        if size <= 0:
            continue
        patch = lesion_patch(grid, frame + box_origin, box_extent, lesion, size, lesion_look(patient, index, lesion),
                             visit_rng)
        label_map[len(label_map) + 1] = lesion.lesion_id
        labels[patch.box][patch.inside] = len(label_map)
        patches.append(patch)
    study_dir = _opaque_path(rng, job.site_dir / "pacs")
    series_uid = uid(info.study_uid, "ct")
    names = [f"IM{int(v):010X}" for v in rng.choice(16**9, size=grid.shape[0], replace=False)]
    headers = []
    for start in range(0, grid.shape[0], SLAB):
        hu = _chest_slab_hu(grid, body, frame, patches, start, job.scanner.noise_hu, [*seed_words, 1 + index])
        datasets = ct_series_datasets(info, job.scanner, hu, grid.spacing, grid.origin, series_uid, 2,
                                      "Thorax 1.0 Lung", first=start, total=grid.shape[0])
        write_series(datasets, [study_dir / names[k] for k in range(start, start + len(datasets))])
        for ds in datasets:
            del ds.PixelData  # keep the headers (for the annotation), not the pixels
        headers += datasets
    out.files += len(headers)
    for keyword, value in (("AccessionNumber", info.accession), ("StudyID", info.study_id)):
        out.phi.append({"USUBJID": patient.usubjid, "KEYWORD": keyword, "VALUE": value})
    extras = []
    rng.random()  # the targeted presets' thick-reconstruction draw: a chest series has none
    if rng.random() < BURNED_IN_PROBABILITY:
        write_dataset(burned_in_capture(info, rng, uid(info.study_uid, "sc")), study_dir / "SC0001")
        extras.append("burned_in:1")
        out.files += 1
    if label_map:
        out.files += _write_annotation(job, info, headers, labels, label_map, grid, study_dir, series_uid)
    out.series.append({
        "USUBJID": patient.usubjid, "VISIT": patient.imaged_visits[index], "ADY": patient.days[index],
        "StudyInstanceUID": info.study_uid, "SeriesInstanceUID": series_uid, "STUDY_DATE": info.study_date.isoformat(),
        "ROWS": grid.shape[1], "COLUMNS": grid.shape[2], "SLICES": grid.shape[0],
        "PIXEL_SPACING_MM": grid.spacing[1], "SLICE_THICKNESS_MM": grid.spacing[0],
        "STUDY_DIR": str(study_dir.relative_to(job.site_dir.parent)), "EXTRA": ";".join(extras),
    })
    return labels, label_map


def _chest_slab_hu(grid: Grid, body: ChestBody, frame: np.ndarray, patches: list[LesionPatch], start: int,
                   noise_hu: float,
                   words: list[int]) -> np.ndarray:
    """HU of slices ``start ... start + SLAB`` (fewer at the top): anatomy and lesions over the slab and a halo
    of HALO slices, point-spread blur and correlated noise (seeded per slice, so slabs join seamlessly)."""
    from synth.chest import chest_slab

    nz = grid.shape[0]
    lo, hi = max(start - HALO, 0), min(start + SLAB + HALO, nz)
    dz = grid.spacing[0]
    slab = Grid((hi - lo, *grid.shape[1:]), grid.spacing, (grid.origin[0], grid.origin[1], grid.origin[2] + lo * dz))
    vol = chest_slab(slab, frame, body)
    for patch in patches:
        apply_patch(vol, patch, z_start=lo)
    vol = ndimage.gaussian_filter(vol, 0.6)
    noise = np.stack([np.random.default_rng([*words, 7, k]).standard_normal(grid.shape[1:], dtype=np.float32)
                      for k in range(lo, hi)])
    noise = ndimage.gaussian_filter(noise, NOISE_SIGMA)
    vol += noise * (noise_hu / _filtered_noise_std(NOISE_SIGMA))
    keep = slice(start - lo, min(start + SLAB, nz) - lo)
    return np.ascontiguousarray(vol[keep], dtype=np.float32)


def _study_info(job: PatientJob, rng: np.random.Generator, visit: str, index: int) -> StudyInfo:
    patient = job.patient
    words = (job.seed, patient.usubjid, visit)
    return StudyInfo(
        patient=job.identity, hospital=job.hospital, sex=str(patient.covariates["SEX"]),
        study_uid=uid(*words, "study"), frame_uid=uid(*words, "frame"),
        study_date=visit_date(job.first_dose, patient.days[index]),
        accession=accession_number(rng, job.site_index), study_id=f"CT{int(rng.integers(10**6, 10**7))}",
        visit_note=["baseline staging", "restaging after cycle 3", "restaging after cycle 5"][index],
    )


def _write_visit(
    job: PatientJob, rng: np.random.Generator, info: StudyInfo, grid: Grid, hu: np.ndarray, labels: np.ndarray,
    label_map: dict[int, str], visit: str, out: PatientOutput,
) -> None:
    pacs = job.site_dir / "pacs"
    study_dir = _opaque_path(rng, pacs)
    series_uid = uid(info.study_uid, "ct")
    origin = grid.origin
    ct = ct_series_datasets(info, job.scanner, hu, grid.spacing, origin, series_uid, 2, "Thorax 1.0 Lung")
    names = [f"IM{int(v):010X}" for v in rng.choice(16**9, size=len(ct), replace=False)]
    write_series(ct, [study_dir / name for name in names])
    out.files += len(ct)
    row: dict[str, object] = {
        "USUBJID": job.patient.usubjid, "VISIT": visit, "ADY": job.patient.days[len(out.series)],
        "StudyInstanceUID": info.study_uid, "SeriesInstanceUID": series_uid, "STUDY_DATE": info.study_date.isoformat(),
        "ROWS": grid.shape[1], "COLUMNS": grid.shape[2], "SLICES": grid.shape[0],
        "PIXEL_SPACING_MM": grid.spacing[1], "SLICE_THICKNESS_MM": grid.spacing[0],
        "STUDY_DIR": str(study_dir.relative_to(job.site_dir.parent)),
        "EXTRA": "",
    }
    for keyword, value in (("AccessionNumber", info.accession), ("StudyID", info.study_id)):
        out.phi.append({"USUBJID": job.patient.usubjid, "KEYWORD": keyword, "VALUE": value})
    extras = []
    if rng.random() < THICK_RECON_PROBABILITY:
        extras.append(_write_thick(job, info, hu, grid, study_dir, series_uid))
        out.files += int(extras[-1].split(":")[1])
    if rng.random() < BURNED_IN_PROBABILITY:
        write_dataset(burned_in_capture(info, rng, uid(info.study_uid, "sc")), study_dir / "SC0001")
        extras.append("burned_in:1")
        out.files += 1
    if label_map:
        out.files += _write_annotation(job, info, ct, labels, label_map, grid, study_dir, series_uid)
    row["EXTRA"] = ";".join(extras)
    out.series.append(row)


def _write_thick(job: PatientJob, info: StudyInfo, hu: np.ndarray, grid: Grid, study_dir: Path, ct_uid: str) -> str:
    """A 5 mm average-intensity reconstruction of the same acquisition (not the protocol series)."""
    factor = max(round(5.0 / grid.spacing[0]), 1)
    n = hu.shape[0] // factor
    thick = hu[: n * factor].reshape(n, factor, *hu.shape[1:]).mean(axis=1)
    dz = grid.spacing[0] * factor
    origin = (grid.origin[0], grid.origin[1], grid.origin[2] + (factor - 1) * grid.spacing[0] / 2)
    series_uid = uid(ct_uid, "thick")
    datasets = ct_series_datasets(info, job.scanner, thick, (dz, grid.spacing[1], grid.spacing[2]), origin,
                                  series_uid, 3, "Thorax 5.0 Soft tissue")
    write_series(datasets, [study_dir / "recon5" / f"{k:04d}" for k in range(len(datasets))])
    return f"thick5mm:{len(datasets)}"


def _write_annotation(
    job: PatientJob, info: StudyInfo, ct: list, labels: np.ndarray, label_map: dict[int, str], grid: Grid,
    study_dir: Path, series_uid: str,
) -> int:
    if job.annotation_format == "rtstruct":
        write_dataset(rtstruct_dataset(info, ct, labels, label_map, uid(series_uid, "rtss")), study_dir / "RS0001")
        return 1
    if job.annotation_format == "seg":
        write_dataset(seg_dataset(info, ct, labels, label_map, uid(series_uid, "segs")), study_dir / "SEG0001")
        return 1
    name = f"{uid(series_uid, 'nifti').split('.')[-1][-12:]}.nii.gz"
    write_nifti_annotation(job.site_dir / "annotations" / name, labels, label_map, grid.spacing, grid.origin,
                           info.study_uid, series_uid)
    return 2


def _phi_rows(job: PatientJob) -> list[dict[str, object]]:
    ident, hosp = job.identity, job.hospital
    values = {
        "PatientName": ident.name_alphabetic, "PatientNameIdeographic": ident.name_ideographic,
        "PatientID": ident.mrn, "PatientBirthDate": ident.birth_date.strftime("%Y%m%d"),
        "OtherPatientIDs": ident.other_id, "PatientAddress": ident.address,
        "PatientTelephoneNumbers": ident.phone, "InstitutionName": hosp.name, "InstitutionAddress": hosp.address,
        "ReferringPhysicianName": hosp.referring, "PerformingPhysicianName": hosp.performing,
        "OperatorsName": hosp.operator, "StationName": hosp.station, "DeviceSerialNumber": hosp.device_serial,
    }
    return [{"USUBJID": job.patient.usubjid, "KEYWORD": k, "VALUE": v} for k, v in values.items()]
