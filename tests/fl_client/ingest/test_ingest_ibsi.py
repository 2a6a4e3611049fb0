"""The real IBSI CT phantom (DICOM + RTSTRUCT) must ingest to its own NIfTI twin (issue 3, item 3)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from ingest_fixtures import IBSI, PASSPHRASE
from typer.testing import CliRunner

from fedresponse.cli import app
from fl_client.exceptions import StoreError
from fl_client.store import SiteStore
from privacy.audit import verify_chain

pytestmark = pytest.mark.skipif(not (IBSI / "dicom").is_dir(), reason=f"IBSI phantom not found at {IBSI}")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ibsi") / "store"
    result = CliRunner().invoke(app, ["ingest", str(IBSI / "dicom"), "--site", "S09", "--out", str(out)],
                                env={"FEDRESPONSE_REID_PASSPHRASE": PASSPHRASE})
    assert result.exit_code == 0, result.output
    assert "files ingested" in result.output
    return out


def test_volume_and_geometry_match_the_nifti_twin(store: Path) -> None:
    site = SiteStore(store)
    visits = site.visits()
    assert len(visits) == 1
    usubjid, visit = visits["USUBJID"].iloc[0], visits["VISIT"].iloc[0]
    assert usubjid == "FEDRESP-S09-0001"
    ct, affine = site.ct(usubjid, visit)
    twin = nib.load(IBSI / "nifti" / "image" / "phantom.nii.gz")
    assert ct.shape == (204, 201, 60)
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [0.977, 0.977, 3.0], atol=1e-4)
    np.testing.assert_allclose(affine, twin.affine, atol=1e-3)
    np.testing.assert_array_equal(ct, twin.get_fdata())


def test_rtstruct_mask_agrees_with_the_nifti_mask(store: Path) -> None:
    site = SiteStore(store)
    labels, names = site.labels("FEDRESP-S09-0001", site.visits()["VISIT"].iloc[0])
    assert names == {1: "GTV-1"}
    reference = np.asarray(nib.load(IBSI / "nifti" / "mask" / "mask.nii.gz").dataobj) > 0
    ours = labels == 1
    dice = 2 * np.count_nonzero(ours & reference) / (np.count_nonzero(ours) + np.count_nonzero(reference))
    assert dice >= 0.98
    lesions = site.lesions()
    assert lesions["N_VOXELS"].tolist() == [np.count_nonzero(ours)]
    assert not lesions["TOUCHES_EDGE"].any()


def test_phantom_ingests_but_is_ineligible_for_its_3mm_slices(store: Path) -> None:
    site = SiteStore(store)
    qc = site.qc()
    thickness = qc[qc["CHECK"] == "SLICE_THICKNESS"]
    assert thickness["SEVERITY"].tolist() == ["REJECT"] and thickness["VALUE"].tolist() == ["3"]
    assert set(qc["CHECK"]) >= {"VISIT_MISSING", "MEASURABLE_LESION"}  # no dates, no reads: not a trial subject
    assert "AIR_HU" not in set(qc["CHECK"])  # the phantom's air sits at -1000 HU
    row = site.eligibility().iloc[0]
    assert not row["ELIGIBLE"] and "SLICE_THICKNESS" in row["REASONS"]
    manifest = site.table("manifest")
    assert len(manifest) == 61 and set(manifest["STATUS"]) == {"INGESTED"}


def test_audit_log_intact_and_key_outside_store(store: Path) -> None:
    assert verify_chain(store / "audit.jsonl") == []
    assert (store.parent / "S09.reid.enc").exists()
    assert not list(store.rglob("*.reid.enc"))
    result = CliRunner().invoke(app, ["audit", "verify", str(store)])
    assert result.exit_code == 0 and "intact" in result.output


def test_store_errors_say_what_to_do(store: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="fedresponse ingest"):
        SiteStore(tmp_path)
    with pytest.raises(StoreError, match="this subject has"):
        SiteStore(store).ct("FEDRESP-S09-0001", "T1")


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--site", "site1"], {"FEDRESPONSE_REID_PASSPHRASE": PASSPHRASE}, "site code must be 2-8 capital letters"),
    (["--site", "S-1"], {"FEDRESPONSE_REID_PASSPHRASE": PASSPHRASE}, "but was 'S-1'"),
    (["--site", "S01"], {"FEDRESPONSE_REID_PASSPHRASE": ""}, "no re-identification passphrase"),
])
def test_cli_fatal_errors_exit_non_zero_with_the_remedy(tmp_path: Path, args: list[str], env: dict[str, str],
                                                        message: str) -> None:
    result = CliRunner().invoke(app, ["ingest", str(IBSI / "dicom"), "--out", str(tmp_path / "s"), *args], env=env)
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "s" / "manifest.parquet").exists()
