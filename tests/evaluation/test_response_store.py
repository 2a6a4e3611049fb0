"""``fedresponse assess STORE``: the store form reads the site store through its API, measures the masks,
writes STORE/assessment/ and audits the lock in the store's own hash-chained log."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from response_tables import table
from typer.testing import CliRunner

from fedresponse.cli import app
from fl_client.store import STORE_FORMAT
from privacy.audit import AuditLog, verify_chain

S = "FEDRESP-S01-0001"
VISITS = [("T0", -7, {"T1": 20.0, "N1": 16.0}), ("T1", 62, {"T1": 12.0, "N1": 9.0}),
          ("T2", 104, {"T1": 11.0, "N1": 8.0})]


def _store(root: Path) -> Path:
    """A minimal store in the documented layout (docs/store.md): one subject, masks at T0."""
    root.mkdir()
    (root / "store.json").write_text(json.dumps({"format": STORE_FORMAT, "site_id": "S01", "study_id": "FEDRESP"}))
    pd.DataFrame({"SOURCE_PATH": [], "STATUS": []}).to_parquet(root / "manifest.parquet")
    reads = pd.concat([table(VISITS, subject=S, reader="R1"), table(VISITS, subject=S, reader="R2")])
    reads.to_parquet(root / "measurements.parquet")
    pd.DataFrame({"USUBJID": [S], "SUBJID": ["0001"], "SITEID": ["S01"], "AGE": ["64"], "SEX": ["F"],
                  "FIRST_DOSE_DATE": ["2027-01-01"], "DEATH_DATE": [""], "NEW_THERAPY_DATE": [""]}
                 ).to_parquet(root / "crf.parquet")
    folder = root / "images" / S / "T0"
    folder.mkdir(parents=True)
    labels = np.zeros((60, 60, 10), np.uint8)
    i, j = np.meshgrid(np.arange(60), np.arange(60), indexing="ij")
    labels[((i - 20) / 10.0) ** 2 + ((j - 20) / 5.0) ** 2 <= 1, 3:6] = 1   # 20 × 10 mm lesion
    labels[((i - 45) / 9.0) ** 2 + ((j - 45) / 8.0) ** 2 <= 1, 4:6] = 2    # node, short axis 16 mm
    nib.save(nib.Nifti1Image(labels, np.diag([1.0, 1.0, 2.0, 1.0])), folder / "labels.nii.gz")
    (folder / "labels.json").write_text(json.dumps({"labels": {"1": "T1", "2": "N1"}, "source": "NIFTI"}))
    pd.DataFrame({"USUBJID": [S], "SUBJID": ["0001"], "SITEID": ["S01"], "HAS_IMAGES": [True]}
                 ).to_parquet(root / "subjects.parquet")
    pd.DataFrame({"USUBJID": [S], "ELIGIBLE": [True], "REASONS": [""]}).to_parquet(root / "eligibility.parquet")
    pd.DataFrame({"QUERY_ID": ["Q00001"], "USUBJID": [S], "FIELD": ["DEATH_DATE"], "VALUE": ["x"],
                  "RULE_ID": ["DAT-VALID"], "SEVERITY": ["SOFT"], "MESSAGE": ["m"]}
                 ).to_parquet(root / "queries.parquet")
    pd.DataFrame([{"USUBJID": S, "VISIT": "T0", "VISITNUM": 0, "ADY": -7, "CT_PATH": f"images/{S}/T0/ct.nii.gz",
                   "LABEL_PATH": f"images/{S}/T0/labels.nii.gz", "LABELS_JSON": f"images/{S}/T0/labels.json"}]
                 ).to_parquet(root / "visits.parquet")
    return root


def test_store_form(tmp_path: Path) -> None:
    store = _store(tmp_path / "store")
    result = CliRunner().invoke(app, ["assess", str(store), "--lock", "--who", "site-irc"])
    assert result.exit_code == 0, result.output
    out = store / "assessment"
    assert pd.read_csv(out / "subjects.csv")["BOR"].tolist() == ["PR"]  # 36 → 21 mm: −41.7 %
    auto = pd.read_csv(out / "auto_measurements.csv").set_index("LESIONID")
    assert auto.at["T1", "AUTO_DIAM_MM"] == pytest.approx(20.0, abs=1.0)
    assert auto.at["N1", "AUTO_DIAM_MM"] == pytest.approx(16.0, abs=1.0)
    log = AuditLog(store / "audit.jsonl")
    assert [e.action for e in log.entries()] == ["assessment.lock"] and verify_chain(log.path) == []
    assert "automated_vs_readers" in json.loads((out / "agreement.json").read_text())
    pop = pd.read_csv(out / "populations.csv", keep_default_na=False)  # only T0 was scanned: not in EFFFL
    assert pop.loc[0, ["USUBJID", "SITEID", "ITTFL", "ELIGFL", "EFFFL", "PFSFL"]].tolist() == [S, "S01", "Y", "Y",
                                                                                               "N", "N"]
    assert pop.loc[0, "EXCLREAS"] == "no protocol CT at T1, T2"
    assert "population EFFFL" in result.output
    adsl = pd.read_csv(out / "adam" / "adsl.csv", keep_default_na=False)  # the site's own ADaM rows
    assert adsl.loc[0, ["USUBJID", "EFFFL", "EXCLREAS"]].tolist() == [S, "N", "no protocol CT at T1, T2"]
    assert len(pd.read_csv(out / "adam" / "adtte.csv")) == 0  # not in PFSFL: no time-to-event row
    assert set(pd.read_csv(out / "adam" / "adrs.csv")["PARAMCD"]) >= {"OVR", "BOR", "CBOR"}


def test_not_a_store_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["assess", str(tmp_path)])
    assert result.exit_code == 1 and "not a complete site store" in " ".join(result.output.split())
