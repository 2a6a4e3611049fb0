"""The built-in synthetic cohort: every site ingests; no planted PHI survives; every seeded CRF error is
queried; RTSTRUCT, SEG and NIfTI annotations all land on their CT with the generator's true volumes."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pandas as pd
import pytest
from ingest_fixtures import PASSPHRASE

from evaluation.protocol import load_protocol
from fl_client.crf.checks import run_checks
from fl_client.crf.dvp import load_dvp
from fl_client.ingest.pipeline import IngestConfig, ingest_site
from fl_client.store import SiteStore

synth_tables = pytest.importorskip("synth.tables", reason="the synth package is not importable")


def test_every_seeded_error_type_is_queried() -> None:
    """All 17 error types of the generator (synth.tables.SEEDED_ERRORS), each on a clean row, raise a
    query on the subject and field the generator names (cheap: no images needed)."""
    clean = {
        "USUBJID": "FEDRESP-S01-0001", "SUBJID": "0001", "SITEID": "S01", "AGE": "64", "SEX": "M",
        "HEIGHT_CM": "172", "WEIGHT_KG": "70", "SMOKING": "FORMER", "PACKYEARS": "20", "ECOG": "1", "STAGE": "IVA",
        "HISTOLOGY": "ADENOCARCINOMA", "EGFR": "NEGATIVE", "ALK": "NEGATIVE", "PDL1_TPS": "50",
        "REGIMEN": "PEMBROLIZUMAB+CARBOPLATIN+PEMETREXED", "LINE": "1", "PRIOR_RT": "N", "PRIOR_RT_TARGET": "N",
        "OTHER_MALIGNANCY": "N", "ORGAN_FUNCTION": "ADEQUATE", "CONSENT_DATE": "2026-01-02",
        "FIRST_DOSE_DATE": "2026-01-10", "T0_DATE": "2026-01-03", "T1_DATE": "2026-03-13", "T2_DATE": "2026-04-24",
        "PD_DATE": "", "NEW_THERAPY_DATE": "", "DEATH_DATE": "", "LAST_CONTACT_DATE": "2026-09-01",
    }
    plan, protocol = load_dvp(), load_protocol()
    missed = []
    for kind, field, corrupt, description in synth_tables.SEEDED_ERRORS:
        row = dict(clean)
        if kind == "CROSS_FIELD":
            row["SMOKING"], row["PACKYEARS"] = "NEVER", "0"
        row[field] = str(corrupt(row))
        queries = run_checks(pd.DataFrame([row]), plan, protocol)
        if not ((queries["USUBJID"] == row["USUBJID"]) & (queries["FIELD"] == field)).any():
            missed.append((kind, field, description))
    assert missed == []


@pytest.fixture(scope="module")
def cohort_and_stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from synth.cohort import synthesize

    root = tmp_path_factory.mktemp("synth")
    cohort = root / "cohort"
    synthesize(cohort, 3, 1, seed=11, preset_name="quick", workers=2)
    for site in ("S01", "S02", "S03"):
        ingest_site(cohort / site, root / "stores" / site,
                    IngestConfig(site=site, passphrase=PASSPHRASE, scrypt_n=2**12, who="pytest"))
    return cohort, root / "stores"


def _texts(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        return [data, gzip.decompress(data)]
    if path.suffix == ".parquet":
        return [data, pd.read_parquet(path).to_csv().encode("utf-8")]
    return [data]


@pytest.mark.slow
def test_no_planted_phi_in_any_store_byte(cohort_and_stores: tuple[Path, Path]) -> None:
    cohort, stores = cohort_and_stores
    phi = pd.read_csv(cohort / "truth" / "phi.csv", dtype=str, keep_default_na=False)
    needles = {v for v in phi["VALUE"] if v} | {v.replace("^", " ") for v in phi["VALUE"] if "^" in v}
    enrolment = pd.concat([pd.read_csv(cohort / s / "enrolment_log.csv", dtype=str) for s in ("S01", "S02", "S03")])
    needles |= set(enrolment["PatientID"]) | set(enrolment["PatientName"]) | set(enrolment["PatientBirthDate"])
    pattern = re.compile(b"|".join(re.escape(n.encode("utf-8")) for n in sorted(needles, key=len, reverse=True)))
    leaks = {(p.name, m.group()) for p in stores.rglob("*") if p.is_file() for t in _texts(p)
             if (m := pattern.search(t))}
    assert len(needles) > 20 and leaks == set()


@pytest.mark.slow
def test_seeded_crf_errors_are_all_queried(cohort_and_stores: tuple[Path, Path]) -> None:
    cohort, stores = cohort_and_stores
    errors = pd.read_csv(cohort / "truth" / "crf_errors.csv", dtype=str, keep_default_na=False)
    assert len(errors) >= 3
    for row in errors.itertuples():
        queries = SiteStore(stores / row.USUBJID.split("-")[1]).queries()
        assert ((queries["USUBJID"] == row.USUBJID) & (queries["FIELD"] == row.FIELD)).any(), row


@pytest.mark.slow
def test_annotations_of_every_format_match_the_truth(cohort_and_stores: tuple[Path, Path]) -> None:
    cohort, stores = cohort_and_stores
    truth = pd.read_csv(cohort / "truth" / "lesions.csv")
    ours = pd.concat([SiteStore(stores / s).lesions() for s in ("S01", "S02", "S03")])
    merged = truth.merge(ours, on=["USUBJID", "VISIT", "LESIONID"], how="left", suffixes=("_TRUE", ""))
    imaged = merged[merged["VISIT"].isin(["T0", "T1", "T2"]) & (merged["TRUE_VOLUME_MM3"] > 0)]
    assert imaged["VOLUME_MM3"].notna().all(), imaged[imaged["VOLUME_MM3"].isna()]
    ratio = imaged["VOLUME_MM3"] / imaged["TRUE_VOLUME_MM3"]
    assert ratio.between(0.98, 1.02).all(), imaged.assign(ratio=ratio)
    assert (imaged["TOUCHES_EDGE"].astype(bool) == imaged["TOUCHES_EDGE_TRUE"].astype(bool)).all()


@pytest.mark.slow
def test_visits_extras_and_nothing_lost(cohort_and_stores: tuple[Path, Path]) -> None:
    cohort, stores = cohort_and_stores
    series = pd.read_csv(cohort / "truth" / "series.csv", dtype=str, keep_default_na=False)
    for site in ("S01", "S02", "S03"):
        store = SiteStore(stores / site)
        expected = series[series["USUBJID"].str.contains(f"-{site}-")]
        got = store.visits()
        assert set(zip(got["USUBJID"], got["VISIT"], strict=True)) == set(
            zip(expected["USUBJID"], expected["VISIT"], strict=True))
        assert sorted(got["ADY"].astype(int)) == sorted(expected["ADY"].astype(int))
        manifest = store.table("manifest")
        files = [p for p in (cohort / site).rglob("*") if p.is_file()]
        assert len(manifest) == len(files)
        n_thick = sum(int(x.split(":")[1]) for e in expected["EXTRA"] for x in e.split(";") if x.startswith("thick"))
        assert (manifest["STATUS"] == "RECORDED").sum() == n_thick
        n_burned = sum(int(x.split(":")[1]) for e in expected["EXTRA"] for x in e.split(";") if x.startswith("burned"))
        assert (manifest["REASON"].str.contains("BurnedInAnnotation")).sum() == n_burned
