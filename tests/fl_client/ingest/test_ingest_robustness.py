"""Every file of pydicom's own test corpus, plus truncated, empty and non-DICOM files, goes through ingest
without a crash and is accounted for in the manifest (issue 3, item 8)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ingest_fixtures import PASSPHRASE
from pydicom.data import get_testdata_files

from fl_client.ingest.manifest import STATUSES
from fl_client.ingest.pipeline import IngestConfig, ingest_site
from privacy.audit import verify_chain


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    rng = np.random.default_rng(3)
    src = tmp_path_factory.mktemp("corpus") / "export"
    pacs = src / "pacs"
    pacs.mkdir(parents=True)
    corpus = sorted(Path(f) for f in get_testdata_files() if Path(f).is_file())
    assert len(corpus) > 150  # the wheel ships its test files; if not, this test must not pass vacuously
    for index, path in enumerate(corpus):
        folder = pacs / f"{index % 7}"  # opaque nested names, no extensions
        folder.mkdir(exist_ok=True)
        data = path.read_bytes()
        (folder / f"f{index:03d}").write_bytes(data)
        if index % 5 == 0:  # truncated copies: cut at a random byte
            (folder / f"t{index:03d}").write_bytes(data[: int(rng.integers(1, max(2, len(data))))])
    (pacs / "empty").write_bytes(b"")
    (pacs / "readme").write_text("exported by PACS 7.1\n")
    (pacs / "noise").write_bytes(rng.bytes(4096))
    (pacs / "fake.dcm").write_bytes(b"\0" * 128 + b"DICM" + rng.bytes(300))  # DICM marker, garbage after
    out = src.parent / "stores" / "S07"
    ingest_site(src, out, IngestConfig(site="S07", passphrase=PASSPHRASE, scrypt_n=2**12, workers=1))
    return src, pd.read_parquet(out / "manifest.parquet")


def test_every_file_is_accounted_for(corpus_run: tuple[Path, pd.DataFrame]) -> None:
    src, manifest = corpus_run
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    assert sorted(manifest["SOURCE_PATH"]) == files
    assert set(manifest["STATUS"]) <= set(STATUSES)
    assert manifest.loc[manifest["STATUS"] != "INGESTED", "REASON"].str.len().min() > 5
    reasons = dict(zip(manifest["SOURCE_PATH"], manifest["REASON"], strict=True))
    assert reasons["pacs/empty"] == "empty file"
    assert "not a DICOM file" in reasons["pacs/readme"] and "not a DICOM file" in reasons["pacs/noise"]
    assert "DICOM" in reasons["pacs/fake.dcm"]
    assert (manifest["STATUS"] == "INGESTED").sum() >= 1  # the corpus' CT series is really ingested


def test_corpus_store_is_consistent(corpus_run: tuple[Path, pd.DataFrame]) -> None:
    src, _ = corpus_run
    store = src.parent / "stores" / "S07"
    assert verify_chain(store / "audit.jsonl") == []
    visits = pd.read_parquet(store / "visits.parquet")
    for path in visits["CT_PATH"]:
        assert (store / path).is_file()
    shutil.rmtree(src)  # nothing in the store points back into the export
    assert (store / "manifest.parquet").exists()
