"""Read API of the site study store (written by ``fedresponse ingest``; format in docs/store.md).

Every later stage at a site reads the store through :class:`SiteStore`, never by path arithmetic::

    store = SiteStore(Path("stores/S01"))
    for usubjid in store.subjects()["USUBJID"]:
        ct, affine = store.ct(usubjid, "T0")            # (I, J, K) HU, RAS+ mm affine
        labels, lesion_ids = store.labels(usubjid, "T0")  # same grid; {1: "L01", ...}
    reads = store.measurements()                          # lesion measurement table (response assessment)
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from fl_client.exceptions import StoreError

STORE_FORMAT = "fedresponse-site-store/1"


class SiteStore:
    """Read-only view of one site's study store.

    Parameters
    ----------
    path : Path
        The store folder (holding ``store.json`` and ``manifest.parquet``).

    Raises
    ------
    StoreError
        When the folder is not a complete store of a known format version.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        info_path = self.path / "store.json"
        if not info_path.exists() or not (self.path / "manifest.parquet").exists():
            raise StoreError(f"{self.path} is not a complete site store (no store.json/manifest.parquet); "
                             "run `fedresponse ingest SRC --site SXX --out STORE` first")
        if (self.path / ".pending" / "COMMIT").exists():
            raise StoreError(f"{self.path} holds an unfinished commit of an interrupted ingest; run "
                             "`fedresponse ingest` again for this site to complete it")
        self.info: dict[str, Any] = json.loads(info_path.read_text(encoding="utf-8"))
        if self.info.get("format") != STORE_FORMAT:
            raise StoreError(f"{self.path} has store format {self.info.get('format')!r}; this version reads "
                             f"{STORE_FORMAT!r} - re-ingest with this version")

    @property
    def site(self) -> str:
        """SITEID of the store."""
        return str(self.info["site_id"])

    @property
    def study_id(self) -> str:
        """STUDYID of the store."""
        return str(self.info["study_id"])

    def table(self, name: str) -> pd.DataFrame:
        """Any table by name (``"qc"``, ``"lesions"``, ``"manifest"``, ...)."""
        path = self.path / f"{name}.parquet"
        if not path.exists():
            raise StoreError(f"{self.path} has no table {name!r}")
        return pd.read_parquet(path)

    def subjects(self) -> pd.DataFrame:
        """One row per subject: USUBJID, SUBJID, SITEID, HAS_IMAGES."""
        return self.table("subjects")

    def series(self) -> pd.DataFrame:
        """Every DICOM series found, selected (ROLE = PROTOCOL) or not."""
        return self.table("series")

    @cached_property
    def _visits(self) -> pd.DataFrame:
        return self.table("visits")

    def visits(self) -> pd.DataFrame:
        """One row per (USUBJID, VISIT) with a protocol CT: ADY, paths, shape, spacing."""
        return self._visits.copy()

    def measurements(self) -> pd.DataFrame:
        """The lesion measurement table (ARCHITECTURE contract columns, optional READER)."""
        return self.table("measurements")

    def crf(self) -> pd.DataFrame:
        """The CRF extract, dates shifted like the images."""
        return self.table("crf")

    def queries(self) -> pd.DataFrame:
        """The edit-check query listing."""
        return self.table("queries")

    def eligibility(self) -> pd.DataFrame:
        """USUBJID, ELIGIBLE, REASONS (CRF criteria and imaging QC)."""
        return self.table("eligibility")

    def qc(self) -> pd.DataFrame:
        """Image QC and protocol findings."""
        return self.table("qc")

    def lesions(self) -> pd.DataFrame:
        """One row per annotated lesion per visit (label, LESIONID, voxels, volume in mm³)."""
        return self.table("lesions")

    def _row(self, usubjid: str, visit: str) -> pd.Series:
        rows = self._visits[(self._visits["USUBJID"] == usubjid) & (self._visits["VISIT"] == visit)]
        if rows.empty:
            have = sorted(self._visits.loc[self._visits["USUBJID"] == usubjid, "VISIT"])
            raise StoreError(f"no protocol CT for ({usubjid!r}, {visit!r}) in {self.path}; this subject has {have}")
        return rows.iloc[0]

    def ct(self, usubjid: str, visit: str) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
        """The CT volume in HU, shape (I, J, K) = (columns, rows, slices), and its 4 × 4 RAS+ affine (mm)."""
        image: Any = nib.load(self.path / str(self._row(usubjid, visit)["CT_PATH"]))
        return np.asarray(image.get_fdata(dtype=np.float32)), np.asarray(image.affine, dtype=np.float64)

    def labels(self, usubjid: str, visit: str) -> tuple[NDArray[np.integer], dict[int, str]]:
        """The lesion label volume (same grid as :meth:`ct`; 0 = background) and label → LESIONID."""
        row = self._row(usubjid, visit)
        if not row["LABEL_PATH"]:
            raise StoreError(f"({usubjid!r}, {visit!r}) has no annotation in {self.path}; see qc.parquet")
        image: Any = nib.load(self.path / str(row["LABEL_PATH"]))
        names = json.loads((self.path / str(row["LABELS_JSON"])).read_text(encoding="utf-8"))["labels"]
        return np.asarray(image.dataobj), {int(k): str(v) for k, v in names.items()}
