"""One subject's CT studies → series table rows, protocol volumes, label volumes, lesions and QC.

Works one series at a time, so memory is bounded by the largest series, not by the cohort.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from evaluation.protocol import StudyProtocol
from fl_client.exceptions import AnnotationError, SeriesAssemblyError
from fl_client.ingest import annotations as ann
from fl_client.ingest.deid import PatientPseudonym, deidentify, kept_attributes, remap_uid, shift_date
from fl_client.ingest.discovery import FileRecord
from fl_client.ingest.qc import Finding, air_finding, coverage_findings, geometry_findings, lesion_rows
from fl_client.ingest.series import SeriesGeometry, load_volume, plan_series
from fl_client.ingest.visits import label_studies, parse_da
from fl_client.ingest.writer import BackgroundWriter, write_json, write_nifti

log = logging.getLogger(__name__)
_AXIAL_MIN_COS = 0.9


@dataclass
class FileOutcome:
    """Manifest status decided for one input file."""

    status: str
    reason: str
    series_uid: str = ""


@dataclass
class SubjectImages:
    """What one subject's images produced (rows for the store's tables)."""

    series: list[dict[str, Any]] = field(default_factory=list)
    visits: list[dict[str, Any]] = field(default_factory=list)
    lesions: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    outcomes: dict[str, FileOutcome] = field(default_factory=dict)
    slices: int = 0


@dataclass
class _Series:
    uid: str
    study_uid: str
    records: list[FileRecord]
    geometry: SeriesGeometry | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def thickness(self) -> float:
        value = self.meta.get("SliceThickness")
        spacing = self.geometry.spacing_mm if self.geometry else 0.0
        return float(value) if value not in (None, "") else spacing

    @property
    def axial(self) -> bool:
        if self.geometry is None:
            return False
        cosines = self.geometry.slices[0].orientation
        return abs(float(np.cross(cosines[:3], cosines[3:6])[2])) >= _AXIAL_MIN_COS


def _prepare(records: list[FileRecord], who: PatientPseudonym, secret: bytes) -> list[_Series]:
    by_series: dict[str, list[FileRecord]] = {}
    for record in records:
        by_series.setdefault(record.series_uid, []).append(record)
    out: list[_Series] = []
    for uid, members in sorted(by_series.items()):
        series = _Series(uid=uid, study_uid=members[0].study_uid, records=members)
        try:
            series.geometry = plan_series([plane for r in members for plane in r.slices])
        except SeriesAssemblyError as exc:
            series.error = str(exc)
        header = pydicom.dcmread(members[0].path, stop_before_pixels=True)
        series.meta = kept_attributes(deidentify(header, who, secret))
        out.append(series)
    return out


def _select(study: list[_Series]) -> _Series | None:
    """The protocol series of a study: axial, thinnest slices, then most slices."""
    usable = [s for s in study if s.geometry is not None and s.axial]
    if not usable:
        return None
    return min(usable, key=lambda s: (s.thickness, -len(s.geometry.slices) if s.geometry else 0, s.uid))


@dataclass
class SubjectContext:
    """Inputs for one subject: identity, annotations of this subject, protocol and where to write."""

    who: PatientPseudonym
    secret: bytes
    first_dose: date | None
    protocol: StudyProtocol
    store: Path
    annotations: list[FileRecord]
    sidecars: dict[str, tuple[FileRecord, dict[str, Any]]]
    writer: BackgroundWriter | None = None  # in-process runs overlap gzip with reading; None: write inline

    def write_volume(self, path: Path, array: np.ndarray, affine: np.ndarray, description: str) -> None:
        """Write a NIfTI volume, on the background writer when there is one."""
        if self.writer is not None:
            self.writer.submit(path, array, affine, description)
        else:
            write_nifti(path, array, affine, description)


def build_subject(ct_records: list[FileRecord], ctx: SubjectContext) -> SubjectImages:
    """Assemble, select, label and write every study of one subject."""
    result = SubjectImages()
    all_series = _prepare(ct_records, ctx.who, ctx.secret)
    studies: dict[str, list[_Series]] = {}
    for series in all_series:
        studies.setdefault(series.study_uid, []).append(series)
    dates = {uid: parse_da(next(iter(s.records)).study_date) for uid, group in studies.items() for s in group[:1]}
    labels = label_studies([(uid, dates[uid]) for uid in studies], ctx.first_dose, ctx.protocol)
    for study_uid, group in sorted(studies.items()):
        visit, ady, why_unscheduled = labels[study_uid]
        chosen = _select(group)
        for series in group:
            role, reason = _role(series, chosen, why_unscheduled)
            result.series.append(_series_row(series, ctx, visit, ady, role, reason))
            _record_outcomes(result, series, role, reason, ctx.secret)
        if chosen is not None:
            try:
                _build_visit(chosen, visit, ady, ctx, result, why_unscheduled)
            except Exception as exc:  # undecodable pixels must not stop the site: record and go on
                _unreadable(chosen, visit, ctx, result, exc)
    return result


def _unreadable(series: _Series, visit: str, ctx: SubjectContext, result: SubjectImages, exc: Exception) -> None:
    uid = remap_uid(series.uid, ctx.secret)
    reason = f"pixel data could not be read ({type(exc).__name__}: {exc})"[:300]
    log.warning("%s %s: %s", ctx.who.usubjid, visit, reason)
    for record in series.records:
        if result.outcomes.get(record.relpath, FileOutcome("", "")).status == "INGESTED":
            result.outcomes[record.relpath] = FileOutcome("SKIPPED", reason, uid)
    result.findings.append(Finding(ctx.who.usubjid, visit, uid, "PIXEL_DATA", "REJECT", "", reason))
    result.visits = [v for v in result.visits if not (v["USUBJID"] == ctx.who.usubjid and v["VISIT"] == visit)]
    if ctx.writer is not None:
        ctx.writer.wait()  # a queued write of this visit must land before its folder is removed
    shutil.rmtree(ctx.store / "images" / ctx.who.usubjid / visit, ignore_errors=True)  # no orphan volume


def _role(series: _Series, chosen: _Series | None, why_unscheduled: str) -> tuple[str, str]:
    if series.error:
        return "OTHER", f"not assembled: {series.error}"
    if series is chosen:
        note = f"; unscheduled: {why_unscheduled}" if why_unscheduled else ""
        return "PROTOCOL", f"axial, thinnest slices ({series.thickness:g} mm) of its study{note}"
    if not series.axial:
        return "OTHER", "not axial"
    assert chosen is not None
    return "OTHER", f"not selected: {series.thickness:g} mm slices vs the protocol series' {chosen.thickness:g} mm"


def _series_row(series: _Series, ctx: SubjectContext, visit: str, ady: int | None, role: str,
                reason: str) -> dict[str, Any]:
    geo, meta = series.geometry, series.meta
    spacing = meta.get("PixelSpacing") or [None, None]
    return {
        "USUBJID": ctx.who.usubjid, "VISIT": visit, "ADY": ady,
        "STUDY_UID": remap_uid(series.study_uid, ctx.secret), "SERIES_UID": remap_uid(series.uid, ctx.secret),
        "MODALITY": str(meta.get("Modality", "")), "SOP_CLASS": str(meta.get("SOPClassUID", "")), "ROLE": role,
        "REASON": reason, "N_FILES": len(series.records), "ROWS": meta.get("Rows"), "COLUMNS": meta.get("Columns"),
        "N_SLICES": len(geo.slices) if geo else 0, "PIXEL_SPACING_MM": float(spacing[0]) if spacing[0] else None,
        "SLICE_SPACING_MM": geo.spacing_mm if geo else None, "SLICE_THICKNESS_MM": series.thickness or None,
        "TILT_DEG": geo.tilt_deg if geo else None, "CONVOLUTION_KERNEL": str(meta.get("ConvolutionKernel", "")),
        "MANUFACTURER": str(meta.get("Manufacturer", "")), "STUDY_DATE": str(meta.get("StudyDate", "")),
    }


def _record_outcomes(result: SubjectImages, series: _Series, role: str, reason: str, secret: bytes) -> None:
    uid = remap_uid(series.uid, secret)
    duplicates = {str(p) for p in (series.geometry.duplicates if series.geometry else [])}
    for record in series.records:
        if str(record.path) in duplicates and not record.frames:  # a multi-frame file is kept whole
            result.outcomes[record.relpath] = FileOutcome("DUPLICATE", "same slice position or SOP instance", uid)
        elif series.error:
            result.outcomes[record.relpath] = FileOutcome("SKIPPED", reason, uid)
        elif role == "PROTOCOL":
            result.outcomes[record.relpath] = FileOutcome("INGESTED", "protocol CT series", uid)
        else:
            result.outcomes[record.relpath] = FileOutcome("RECORDED", reason, uid)


def _annotation_for(series: _Series, ctx: SubjectContext) -> tuple[str, FileRecord | None, dict[str, Any] | None]:
    """The annotation drawn on this series; an RTSTRUCT drawn on another series of the same study (e.g. the
    5 mm reconstruction) also fits, its contours being in patient coordinates."""
    fallback: FileRecord | None = None
    for record in ctx.annotations:
        dataset = pydicom.dcmread(record.path, stop_before_pixels=True)
        reference = (ann.referenced_series(dataset) if record.kind == "RTSTRUCT"
                     else ann.seg_referenced_series(dataset))
        if reference == series.uid or (not reference and record.study_uid == series.study_uid):
            return record.kind, record, None
        if record.kind == "RTSTRUCT" and record.study_uid == series.study_uid:
            fallback = record
    if fallback is not None:
        return fallback.kind, fallback, None
    if series.uid in ctx.sidecars:
        record, sidecar = ctx.sidecars[series.uid]
        return "NIFTI", record, sidecar
    return "", None, None


def _build_visit(series: _Series, visit: str, ady: int | None, ctx: SubjectContext, result: SubjectImages,
                 why_unscheduled: str) -> None:
    assert series.geometry is not None
    uid = remap_uid(series.uid, ctx.secret)
    where = (ctx.who.usubjid, visit, uid)
    result.findings += geometry_findings(where, series.geometry, series.thickness, ctx.protocol)
    if why_unscheduled:
        shown = "" if ady is None else str(ady)
        result.findings.append(Finding(*where, "VISIT_WINDOW", "WARN", shown,
                                       f"unscheduled study kept, not a protocol visit: {why_unscheduled}"))
    volume, affine = load_volume(series.geometry)
    result.slices += volume.shape[2]
    result.findings += air_finding(where, volume, ctx.protocol)
    folder = Path("images") / ctx.who.usubjid / visit
    ctx.write_volume(ctx.store / folder / "ct.nii.gz", volume, affine, f"fedresponse CT {ctx.who.usubjid} {visit}")
    row: dict[str, Any] = {"USUBJID": ctx.who.usubjid, "VISIT": visit, "VISITNUM": _visitnum(visit, ctx.protocol),
                           "ADY": ady, "STUDY_DATE": shift_date(next(iter(series.records)).study_date,
                                                                ctx.who.date_shift_days),
                           "SERIES_UID": uid, "CT_PATH": str(folder / "ct.nii.gz"), "LABEL_PATH": "",
                           "LABELS_JSON": "", "SHAPE": list(volume.shape),
                           "SPACING_MM": [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)]}
    kind, record, sidecar = _annotation_for(series, ctx)
    if record is not None:
        try:
            labels, names = _rasterise(kind, record, sidecar, volume.shape, affine)
        except (AnnotationError, ValueError, AttributeError, KeyError, IndexError) as exc:
            result.outcomes[record.relpath] = FileOutcome("SKIPPED", f"annotation not placed: {exc}"[:300], uid)
            result.findings.append(Finding(*where, "ANNOTATION", "REJECT", kind, f"annotation not placed: {exc}"))
        else:
            ctx.write_volume(ctx.store / folder / "labels.nii.gz", labels, affine, f"fedresponse labels {visit}")
            write_json(ctx.store / folder / "labels.json", {"labels": {str(k): v for k, v in names.items()},
                                                            "source": kind})
            row["LABEL_PATH"], row["LABELS_JSON"] = str(folder / "labels.nii.gz"), str(folder / "labels.json")
            lesions = lesion_rows(where, labels, names, float(abs(np.linalg.det(affine[:3, :3]))),
                                  ctx.protocol.imaging.lesion_margin_voxels)
            result.lesions += lesions
            result.findings += coverage_findings(where, lesions)
            result.outcomes[record.relpath] = FileOutcome("INGESTED", f"{kind} annotation → labels.nii.gz", uid)
    else:
        result.findings.append(Finding(*where, "ANNOTATION", "WARN", "", "no annotation found for this series"))
    result.visits.append(row)


def _rasterise(kind: str, record: FileRecord, sidecar: dict[str, Any] | None, shape: tuple[int, ...],
               affine: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    shape3 = (int(shape[0]), int(shape[1]), int(shape[2]))
    if kind == "RTSTRUCT":
        return ann.rasterise_rtstruct(ann.read_annotation(record.path), shape3, affine)
    if kind == "SEG":
        return ann.rasterise_seg(ann.read_annotation(record.path), shape3, affine)
    return ann.read_nifti_mask(record.path, sidecar or {}, shape3, affine)


def _visitnum(visit: str, protocol: StudyProtocol) -> float:
    if visit in protocol.timepoints:
        return float(protocol.timepoints[visit].visitnum)
    return 90.0 + float(visit[3:] or 0)  # unscheduled visits sort after the protocol ones
