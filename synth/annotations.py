"""Lesion annotations in the three forms hospitals export: RTSTRUCT, DICOM SEG and NIfTI.

All three are derived from the same label volume and map back onto the CT voxel grid exactly:
RTSTRUCT contours are traced at the 0.5 iso-line of each slice's binary mask, so that a pixel centre
lies inside the polygon set (even-odd rule) exactly when the pixel belongs to the lesion; SEG stores
the mask frames of the source slices; NIfTI stores the label volume with the nibabel RAS affine of
the series (DICOM LPS x and y negated).
"""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import RTStructureSetStorage
from skimage import measure

from synth.dicom_writer import StudyInfo, _common_header, _file_meta, uid

ROI_COLOURS = [[255, 0, 0], [0, 200, 0], [0, 0, 255], [255, 200, 0], [200, 0, 255], [0, 200, 200]]


def slice_contours(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed contours ``(N, 2)`` in (row, col) pixel units of a binary slice, holes included."""
    padded = np.pad(mask2d.astype(np.float32), 1)
    contours = measure.find_contours(padded, 0.5)
    return [c[:-1] - 1.0 for c in contours if len(c) > 3]


def rtstruct_dataset(
    info: StudyInfo, ct: list[Dataset], labels: np.ndarray, label_map: dict[int, str], series_uid: str
) -> Dataset:
    """An RT Structure Set with one ROI per lesion, contours referencing the CT slices they lie on."""
    ds = _common_header(info, RTStructureSetStorage, "RTSTRUCT")
    ds.Manufacturer = "Hospital TPS"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 300
    ds.SeriesDescription = "Lesion contours"
    ds.SOPInstanceUID = uid(series_uid, "rt")
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "LESIONS"
    ds.StructureSetDate = ds.StudyDate
    ds.StructureSetTime = ds.StudyTime
    ds.ReferencedFrameOfReferenceSequence = Sequence([_frame_reference(info, ct)])
    rois, contours, observations = Sequence(), Sequence(), Sequence()
    for number, (label, lesion_id) in enumerate(sorted(label_map.items()), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = info.frame_uid
        roi.ROIName = lesion_id
        roi.ROIGenerationAlgorithm = "MANUAL"
        rois.append(roi)
        contours.append(_roi_contour(number, labels == label, ct))
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = "GTV"
        obs.ROIInterpreter = info.hospital.performing
        observations.append(obs)
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = contours
    ds.RTROIObservationsSequence = observations
    _file_meta(ds)
    return ds


def _frame_reference(info: StudyInfo, ct: list[Dataset]) -> Dataset:
    images = Sequence()
    for sl in ct:
        item = Dataset()
        item.ReferencedSOPClassUID = sl.SOPClassUID
        item.ReferencedSOPInstanceUID = sl.SOPInstanceUID
        images.append(item)
    series = Dataset()
    series.SeriesInstanceUID = ct[0].SeriesInstanceUID
    series.ContourImageSequence = images
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired, as TPSs use)
    study.ReferencedSOPInstanceUID = info.study_uid
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = info.frame_uid
    frame.RTReferencedStudySequence = Sequence([study])
    return frame


def _roi_contour(number: int, mask: np.ndarray, ct: list[Dataset]) -> Dataset:
    item = Dataset()
    item.ReferencedROINumber = number
    item.ROIDisplayColor = ROI_COLOURS[(number - 1) % len(ROI_COLOURS)]
    sequence = Sequence()
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        sl = ct[int(k)]
        x0, y0, z = (float(v) for v in sl.ImagePositionPatient)
        dy, dx = (float(v) for v in sl.PixelSpacing)
        for contour in slice_contours(mask[k]):
            c = Dataset()
            ref = Dataset()
            ref.ReferencedSOPClassUID = sl.SOPClassUID
            ref.ReferencedSOPInstanceUID = sl.SOPInstanceUID
            c.ContourImageSequence = Sequence([ref])
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(contour)
            points = np.column_stack([x0 + contour[:, 1] * dx, y0 + contour[:, 0] * dy, np.full(len(contour), z)])
            c.ContourData = [f"{v:.4f}" for v in points.ravel()]
            sequence.append(c)
    item.ContourSequence = sequence
    return item


def seg_dataset(
    info: StudyInfo, ct: list[Dataset], labels: np.ndarray, label_map: dict[int, str], series_uid: str
) -> Dataset:
    """A binary DICOM Segmentation (highdicom) with one segment per lesion."""
    ordered = sorted(label_map.items())
    remapped = np.zeros_like(labels)
    descriptions = []
    for number, (label, lesion_id) in enumerate(ordered, start=1):
        remapped[labels == label] = number
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=lesion_id,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        ))
    seg = hd.seg.Segmentation(
        source_images=ct, pixel_array=remapped, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=series_uid, series_number=301,
        sop_instance_uid=uid(series_uid, "seg"), instance_number=1, manufacturer="Hospital Annotation Station",
        manufacturer_model_name="Annotator", software_versions="2.4", device_serial_number=info.hospital.device_serial,
        series_description="Lesion segmentation",
    )
    return seg


def nifti_affine(spacing: tuple[float, float, float], origin: tuple[float, float, float]) -> np.ndarray:
    """nibabel RAS affine of an axial series stored as ``data[x, y, z]`` (voxel (0,0,0) at ``origin`` LPS)."""
    dz, dy, dx = spacing
    x0, y0, z0 = origin
    return np.array([[-dx, 0, 0, -x0], [0, -dy, 0, -y0], [0, 0, dz, z0], [0, 0, 0, 1]], dtype=float)


def write_nifti_annotation(
    path: Path, labels: np.ndarray, label_map: dict[int, str], spacing: tuple[float, float, float],
    origin: tuple[float, float, float], study_uid: str, series_uid: str,
) -> None:
    """Write ``path`` (.nii.gz) and its JSON sidecar linking it to the CT series and lesion ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)), nifti_affine(spacing, origin))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    nib.save(image, path)
    sidecar = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid,
               "labels": {str(k): v for k, v in sorted(label_map.items())}}
    path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar, indent=2))
