"""The submission package conforms: both define.xml files validate against the Define-XML 2.1 schema shipped
by odmlib (0 errors), every variable has its origin/codelist/method, controlled terminology holds, SDTM
carries the SDTMIG 3.4 required/expected variables with ISO 8601 dates consistent with the study days, and
ADaM numeric dates carry the DATE9. format."""

from __future__ import annotations

import importlib.resources
import re
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyreadstat
import pytest
import xmlschema
from test_cdisc import _read, _source

from evaluation.cdisc.define import define_xml
from evaluation.cdisc.export import export_cdisc
from evaluation.cdisc.metadata import ADAM, CODELISTS, COMMON, METHODS, SDTM, check_terms
from evaluation.cdisc.xpt import Variable
from evaluation.exceptions import CdiscExportError

ODM = "{http://www.cdisc.org/ns/odm/v1.3}"
DEF = "{http://www.cdisc.org/ns/def/v2.1}"


@pytest.fixture(scope="module")
def define_schema() -> xmlschema.XMLSchema:
    xsd = importlib.resources.files("odmlib") / "schemas" / "define" / "2.1" / "define2-1-0.xsd"
    return xmlschema.XMLSchema(str(xsd))


@pytest.fixture(scope="module", params=["en", "zh"])
def package(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp(f"define_{request.param}")
    before = datetime.now(UTC).replace(microsecond=0)
    paths = export_cdisc(_source(root / "src", cuts=True), root / "out", labels=request.param)
    return paths | {"_before": Path(before.isoformat()), "_after": Path(datetime.now(UTC).isoformat())}


@pytest.mark.parametrize("which", ["define_sdtm", "define_adam"])
def test_define_validates_against_define_xml_2_1(package: dict[str, Path], define_schema: xmlschema.XMLSchema,
                                                 which: str) -> None:
    errors = [f"{e.path}: {e.reason}" for e in define_schema.iter_errors(str(package[which]))]
    assert errors == []
    root = ET.parse(package[which]).getroot()
    assert root.get(f"{DEF}Context") == "Submission"
    mdv = root.find(f"{ODM}Study/{ODM}MetaDataVersion")
    assert mdv is not None and mdv.get(f"{DEF}DefineVersion").startswith("2.1.")
    standards = {(s.get("Name"), s.get("Version")) for s in mdv.iter(f"{DEF}Standard")}
    assert (("ADaMIG", "1.3") if which == "define_adam" else ("SDTMIG", "3.4")) in standards


def test_the_schema_check_can_fail(define_schema: xmlschema.XMLSchema, package: dict[str, Path],
                                   tmp_path: Path) -> None:
    broken = package["define_sdtm"].read_text(encoding="utf-8").replace(' def:Context="Submission"', "")
    (tmp_path / "define.xml").write_text(broken, encoding="utf-8")
    assert any("Context" in e.reason for e in define_schema.iter_errors(str(tmp_path / "define.xml")))


def test_creation_time_is_the_export_time(package: dict[str, Path]) -> None:
    for which in ("define_sdtm", "define_adam"):
        stamp = datetime.fromisoformat(ET.parse(package[which]).getroot().get("CreationDateTime"))
        assert datetime.fromisoformat(str(package["_before"])) <= stamp <= datetime.fromisoformat(
            str(package["_after"]))


def test_every_reference_resolves_and_derived_items_have_methods(package: dict[str, Path]) -> None:
    for which in ("define_sdtm", "define_adam"):
        mdv = ET.parse(package[which]).getroot().find(f"{ODM}Study/{ODM}MetaDataVersion")
        oids = {e.get("OID") for e in mdv.iter() if e.get("OID")} | {e.get("ID") for e in mdv.iter() if e.get("ID")}
        items = {i.get("OID"): i for i in mdv.iter(f"{ODM}ItemDef")}
        for item in items.values():
            origins = item.findall(f"{DEF}Origin")
            assert len(origins) == 1, item.get("OID")
            for ref in item.iter(f"{ODM}CodeListRef"):
                assert ref.get("CodeListOID") in oids
            if item.get(f"{DEF}CommentOID"):
                assert item.get(f"{DEF}CommentOID") in oids
        for group in mdv.iter(f"{ODM}ItemGroupDef"):
            assert group.get(f"{DEF}ArchiveLocationID") in oids
            for ref in group.iter(f"{ODM}ItemRef"):
                origin = items[ref.get("ItemOID")].find(f"{DEF}Origin")
                if origin.get("Type") == "Derived":
                    assert ref.get("MethodOID") in oids, ref.get("ItemOID")
                if origin.get("Type") == "Predecessor":
                    text = "".join(origin.itertext()).strip()
                    assert re.fullmatch(r"[A-Z]+\.[A-Z0-9]+", text), text
        if which == "define_adam":
            methods = {m.get("OID") for m in mdv.iter(f"{ODM}MethodDef")}
            assert {"MT.BOR", "MT.PFS", "MT.TRTSDT"} <= methods


def test_metadata_tables_reference_only_known_codelists_and_methods() -> None:
    for table in (COMMON, *SDTM.values(), *ADAM.values()):
        for name, meta in table.items():
            assert not meta.codelist or meta.codelist in CODELISTS, name
            assert not meta.method or meta.method in METHODS, name
            assert meta.origin in ("Collected", "Derived", "Assigned", "Protocol", "Predecessor", "Not Available")
            assert meta.origin != "Derived" or meta.method, f"{name} is Derived without a MethodDef"


def test_a_variable_without_metadata_is_refused() -> None:
    frame = pd.DataFrame({"STUDYID": ["S"], "USUBJID": ["S-1"], "NEWVAR": ["x"]})
    variables = [Variable(c, c, "char", 3) for c in frame.columns]
    with pytest.raises(CdiscExportError, match=r"adsl\.NEWVAR has no define metadata"):
        define_xml({"adsl": frame}, {"adsl": variables}, {"adsl": "ADSL"}, "S", "en", datetime.now(UTC))


@pytest.mark.parametrize(
    ("dataset", "column", "value", "ok"),
    [("tu", "TUMETHOD", "CT SCAN", True), ("tu", "TUMETHOD", "CT", False), ("rs", "RSEVAL", "INVESTIGATOR", True),
     ("rs", "RSEVAL", "ADJUDICATOR", False), ("dm", "COUNTRY", "CN", False), ("adsl", "ITTFL", "y", False),
     ("adtte", "CNSR", 3.0, True), ("adtte", "CNSR", 7.0, False)],
)
def test_controlled_terms_are_checked(dataset: str, column: str, value: object, ok: bool) -> None:
    frame = pd.DataFrame({column: [value]})
    if ok:
        check_terms(dataset, frame)
    else:
        with pytest.raises(CdiscExportError, match=f"{dataset}.{column}"):
            check_terms(dataset, frame)


SDTM_VARIABLES = {  # SDTMIG 3.4 required and expected variables we have data for (or submit null)
    "dm": ["STUDYID", "DOMAIN", "USUBJID", "SUBJID", "RFSTDTC", "RFENDTC", "RFXSTDTC", "RFXENDTC", "RFICDTC",
           "RFPENDTC", "DTHDTC", "DTHFL", "SITEID", "AGE", "AGEU", "SEX", "RACE", "ARMCD", "ARM", "ACTARMCD",
           "ACTARM", "ARMNRS", "ACTARMUD", "COUNTRY"],
    "tu": ["STUDYID", "DOMAIN", "USUBJID", "TUSEQ", "TULNKID", "TUTESTCD", "TUTEST", "TUORRES", "TUSTRESC", "TULOC",
           "TUMETHOD", "TUEVAL", "VISITNUM", "VISIT", "TUDTC", "TUDY"],
    "tr": ["STUDYID", "DOMAIN", "USUBJID", "TRSEQ", "TRLNKID", "TRTESTCD", "TRTEST", "TRORRES", "TRORRESU",
           "TRSTRESC", "TRSTRESN", "TRSTRESU", "TRSTAT", "TRREASND", "TRMETHOD", "TREVAL", "VISITNUM", "VISIT",
           "TRDTC", "TRDY"],
    "rs": ["STUDYID", "DOMAIN", "USUBJID", "RSSEQ", "RSTESTCD", "RSTEST", "RSCAT", "RSORRES", "RSSTRESC", "RSEVAL",
           "VISITNUM", "VISIT", "RSDTC", "RSDY"],
    "cm": ["STUDYID", "DOMAIN", "USUBJID", "CMSEQ", "CMTRT", "CMDECOD", "CMSTDTC"],
    "ce": ["STUDYID", "DOMAIN", "USUBJID", "CESEQ", "CETERM", "CEDECOD", "CESTDTC"],
}


@pytest.mark.parametrize("name", sorted(SDTM_VARIABLES))
def test_sdtm_holds_the_required_and_expected_variables(package: dict[str, Path], name: str) -> None:
    frame = _read(package[name])
    assert [c for c in SDTM_VARIABLES[name] if c not in frame.columns] == []


def _study_day(dtc: str, start: str) -> int:
    delta = (date.fromisoformat(dtc) - date.fromisoformat(start)).days
    return delta + 1 if delta >= 0 else delta


def test_dates_are_iso_8601_and_agree_with_the_study_days(package: dict[str, Path]) -> None:
    dm = _read(package["dm"]).set_index("USUBJID")
    assert set(dm["COUNTRY"]) == {"CHN"} and set(dm["ACTARMCD"]) == {"CIO"} and set(dm["ARMNRS"]) == {""}
    assert (dm["RFXSTDTC"] == dm["RFSTDTC"]).all()
    for name, prefix in (("tu", "TU"), ("tr", "TR"), ("rs", "RS")):
        frame = _read(package[name])
        assert frame[f"{prefix}DTC"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
        days = [_study_day(d, dm.loc[s, "RFSTDTC"]) for s, d in zip(frame["USUBJID"], frame[f"{prefix}DTC"],
                                                                     strict=True)]
        assert days == frame[f"{prefix}DY"].astype(int).tolist()
    tu, tr = _read(package["tu"]), _read(package["tr"])
    assert set(tu["TUMETHOD"]) == set(tr["TRMETHOD"]) == {"CT SCAN"}
    assert set(tu["TUEVAL"]) == {"INDEPENDENT ASSESSOR"} and set(tu["TUSTRESC"]) <= {"TARGET", "NON-TARGET", "NEW"}


def test_day_minus_one_is_the_day_before_first_dose() -> None:
    from evaluation.cdisc.sdtm import dtc_of_day

    start = date(2025, 3, 1)
    assert dtc_of_day(start.isoformat(), 1) == "2025-03-01"
    assert dtc_of_day(start.isoformat(), -1) == (start - timedelta(days=1)).isoformat()
    assert dtc_of_day(start.isoformat(), 63) == "2025-05-02"
    assert dtc_of_day("", 5) == "" and dtc_of_day(start.isoformat(), float("nan")) == ""


def test_adam_dates_carry_the_date9_format(package: dict[str, Path]) -> None:
    for name, dates in (("adsl", ["TRTSDT"]), ("adtte", ["STARTDT", "ADT"])):
        frame, meta = pyreadstat.read_xport(str(package[name]))
        for column in dates:
            assert meta.original_variable_types[column] == "DATE9"
            assert frame[column].notna().all()  # STARTDT/ADT on every row
        assert all(meta.original_variable_types[c] != "DATE9" for c in frame.columns if c not in dates
                   and not c.endswith("DT"))
    adtte = _read(package["adtte"])
    assert (adtte["AVAL"] >= 0).all() and (adtte["ADT"] - adtte["STARTDT"] + 1 == adtte["AVAL"]).all()
    items = {i.get("Name"): i for i in ET.parse(package["define_adam"]).getroot().iter(f"{ODM}ItemDef")
             if i.get("OID").startswith("IT.ADTTE.")}
    assert items["ADT"].get(f"{DEF}DisplayFormat") == "DATE9." and items["ADT"].get("DataType") == "integer"


@pytest.mark.parametrize("which", ["define_sdtm", "define_adam"])
def test_odmlib_loads_the_define_and_its_rules_pass(package: dict[str, Path], which: str) -> None:
    # odmlib's own Define-XML 2.1 model: OID uniqueness and ref/def integrity, Cerberus metadata schema, ODM order
    import odmlib.define_loader as define_loader
    import odmlib.loader as loader
    from odmlib.define_2_1.rules import metadata_schema
    from odmlib.oid_generator import create_oid_checker

    odm_loader = loader.ODMLoader(define_loader.XMLDefineLoader(model_package="define_2_1",
                                                                 ns_uri="http://www.cdisc.org/ns/def/v2.1"))
    odm_loader.open_odm_document(str(package[which]))
    odm = odm_loader.root()
    assert odm.verify_oids(create_oid_checker("define_2_1"))
    assert odm.verify_conformance(metadata_schema.MetadataSchema())
    assert odm.verify_order()
    groups = odm_loader.MetaDataVersion().ItemGroupDef
    assert [g.Name for g in groups] == (["ADSL", "ADRS", "ADTTE"] if which == "define_adam" else
                                        ["DM", "TU", "TR", "RS", "CM", "CE"])


def test_value_level_metadata_splits_results_by_test_and_parameter(package: dict[str, Path]) -> None:
    def value_list(which: str, oid: str) -> dict[str, str]:
        mdv = ET.parse(package[which]).getroot().find(f"{ODM}Study/{ODM}MetaDataVersion")
        where = {w.get("OID"): (w.find(f"{ODM}RangeCheck").get(f"{DEF}ItemOID"),
                                w.find(f"{ODM}RangeCheck/{ODM}CheckValue").text)
                 for w in mdv.iter(f"{DEF}WhereClauseDef")}
        items = {i.get("OID"): i for i in mdv.iter(f"{ODM}ItemDef")}
        parent = items[oid.replace("VL.", "IT.")]
        assert parent.find(f"{DEF}ValueListRef").get("ValueListOID") == oid
        vl = next(v for v in mdv.iter(f"{DEF}ValueListDef") if v.get("OID") == oid)
        out = {}
        for ref in vl.iter(f"{ODM}ItemRef"):
            key_item, value = where[ref.find(f"{DEF}WhereClauseRef").get("WhereClauseOID")]
            out[f"{key_item}={value}"] = items[ref.get("ItemOID")].get("DataType")
        return out

    tr = _read(package["tr"])
    measured = sorted(set(tr.loc[tr["TRSTRESN"].notna(), "TRTESTCD"]))
    assert value_list("define_sdtm", "VL.TR.TRSTRESN") == {f"IT.TR.TRTESTCD={c}": "float" for c in measured}
    collected = sorted(set(tr.loc[tr["TRORRES"] != "", "TRTESTCD"]))  # character results: text
    assert value_list("define_sdtm", "VL.TR.TRORRES") == {f"IT.TR.TRTESTCD={c}": "text" for c in collected}
    assert value_list("define_adam", "VL.ADTTE.AVAL") == {"IT.ADTTE.PARAMCD=IPFS": "integer",
                                                         "IT.ADTTE.PARAMCD=PFS": "integer"}


@pytest.mark.parametrize(
    ("dataset", "name", "kind", "values", "expected"),
    [("tr", "TRSTRESN", "num", [float("nan")], ("float", {"Length": "8", "SignificantDigits": "1"})),
     ("tr", "TRSTRESN", "num", [1.25, 10.5], ("float", {"Length": "5", "SignificantDigits": "2"})),
     ("tr", "TRDY", "num", [-10.0, 105.0], ("integer", {"Length": "3"})),
     ("tr", "TRDTC", "char", ["2025-01-10"], ("date", {})),
     ("tr", "TRORRES", "char", ["12.5"], ("text", {"Length": "4"})),
     ("adtte", "ADT", "num", [23000.0], ("integer", {"Length": "8", f"{DEF}DisplayFormat": "DATE9."}))],
)
def test_define_data_types(dataset: str, name: str, kind: str, values: list, expected: tuple) -> None:
    from evaluation.cdisc.define import _data_type
    from evaluation.cdisc.metadata import variable_meta

    var = Variable(name, name, kind, 4 if kind == "char" else 8, "DATE9." if name == "ADT" else "")
    assert _data_type(dataset, var, pd.DataFrame({name: values}), variable_meta(dataset, name)) == expected


def test_key_variables_identify_every_record(package: dict[str, Path]) -> None:
    for which in ("define_sdtm", "define_adam"):
        mdv = ET.parse(package[which]).getroot().find(f"{ODM}Study/{ODM}MetaDataVersion")
        names = {i.get("OID"): i.get("Name") for i in mdv.iter(f"{ODM}ItemDef")}
        for group in mdv.iter(f"{ODM}ItemGroupDef"):
            keys = sorted((int(r.get("KeySequence")), names[r.get("ItemOID")]) for r in group.iter(f"{ODM}ItemRef")
                          if r.get("KeySequence"))
            frame = _read(package[group.get("Name").lower()])
            assert keys and not frame.duplicated([k for _, k in keys]).any(), (group.get("Name"), keys)
