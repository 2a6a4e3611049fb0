"""CDISC export: every XPT re-read with independent readers (pandas, pyreadstat), submission rules checked,
ADaM re-derived from the SDTM read back from disk, define.xml consistent with the files."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyreadstat
import pytest
from pandas.io.sas.sas_xport import XportReader

from evaluation.cdisc.export import export_cdisc
from evaluation.cdisc.xpt import _ibm, check_label, xpt_bytes
from evaluation.exceptions import CdiscExportError

START = date(2025, 1, 10)
# subject -> list of (visit, ADY, target diameter mm); 0003 dies on day 150
COURSES = {
    "0001": [("T0", -5, 50.0), ("T1", 63, 30.0), ("T2", 105, 28.0), ("FU1", 168, 27.0)],  # PR, confirmed
    "0002": [("T0", -3, 40.0), ("T1", 63, 44.0), ("T2", 105, 55.0), ("FU1", 147, 62.0)],  # SD, PD/iUPD -> iCPD
    "0003": [("T0", -4, 60.0), ("T1", 62, 58.0), ("T2", 104, 57.0)],  # SD, death day 150
}
# subjects whose CRF records a new therapy (CM) or an investigator PD date (CE); see _source(cuts=True)
CUT_COURSES = {
    "0004": [("T0", -4, 40.0), ("T1", 63, 41.0), ("T2", 105, 42.0), ("FU1", 168, 60.0)],  # new therapy day 150
    "0005": [("T0", -4, 40.0), ("T1", 63, 41.0), ("T2", 105, 42.0), ("FU1", 168, 60.0)],  # clinical PD day 100
}
# CRF dates as study days: the investigator's PD_DATE of 0002 is the radiological PD day (not a cut)
NEW_THERAPY_DAY = {"0004": 150}
PD_DAY = {"0002": 105, "0005": 100}


def _source(root: Path, cuts: bool = False) -> Path:
    """A one-site cohort folder; ``cuts`` adds subjects 0004/0005 and the CRF dates that fill CM and CE."""
    courses = COURSES | (CUT_COURSES if cuts else {})
    site = root / "S01"
    site.mkdir(parents=True)
    reads = []
    for sid, course in courses.items():
        for visit, ady, diam in course:
            for reader, delta in (("R1", 0.0), ("R2", 0.4)):
                reads.append({"USUBJID": f"FEDRESP-S01-{sid}", "VISIT": visit, "ADY": ady, "LESIONID": "L01",
                              "ORGAN": "LUNG", "CATEGORY": "TARGET", "NODE": "N", "DIAM_MM": diam + delta,
                              "STATUS": "PRESENT", "READER": reader})
    pd.DataFrame(reads).to_csv(site / "reads.csv", index=False)
    def iso(days: dict[str, int], sid: str) -> str:
        return (START + timedelta(days=days[sid] - 1)).isoformat() if sid in days else ""

    crf = pd.DataFrame({
        "USUBJID": [f"FEDRESP-S01-{s}" for s in courses], "SUBJID": list(courses), "SITEID": "S01",
        "AGE": [61, 70, 55, 66, 59][: len(courses)], "SEX": ["M", "F", "M", "F", "M"][: len(courses)],
        "FIRST_DOSE_DATE": START.isoformat(), "DEATH_DATE": [iso({"0003": 150}, s) for s in courses],
    })
    if cuts:
        crf["NEW_THERAPY_DATE"] = [iso(NEW_THERAPY_DAY, s) for s in courses]
        crf["PD_DATE"] = [iso(PD_DAY, s) for s in courses]
    crf.to_csv(site / "crf.csv", index=False)
    return root


@pytest.fixture(scope="module", params=["en", "zh"])
def package(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp(f"cdisc_{request.param}")
    paths = export_cdisc(_source(root / "src", cuts=True), root / "out", labels=request.param)
    return paths | {"_labels": Path(request.param)}


def _read(path: Path) -> pd.DataFrame:
    frame = pd.read_sas(path, format="xport", encoding="utf-8")
    for column in frame.columns:  # pandas reads SAS 0.0 as 16**-65; snap that to 0 (keeping missing values)
        if frame[column].dtype == float:
            frame[column] = frame[column].where(frame[column].isna() | (frame[column].abs() > 1e-70), 0.0)
    return frame


DATASETS = ("dm", "tu", "tr", "rs", "cm", "ce", "adsl", "adrs", "adtte")


def test_every_file_follows_the_naming_length_and_label_rules(package: dict[str, Path]) -> None:
    for name in DATASETS:
        path = package[name]
        assert path.name == f"{name}.xpt" and re.fullmatch(r"[a-z][a-z0-9]{0,7}", name)
        reader = XportReader(str(path), encoding="utf-8")
        assert reader.member_info["set_name"].strip().lower() == name
        frame = _read(path)
        for field in reader.fields:
            var, label = field["name"].decode().strip(), field["label"].rstrip(b" ")
            assert re.fullmatch(r"[A-Z][A-Z0-9]{0,7}", var), var
            assert 0 < len(label) <= 40, (name, var, label)
            if field["ntype"] == "char":
                longest = max([len(str(v).encode("utf-8")) for v in frame[var].fillna("")] + [1])
                assert field["field_length"] == longest <= 200, (name, var)
            else:
                assert field["field_length"] == 8
        reader.close()
        _, meta = pyreadstat.read_xport(str(path))  # second independent reader agrees on names and labels
        assert meta.table_name.lower() == name and len(meta.column_names) == len(frame.columns)
        chinese = str(package["_labels"]) == "zh"
        assert any(re.search(r"[\u4e00-\u9fff]", lab or "") for lab in meta.column_labels) == chinese


def test_identifiers_are_consistent_across_datasets(package: dict[str, Path]) -> None:
    dm = _read(package["dm"])
    assert len(dm) == len(COURSES) + len(CUT_COURSES) and dm["USUBJID"].is_unique
    for name in DATASETS:
        assert set(_read(package[name])["USUBJID"]) <= set(dm["USUBJID"])
    adsl = _read(package["adsl"])
    assert list(adsl["USUBJID"]) == list(dm["USUBJID"])
    tr = _read(package["tr"])
    for _, rows in tr.groupby(["USUBJID", "TREVALID"]):
        assert rows["VISITNUM"].is_monotonic_increasing and rows["TRDY"].is_monotonic_increasing


def _independent_bor(responses: list[tuple[float, str]], sd_min_days: int = 42) -> str:
    """RECIST 1.1 BOR by hand: best of CR > PR > SD (observed >= 42 days after the first dose) > PD."""
    best, rank = "NE", {"CR": 0, "PR": 1, "SD": 2, "PD": 3, "NE": 4}
    for day, value in responses:
        if value == "SD" and day - 1 < sd_min_days:
            continue
        if rank[value] < rank[best]:
            best = value
        if value == "PD":
            break
    return best


def _days(frame: pd.DataFrame, subject: str, column: str, start: date) -> list[int]:
    """Study days of a subject's dates in an SDTM events domain (day 1 = start, no day 0 after it)."""
    return [(date.fromisoformat(d) - start).days + 1 for d in frame.loc[frame["USUBJID"] == subject, column]]


def test_adam_rederives_from_the_sdtm_read_back(package: dict[str, Path]) -> None:
    dm, rs = _read(package["dm"]), _read(package["rs"])
    cm, ce = _read(package["cm"]), _read(package["ce"])
    adrs, adtte = _read(package["adrs"]), _read(package["adtte"])
    rs1 = rs[(rs["RSEVALID"] == "R1") & (rs["RSCAT"] == "RECIST 1.1")].sort_values(["USUBJID", "VISITNUM"])
    for subject, rows in rs1.groupby("USUBJID"):
        responses = list(zip(rows["RSDY"], rows["RSSTRESC"], strict=True))
        bor = adrs[(adrs["USUBJID"] == subject) & (adrs["PARAMCD"] == "BOR")]["AVALC"].item()
        assert bor == _independent_bor(responses)
        ovr = adrs[(adrs["USUBJID"] == subject) & (adrs["PARAMCD"] == "OVR")].sort_values("VISITNUM")
        assert list(ovr["AVALC"]) == list(rows["RSSTRESC"]) and list(ovr["ADY"]) == list(rows["RSDY"])
        start = date.fromisoformat(dm.set_index("USUBJID").loc[subject, "RFSTDTC"])
        death = dm.set_index("USUBJID").loc[subject, "DTHDTC"]
        pd_days = rows.loc[rows["RSSTRESC"] == "PD", "RSDY"]
        radiological = pd_days.min() if len(pd_days) else np.inf
        events = list(pd_days.iloc[:1]) + ([(date.fromisoformat(death) - start).days + 1] if death else [])
        cuts = [(day, 3) for day in _days(cm, subject, "CMSTDTC", start)]
        cuts += [(day, 5) for day in _days(ce, subject, "CESTDTC", start) if day < radiological]
        pfs = adtte[(adtte["USUBJID"] == subject) & (adtte["PARAMCD"] == "PFS")].iloc[0]
        if cuts and (not events or min(cuts)[0] < min(events)):
            cut_day, code = min(cuts)
            assert (pfs["AVAL"], pfs["CNSR"]) == (rows.loc[rows["RSDY"] <= cut_day, "RSDY"].max(), code)
        elif events:
            assert (pfs["AVAL"], pfs["CNSR"]) == (min(events), 0)
        else:
            assert (pfs["AVAL"], pfs["CNSR"]) == (rows["RSDY"].max(), 1)
        assert pfs["ADT"] - pfs["STARTDT"] + 1 == pfs["AVAL"]
        assert pfs["STARTDT"] == (start - date(1960, 1, 1)).days


def test_worked_cases_by_hand(package: dict[str, Path]) -> None:
    adrs, adtte = _read(package["adrs"]), _read(package["adtte"])

    def value(sid: str, code: str, frame: pd.DataFrame = adrs, column: str = "AVALC") -> object:
        return frame[(frame["USUBJID"] == f"FEDRESP-S01-{sid}") & (frame["PARAMCD"] == code)][column].item()

    assert (value("0001", "BOR"), value("0001", "CBOR")) == ("PR", "PR")  # -40 % at day 63, again at 105
    assert (value("0002", "BOR"), value("0002", "IBOR")) == ("SD", "iSD")  # +10 % at day 63, PD at day 105
    assert value("0002", "PFS", adtte, "AVAL") == 105  # RECIST PD
    assert value("0002", "IPFS", adtte, "AVAL") == 105  # the iUPD at 105 confirmed by iCPD at 147 (6 weeks)
    assert (value("0003", "PFS", adtte, "AVAL"), value("0003", "PFS", adtte, "CNSR")) == (150, 0)  # death
    assert (value("0001", "PFS", adtte, "AVAL"), value("0001", "PFS", adtte, "CNSR")) == (168, 1)  # censored
    # new therapy on day 150 before the PD at 168: censored at the T2 assessment (day 105), CNSR 3
    assert (value("0004", "PFS", adtte, "AVAL"), value("0004", "PFS", adtte, "CNSR")) == (105, 3)
    assert value("0004", "PFS", adtte, "EVNTDESC") == "NEW ANTICANCER THERAPY"
    # investigator PD on day 100 before the radiological PD at 168: censored at T1 (day 63), CNSR 5
    assert (value("0005", "PFS", adtte, "AVAL"), value("0005", "PFS", adtte, "CNSR")) == (63, 5)
    assert value("0005", "PFS", adtte, "CNSDTDSC") == "LAST ADEQUATE ASSESSMENT BEFORE CLIN PD"
    assert value("0002", "PFS", adtte, "CNSDTDSC") == ""  # an event has no censoring date description


def test_define_xml_describes_every_file(package: dict[str, Path]) -> None:
    ns = {"odm": "http://www.cdisc.org/ns/odm/v1.3"}
    for define, names in ((package["define_sdtm"], DATASETS[:6]), (package["define_adam"], DATASETS[6:])):
        root = ET.parse(define).getroot()
        groups = {g.get("SASDatasetName").lower(): g for g in root.iter(f"{{{ns['odm']}}}ItemGroupDef")}
        assert set(groups) == set(names)
        items = {i.get("OID"): i for i in root.iter(f"{{{ns['odm']}}}ItemDef")}
        for name in names:
            assert package[name].parent == define.parent  # the define sits beside the files it describes
            reader = XportReader(str(package[name]), encoding="utf-8")
            lengths = {f["name"].decode().strip(): f["field_length"] for f in reader.fields}
            kinds = {f["name"].decode().strip(): f["ntype"] for f in reader.fields}
            reader.close()
            refs = [r.get("ItemOID") for r in groups[name].iter(f"{{{ns['odm']}}}ItemRef")]
            assert [items[r].get("Name") for r in refs] == list(lengths)
            for r in refs:  # text lengths as written; ISO 8601 dates (DataType date) carry none
                var = items[r].get("Name")
                if kinds[var] == "char" and items[r].get("DataType") == "text":
                    assert int(items[r].get("Length")) == lengths[var]
                elif kinds[var] == "char":
                    assert items[r].get("DataType") == "date" and var.endswith("DTC")
    assert "ADTTE" in package["guide"].read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1.0, "4110000000000000"), (-118.625, "C276A00000000000"), (0.0, "0000000000000000"),
     (float("nan"), "2E00000000000000"), (0.1, "401999999999999A"), (100.0, "4264000000000000")],
)
def test_ibm_float_encoding_matches_published_bit_patterns(value: float, expected: str) -> None:
    # -118.625 = 0xC276A000 (the IBM hexadecimal floating-point worked example); 0.1 = 0x401999999999999A
    # (IEEE 0x3FB999999999999A re-based to base 16: exact, no rounding); NaN = SAS missing "." (0x2E).
    assert _ibm(value).hex().upper() == expected


def test_numbers_round_trip_through_two_readers(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = np.r_[rng.normal(0, 1e4, 50), [1e-30, -2.5e20, 12345.678, 1.0 / 3.0]]
    frame = pd.DataFrame({"AVAL": values})
    data, _ = xpt_bytes(frame, "t", "T", {"AVAL": "Analysis Value"})
    (tmp_path / "t.xpt").write_bytes(data)
    np.testing.assert_allclose(pd.read_sas(tmp_path / "t.xpt", format="xport")["AVAL"], values, rtol=1e-15)
    back, _ = pyreadstat.read_xport(str(tmp_path / "t.xpt"))
    np.testing.assert_allclose(back["AVAL"], values, rtol=1e-15)


@pytest.mark.parametrize(
    ("dataset", "columns", "labels", "match"),
    [
        ("DM", ["USUBJID"], {"USUBJID": "x"}, "dataset name"),
        ("toolongname", ["USUBJID"], {"USUBJID": "x"}, "dataset name"),
        ("dm", ["usubjid"], {"usubjid": "x"}, "variable name"),
        ("dm", ["VARIABLE9"], {"VARIABLE9": "x"}, "variable name"),
        ("dm", ["USUBJID"], {}, "has no label"),
        ("dm", ["USUBJID"], {"USUBJID": "受试者唯一标识符受试者唯一标"}, "42 bytes"),  # 14 CJK characters
        ("dm", ["USUBJID"], {"USUBJID": "Subject (id"}, "unpaired brackets"),
        ("dm", ["USUBJID"], {"USUBJID": 'Subject "id'}, "unpaired quote"),
    ],
)
def test_rule_violations_are_refused_with_the_reason(
    dataset: str, columns: list[str], labels: dict, match: str
) -> None:
    with pytest.raises(CdiscExportError, match=match):
        xpt_bytes(pd.DataFrame({c: ["a"] for c in columns}), dataset, "Label", labels)


def test_label_of_exactly_40_bytes_passes_and_41_fails() -> None:
    assert len(check_label("标" * 13 + "a", "utf-8", "x")) == 40
    with pytest.raises(CdiscExportError, match="41 bytes"):
        check_label("标" * 13 + "ab", "utf-8", "x")


def test_cli_exports_and_bad_source_exits_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedresponse.cli import app

    src = _source(tmp_path / "src", cuts=True)
    result = CliRunner().invoke(app, ["export-cdisc", str(src), "--out", str(tmp_path / "out"), "--labels", "zh"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out" / "sdtm").glob("*.xpt")) == sorted(f"{d}.xpt" for d in DATASETS[:6])
    assert sorted(p.name for p in (tmp_path / "out" / "adam").glob("*.xpt")) == sorted(f"{d}.xpt" for d in DATASETS[6:])
    bad = CliRunner().invoke(app, ["export-cdisc", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")])
    assert bad.exit_code == 2 and "not a folder" in " ".join(bad.output.split())
    assert not (tmp_path / "o2").exists()


def test_store_with_adjudicated_assessment_is_the_analysis_evaluator(tmp_path: Path) -> None:
    from evaluation.protocol import load_protocol
    from evaluation.response.engine import assess

    src = _source(tmp_path / "cohort") / "S01"
    store = tmp_path / "stores" / "S01"
    (store / "assessment").mkdir(parents=True)
    (store / "store.json").write_text("{}")
    pd.read_csv(src / "crf.csv", dtype=str, keep_default_na=False).to_parquet(store / "crf.parquet")
    reads = pd.read_csv(src / "reads.csv", keep_default_na=False, na_values=[""])
    reads.to_parquet(store / "measurements.parquet")
    chosen = assess(reads[reads["READER"] == "R2"].drop(columns="READER"), load_protocol())  # "adjudicator chose R2"
    chosen.visits.to_csv(store / "assessment" / "visits.csv", index=False)
    paths = export_cdisc(store, tmp_path / "out")
    rs, adrs = _read(paths["rs"]), _read(paths["adrs"])
    assert set(rs["RSEVALID"]) == {"R1", "R2", "FINAL"}
    assert set(rs.loc[rs["RSEVALID"] == "FINAL", "RSEVAL"]) == {"ADJUDICATION COMMITTEE"}
    final = rs[(rs["RSEVALID"] == "FINAL") & (rs["RSCAT"] == "RECIST 1.1")]
    assert sorted(adrs.loc[adrs["PARAMCD"] == "OVR", "SRCSEQ"]) == sorted(final["RSSEQ"])
    assert "Analysis evaluator: **FINAL**" in paths["guide"].read_text(encoding="utf-8")


# --- PFS censoring rules (evaluation.cdisc.pfs), hand-built cases -------------------------------------------------
# Protocol schedule (configs/study.yaml): T1 day 62 (window to 70), T2 day 104 (to 112), then every 63 ± 7 days.
# "Two missed" limit after a T2/FU assessment on day L: L + 2 x 63 + 7 + 7 = L + 140; after T1: L + 105 + 8 + 7;
# with no adequate post-baseline assessment: T0 nominal day -7 + 111 + 8 + 8 = day 120.
NAN = float("nan")
SD4 = [(63, 1, "SD"), (105, 2, "SD"), (168, 3, "SD"), (231, 4, "SD")]
PD_FU2 = [(63, 1, "SD"), (105, 2, "SD"), (168, 3, "SD"), (231, 4, "PD")]
GAP = [(63, 1, "SD"), (105, 2, "SD")]


@pytest.mark.parametrize(
    ("course", "progression", "death", "new_therapy", "clinical_pd", "expected"),
    [
        # no event: last adequate assessment; none at all: day 1
        (SD4, NAN, NAN, NAN, NAN, (231, 1, "RS")),
        ([], NAN, NAN, NAN, NAN, (1, 2, "ADSL")),
        ([(63, 1, "NE"), (105, 2, "NE")], NAN, NAN, NAN, NAN, (1, 2, "ADSL")),
        ([*SD4[:2], (168, 3, "NE")], NAN, NAN, NAN, NAN, (105, 1, "RS")),  # an NE visit is not adequate
        # events: radiological PD, death; PD and death on one day is reported as progression
        (PD_FU2, 231, NAN, NAN, NAN, (231, 0, "RS")),
        (PD_FU2, 231, 200, NAN, NAN, (200, 0, "DM")),
        (PD_FU2, 231, 231, NAN, NAN, (231, 0, "RS")),
        ([], NAN, 100, NAN, NAN, (100, 0, "DM")),  # death before the first assessment
        # (a) new anticancer therapy before the event: last adequate assessment on or before its start
        (PD_FU2, 231, NAN, 150, NAN, (105, 3, "RS")),
        (PD_FU2, 231, NAN, 168, NAN, (168, 3, "RS")),  # scan on the day therapy starts is taken before it
        (PD_FU2, 231, NAN, 231, NAN, (231, 0, "RS")),  # PD on the day therapy starts: the event counts
        (SD4, NAN, NAN, 200, NAN, (168, 3, "RS")),  # no event: assessments after new therapy are not used
        (SD4, NAN, 300, 200, NAN, (168, 3, "RS")),  # death after new therapy: censored
        (PD_FU2, 231, NAN, 40, NAN, (1, 3, "ADSL")),  # new therapy before any assessment
        # (c) investigator (clinical) progression before radiological PD: last adequate on or before it
        (PD_FU2, 231, NAN, NAN, 150, (105, 5, "RS")),
        (SD4, NAN, NAN, NAN, 150, (105, 5, "RS")),  # never documented radiologically
        (SD4, NAN, 260, NAN, 150, (105, 5, "RS")),  # a later death does not undo the censoring
        (PD_FU2, 231, NAN, NAN, 231, (231, 0, "RS")),  # same day as radiological PD: the event
        (PD_FU2, 231, NAN, NAN, 260, (231, 0, "RS")),  # after it: the event
        (PD_FU2, 231, NAN, 150, 150, (105, 3, "RS")),  # same-day cuts: new therapy is reported
        (PD_FU2, 231, NAN, 180, 150, (105, 5, "RS")),  # the earlier cut wins
        (PD_FU2, 231, NAN, 150, 180, (105, 3, "RS")),
        # (b) event after two or more missed scheduled assessments (boundary: 245 event, 246 censored)
        ([*GAP, (245, 4, "PD")], 245, NAN, NAN, NAN, (245, 0, "RS")),
        ([*GAP, (246, 5, "PD")], 246, NAN, NAN, NAN, (105, 4, "RS")),
        ([*GAP, (294, 5, "PD")], 294, NAN, NAN, NAN, (105, 4, "RS")),
        (GAP, NAN, 300, NAN, NAN, (105, 4, "RS")),  # death after the gap
        ([*GAP, (168, 3, "NE"), (231, 4, "PD")], 231, NAN, NAN, NAN, (231, 0, "RS")),  # one NE visit: one missed
        ([(63, 1, "SD"), (183, 3, "PD")], 183, NAN, NAN, NAN, (183, 0, "RS")),  # after T1: limit 63 + 120
        ([(63, 1, "SD"), (184, 3, "PD")], 184, NAN, NAN, NAN, (63, 4, "RS")),
        ([], NAN, 120, NAN, NAN, (120, 0, "DM")),  # no assessment: T1 and T2 missed only after day 120
        ([], NAN, 121, NAN, NAN, (1, 4, "ADSL")),
        # a cut before a late event takes precedence over the missed-assessment rule
        ([*GAP, (294, 5, "PD")], 294, NAN, 200, NAN, (105, 3, "RS")),
    ],
)
def test_pfs_censoring_rules(course: list[tuple[int, int, str]], progression: float, death: float,
                             new_therapy: float, clinical_pd: float, expected: tuple[int, int, str]) -> None:
    from evaluation.cdisc.pfs import CENSORING, Assessment, derive_pfs
    from evaluation.protocol import load_protocol

    outcome = derive_pfs([Assessment(float(d), float(v), r) for d, v, r in course], progression, death,
                         new_therapy, clinical_pd, load_protocol())
    assert (outcome.day, outcome.cnsr, outcome.srcdom) == expected
    if outcome.cnsr:  # censored on day 1 when no adequate assessment precedes the reason
        dated = "FIRST DOSE" if outcome.srcdom == "ADSL" else CENSORING[outcome.cnsr][1]
        assert (outcome.evntdesc, outcome.cnsdtdsc) == (CENSORING[outcome.cnsr][0], dated)
    else:
        assert outcome.evntdesc in ("DISEASE PROGRESSION", "DEATH") and outcome.cnsdtdsc == ""


def test_every_censoring_reason_has_its_own_code_and_texts() -> None:
    from evaluation.cdisc.pfs import CENSORING

    assert sorted(CENSORING) == [1, 2, 3, 4, 5]
    assert len({e for e, _ in CENSORING.values()}) == len({c for _, c in CENSORING.values()}) == len(CENSORING)
    assert all(len(e.encode()) <= 200 and len(c.encode()) <= 200 for e, c in CENSORING.values())


@pytest.mark.parametrize(
    ("clinical_pd", "expected"),
    [(150, (105, 5)), (168, (231, 1)), (200, (231, 1))],  # iUPD at 168 never confirmed; CE before/after it
)
def test_clinical_progression_is_judged_against_the_first_iupd(clinical_pd: float, expected: tuple[int, int]) -> None:
    from evaluation.cdisc.pfs import Assessment, derive_pfs
    from evaluation.protocol import load_protocol

    course = [(63, 1, "iSD"), (105, 2, "iSD"), (168, 3, "iUPD"), (231, 4, "iUPD")]
    outcome = derive_pfs([Assessment(float(d), float(v), r) for d, v, r in course], NAN, NAN, NAN, clinical_pd,
                         load_protocol(), documented_day=168)
    assert (outcome.day, outcome.cnsr) == expected
