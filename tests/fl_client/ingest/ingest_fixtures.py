"""Small, fully controlled DICOM exports written with pydicom (seeded), for the ingest tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

IBSI = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "ibsi" / "ibsi_1_ct_radiomics_phantom"
PASSPHRASE = "correct horse battery staple"

# PHI planted in every header written here; a de-identified store must contain none of it.
PLANTED = {
    "PatientName": "ZHOUQUANLIN^MEIXIANG", "PatientBirthDate": "19510317", "InstitutionName": "Qingshui Hospital",
    "ReferringPhysicianName": "DRNAMEX^FENGYU", "AccessionNumber": "ACCX7781234", "StationName": "CTSTNX991",
    "OperatorsName": "TECH^LUOWENQIAN", "DeviceSerialNumber": "SNX44421987", "OtherPatientIDs": "INSX5550001",
}


def ct_slice(*, patient_id: str, study_uid: str, series_uid: str, frame_uid: str, position: Sequence[float],
             pixels: np.ndarray, spacing: tuple[float, float] = (0.8, 0.8), thickness: float = 1.0,
             study_date: str = "20260301", orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
             instance: int = 1, intercept: float = -1024.0, slope: float = 1.0) -> Dataset:
    """One single-frame CT Image Storage slice with planted PHI (stored value = HU - intercept)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CT", patient_id
    for keyword, value in PLANTED.items():
        setattr(ds, keyword, value)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.StudyDate = ds.SeriesDate = study_date
    ds.StudyDescription = f"CT CHEST {PLANTED['PatientName']}"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = thickness
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope = intercept, slope
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint16)).tobytes()
    ds.add_new(0x00091001, "LO", f"private {PLANTED['PatientName']}")  # private tag: must vanish
    return ds


def phantom(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """(rows, cols, K) stored values (HU + 1024): air (-1000 HU) around an elliptic 'body' (40 HU), noisy."""
    rows, cols, _ = shape
    hu = np.full(shape, -1000.0)
    rr, cc = np.mgrid[:rows, :cols]
    body = (rr - rows / 2) ** 2 / (rows / 3) ** 2 + (cc - cols / 2) ** 2 / (cols / 3) ** 2 <= 1
    hu[body] = 40.0
    hu += rng.normal(0, 5, shape)
    return np.clip(np.rint(hu + 1024), 0, 4095)


def write_series(folder: Path, *, patient_id: str, study_uid: str, n: int = 8, spacing_z: float = 1.0,
                 rng: np.random.Generator, thickness: float = 1.0, study_date: str = "20260301",
                 shape: tuple[int, int] = (24, 20), tilt_mm: float = 0.0, skip: Sequence[int] = (),
                 series_uid: str | None = None) -> tuple[str, np.ndarray, list[Path]]:
    """Write one axial series with opaque, shuffled file names; returns (series uid, stored volume, files)."""
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    volume = phantom(rng, (*shape, n))
    files: list[Path] = []
    folder.mkdir(parents=True, exist_ok=True)
    order = rng.permutation(n)
    for k in range(n):
        if k in skip:
            continue
        ds = ct_slice(patient_id=patient_id, study_uid=study_uid, series_uid=series_uid, frame_uid=frame_uid,
                      position=(-10.0, -12.0 + tilt_mm * k, 30.0 + spacing_z * k), pixels=volume[:, :, k],
                      thickness=thickness, study_date=study_date, instance=int(order[k]) + 1)
        path = folder / f"x{rng.integers(10**9):x}"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return series_uid, volume, files


def date_plus(base: str, days: int) -> str:
    """``YYYYMMDD`` + days."""
    day = dt.date(int(base[:4]), int(base[4:6]), int(base[6:])) + dt.timedelta(days=days)
    return day.strftime("%Y%m%d")


def read(path: Path) -> Dataset:
    return pydicom.dcmread(path)
