"""Site codes are site configuration: any 2-8 capitals/digits, not only ``S`` + two digits (issue 15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ingest_fixtures import PASSPHRASE, write_series

from evaluation.metrics import site_of
from evaluation.protocol import check_site_code
from fl_client.exceptions import IngestError
from fl_client.ingest.pipeline import IngestConfig, ingest_site
from fl_client.store import SiteStore
from synth.cohort import site_ids


@pytest.mark.parametrize("code", ["S01", "QY", "ZJU1", "A1B2C3D4"])
def test_valid_site_codes(code: str) -> None:
    assert check_site_code(code) == code
    assert site_of(f"FEDRESP-{code}-0007") == code


@pytest.mark.parametrize("code", ["", "Q", "qy", "S-1", "ABCDEFGHI", "S 1"])
def test_invalid_site_codes_name_the_value(code: str) -> None:
    with pytest.raises(ValueError, match=f"but was {code!r}"):
        check_site_code(code)


def test_synth_site_codes_are_validated() -> None:
    assert site_ids(2, ["QY", "ZJ"]) == ["QY", "ZJ"]
    assert site_ids(2) == ["S01", "S02"]
    with pytest.raises(ValueError, match="2 distinct sites"):
        site_ids(2, ["QY", "QY"])
    with pytest.raises(ValueError, match="'q-y'"):
        site_ids(1, ["q-y"])


def test_ingest_with_a_non_s_site_code(tmp_path: Path, rng: np.random.Generator) -> None:
    write_series(tmp_path / "src" / "pacs", patient_id="MRN1", study_uid="1.2.3.4", rng=rng)
    config = IngestConfig(site="QY", passphrase=PASSPHRASE, who="pytest", scrypt_n=2**12)
    ingest_site(tmp_path / "src", tmp_path / "QY", config)
    assert list(SiteStore(tmp_path / "QY").subjects()["USUBJID"]) == ["FEDRESP-QY-0001"]
    assert (tmp_path / "QY.reid.enc").exists()
    with pytest.raises(IngestError, match="but was 'q1'"):
        ingest_site(tmp_path / "src", tmp_path / "q1", IngestConfig(site="q1", passphrase=PASSPHRASE))
