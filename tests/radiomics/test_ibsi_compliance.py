"""IBSI-1 compliance: the digital phantom and the CT phantom (configurations A–E) against the published
reference values, and the ``fedresponse radiomics ibsi`` command.

The counts asserted are the ones reached; a lower count is a regression. Texture families (helper B's
``radiomics.texture``) are held to a floor so that their fixes do not break this test.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radiomics.extractor import FAMILIES
from radiomics.ibsi import ComplianceRow, matches, read_reference, run_compliance, summarise

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ibsi"
needs_data = pytest.mark.skipif(not (DATA / "reference_values").is_dir(),
                                reason=f"IBSI data not found at {DATA} (CI provides ../shared/data/ibsi)")

CONFIGS = ("dig", "A", "B", "C", "D", "E")
# (matched, total) per family — identical on A–E; the digital phantom has no processing diagnostics.
OURS_CT = {"diagnostics": (60, 60), "morphology": (25, 25), "local intensity": (2, 2), "statistics": (18, 18),
           "intensity histogram": (23, 23), "intensity-volume histogram": (6, 6)}
OURS_DIG = {"morphology": (25, 25), "local intensity": (2, 2), "statistics": (18, 18),
            "intensity histogram": (23, 23), "intensity-volume histogram": (6, 6)}
TEXTURE = ("GLCM", "GLRLM", "GLSZM", "GLDZM", "NGTDM", "NGLDM")
# Texture matched counts reached when this test was written (floor) and totals (exact). Texture runs here only
# on the digital phantom and on configuration B (seconds); on A, C, D, E it takes ~20 s per configuration on a
# 2-core CPU, so those counts are reported by `fedresponse radiomics ibsi` (docs/radiomics.md), not tested.
TEXTURE_FLOOR = {"dig": (408, 408), "B": (272, 272)}


@pytest.mark.parametrize(
    ("value", "reference", "tolerance", "expected"),
    [
        (0.8123, 0.812, 0.0, True),  # IBSI publishes 3 significant digits
        (0.8126, 0.812, 0.0, False),
        (13.9, 13.4, 1.1, True),
        (14.6, 13.4, 1.1, False),
        (1650000000.0, 1.65e9, 2e7, True),
        (float("nan"), 1.0, 1.0, False),
        (None, 1.0, 1.0, False),
    ],
)
def test_matches(value: float | None, reference: float, tolerance: float, expected: bool) -> None:
    assert matches(value, reference, tolerance) is expected


@needs_data
def test_reference_tables_parse() -> None:
    rows = read_reference(DATA / "reference_values" / "ibsi_1_dig_phantom.csv")
    assert len(rows) == 487
    assert rows[0].tag == "morph_volume" and rows[0].value == 556.0 and rows[0].tolerance == 4.0
    assert any(r.value is None for r in rows)  # no-consensus rows are kept, with no value


@pytest.fixture(scope="module")
def compliance() -> list[ComplianceRow]:
    fast = run_compliance(DATA, ("dig", "B"))
    no_texture = tuple(f for f in FAMILIES if f != "texture")
    return fast + run_compliance(DATA, ("A", "C", "D", "E"), families=no_texture)


@needs_data
@pytest.mark.slow
def test_every_non_texture_feature_within_tolerance(compliance: list[ComplianceRow]) -> None:
    summary = summarise(compliance)
    for config in CONFIGS:
        expected = OURS_DIG if config == "dig" else OURS_CT
        got = {fam: summary[(fam, config)] for fam in expected}
        assert got == expected, config


@needs_data
@pytest.mark.slow
def test_texture_counts_do_not_regress(compliance: list[ComplianceRow]) -> None:
    summary = summarise(compliance)
    for config, (floor, total) in TEXTURE_FLOOR.items():
        matched = sum(summary[(fam, config)][0] for fam in TEXTURE if (fam, config) in summary)
        counted = sum(summary[(fam, config)][1] for fam in TEXTURE if (fam, config) in summary)
        assert counted == total, config
        assert matched >= floor, f"config {config}: {matched} texture tags matched, was {floor}"


@needs_data
def test_cli_writes_compliance_csv(tmp_path: Path) -> None:
    from fedresponse.cli import app

    out = tmp_path / "sub" / "ibsi.csv"
    result = CliRunner().invoke(app, ["radiomics", "ibsi", "--config", "dig", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "482/482" in result.output
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["config", "tag", "value", "reference", "tolerance", "match"]
    assert len(rows) == 487 and {r["config"] for r in rows} == {"dig"}
    assert {r["match"] for r in rows if r["reference"]} == {"true"}
    assert all(r["match"] == "" for r in rows if not r["reference"])
    assert not list(out.parent.glob(".*.tmp"))  # no temporary left behind


def test_cli_rejects_unknown_config_and_missing_data(tmp_path: Path) -> None:
    from fedresponse.cli import app

    bad = CliRunner().invoke(app, ["radiomics", "ibsi", "--config", "F"])
    assert bad.exit_code != 0 and "unknown configuration" in bad.output
    missing = CliRunner().invoke(app, ["radiomics", "ibsi", "--config", "dig", "--data", str(tmp_path)])
    assert missing.exit_code != 0 and "IBSI data not found" in missing.output
