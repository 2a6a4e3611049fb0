"""define.xml (Define-XML 2.1: one for SDTM, one for ADaM) and the reviewer's guide.

Each define describes the datasets as written — every ItemRef/ItemDef from the columns of the exported frame,
its metadata (origin, codelist, method) from :mod:`evaluation.cdisc.metadata`, which refuses an undocumented
variable. ``CreationDateTime`` is the time of export. Validated against the Define-XML 2.1 XSDs shipped by
odmlib in ``tests/evaluation/test_cdisc_define.py``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import datetime

import pandas as pd

from evaluation.cdisc.metadata import (
    ADAMIG_VERSION,
    CODELISTS,
    CT_VERSION,
    METHODS,
    SDTMIG_VERSION,
    VALUE_LISTS,
    Codelist,
    VarMeta,
    check_terms,
    is_adam,
    variable_meta,
)
from evaluation.cdisc.xpt import Variable

ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"
DEF_NS = "http://www.cdisc.org/ns/def/v2.1"
XLINK_NS = "http://www.w3.org/1999/xlink"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
DEFINE_VERSION = "2.1.0"
CLASSES = {"dm": "SPECIAL PURPOSE", "tu": "FINDINGS", "tr": "FINDINGS", "rs": "FINDINGS", "cm": "INTERVENTIONS",
           "ce": "EVENTS",
           "adsl": "SUBJECT LEVEL ANALYSIS DATASET", "adrs": "BASIC DATA STRUCTURE",
           "adtte": "BASIC DATA STRUCTURE"}
STRUCTURE = {"dm": "One record per subject", "tu": "One record per identified lesion per evaluator",
             "tr": "One record per lesion measurement per visit per evaluator",
             "rs": "One record per response assessment per visit per criterion per evaluator",
             "cm": "One record per new anticancer therapy per subject",
             "ce": "One record per investigator-reported progression per subject",
             "adsl": "One record per subject", "adrs": "One record per subject per parameter per visit",
             "adtte": "One record per subject per parameter"}
#: key variables (ItemRef KeySequence) of each dataset
KEYS = {"dm": ("STUDYID", "USUBJID"), "tu": ("STUDYID", "USUBJID", "TUEVALID", "TULNKID"),
        "tr": ("STUDYID", "USUBJID", "TREVALID", "TRLNKID", "VISITNUM", "TRTESTCD"),
        "rs": ("STUDYID", "USUBJID", "RSEVALID", "RSCAT", "VISITNUM", "RSTESTCD"),
        "cm": ("STUDYID", "USUBJID", "CMSEQ"), "ce": ("STUDYID", "USUBJID", "CESEQ"),
        "adsl": ("STUDYID", "USUBJID"), "adrs": ("STUDYID", "USUBJID", "PARAMCD", "VISITNUM"),
        "adtte": ("STUDYID", "USUBJID", "PARAMCD")}
ROLES = {"STUDYID": "Identifier", "DOMAIN": "Identifier", "USUBJID": "Identifier", "SUBJID": "Topic",
         "VISITNUM": "Timing", "VISIT": "Timing"}


def _el(parent: ET.Element, tag: str, attrs: Mapping[str, str] | None = None, ns: str = ODM_NS) -> ET.Element:
    return ET.SubElement(parent, f"{{{ns}}}{tag}", dict(attrs or {}))


def _description(parent: ET.Element, text: str, language: str, tag: str = "Description") -> None:
    _el(_el(parent, tag), "TranslatedText", {XML_LANG: language}).text = text


def _data_type(dataset: str, var: Variable, frame: pd.DataFrame, meta: VarMeta) -> tuple[str, dict[str, str]]:
    """Define DataType of a variable and its Length/SignificantDigits/DisplayFormat attributes."""
    if var.kind == "char":
        if var.name.endswith("DTC"):
            return "date", {}
        return "text", {"Length": str(var.length)}
    values = pd.to_numeric(frame[var.name], errors="coerce").dropna()
    if meta.sas_date:
        return "integer", {"Length": "8", f"{{{DEF_NS}}}DisplayFormat": var.display_format or "DATE9."}
    digits = max([len(str(int(abs(v)))) for v in values] + [1])
    if len(values) and (values == values.round()).all():
        return "integer", {"Length": str(digits)}
    if not len(values):  # a numeric variable without any value (e.g. TRSTRESN when nothing was measured)
        return "float", {"Length": "8", "SignificantDigits": "1"}
    decimals = max(len(f"{abs(v):.10g}".split(".")[1]) if "." in f"{abs(v):.10g}" else 0 for v in values)
    return "float", {"Length": str(digits + decimals + 1), "SignificantDigits": str(max(decimals, 1))}


def _codelist_oid(dataset: str, key: str) -> str:
    return f"CL.{dataset.upper()}.{key}" if CODELISTS[key].terms is None else f"CL.{key}"


def _codelist(mdv: ET.Element, oid: str, codelist: Codelist, used: dict[str, str], language: str,
              ct_standard: str) -> None:
    attrs = {"OID": oid, "Name": codelist.name, "DataType": codelist.data_type}
    if codelist.nci:
        attrs[f"{{{DEF_NS}}}StandardOID"] = ct_standard
    element = _el(mdv, "CodeList", attrs)
    if codelist.terms is None:  # sponsor parameter codes: the values found, decoded by their name variable
        for value, decode in sorted(used.items()):
            item = _el(element, "CodeListItem", {"CodedValue": value})
            _description(item, decode, language, tag="Decode")
    else:
        terms = [t for t in codelist.terms if t in used] or list(codelist.terms)
        for term in terms:
            item = _el(element, "EnumeratedItem", {"CodedValue": term})
            if codelist.terms[term]:
                _el(item, "Alias", {"Context": "nci:ExtCodeID", "Name": codelist.terms[term]})
    if codelist.nci:
        _el(element, "Alias", {"Context": "nci:ExtCodeID", "Name": codelist.nci})


def _used_values(dataset: str, column: str, frame: pd.DataFrame, codelist: Codelist) -> dict[str, str]:
    """Coded value → decode (the paired name variable, or the value itself) of the non-null values."""
    rows = frame[frame[column].notna() & (frame[column].astype(str) != "")]
    if codelist.decode and codelist.decode in frame.columns:
        return {str(k): str(v) for k, v in zip(rows[column], rows[codelist.decode], strict=True)}
    out = {}
    for value in rows[column]:
        text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
        out[text] = text
    return out


def _origin(item: ET.Element, meta: VarMeta, language: str) -> None:
    attrs = {"Type": meta.origin}
    if meta.origin in ("Collected", "Derived", "Assigned") and meta.source:
        attrs["Source"] = meta.source
    origin = _el(item, "Origin", attrs, ns=DEF_NS)
    if meta.origin == "Predecessor":
        _description(origin, meta.source, language)


class _Define:
    """Accumulates the parts of one MetaDataVersion in schema order."""

    def __init__(self, language: str) -> None:
        self.language = language
        self.items: list[ET.Element] = []
        self.codelists: dict[str, tuple[Codelist, dict[str, str]]] = {}
        self.methods: set[str] = set()
        self.comments: dict[str, str] = {}
        self.value_lists: list[ET.Element] = []
        self.where_clauses: dict[str, ET.Element] = {}

    def item(self, name: str, var: Variable, frame: pd.DataFrame) -> tuple[ET.Element, VarMeta]:
        meta = variable_meta(name, var.name)
        data_type, extra = _data_type(name, var, frame, meta)
        oid = f"IT.{name.upper()}.{var.name}"
        attrs = {"OID": oid, "Name": var.name, "SASFieldName": var.name, "DataType": data_type, **extra}
        if meta.note:
            attrs[f"{{{DEF_NS}}}CommentOID"] = f"COM.{name.upper()}.{var.name}"
            self.comments[attrs[f"{{{DEF_NS}}}CommentOID"]] = meta.note
        item = ET.Element(f"{{{ODM_NS}}}ItemDef", attrs)
        _description(item, var.label, self.language)
        if meta.codelist:
            codelist = CODELISTS[meta.codelist]
            cl_oid = _codelist_oid(name, meta.codelist)
            _el(item, "CodeListRef", {"CodeListOID": cl_oid})
            known = self.codelists.setdefault(cl_oid, (codelist, {}))[1]
            known.update(_used_values(name, var.name, frame, codelist))
        _origin(item, meta, self.language)
        self.items.append(item)
        key = VALUE_LISTS.get((name, var.name))
        if key and key in frame.columns:
            _el(item, "ValueListRef", {"ValueListOID": self.value_list(name, var, frame, meta, key)}, ns=DEF_NS)
        return item, meta

    def value_list(self, name: str, var: Variable, frame: pd.DataFrame, meta: VarMeta, key: str) -> str:
        """ValueListDef of ``var`` split by the values of ``key``: one value-level ItemDef and WhereClauseDef
        per value holding data (its own DataType/Length from those rows)."""
        oid = f"VL.{name.upper()}.{var.name}"
        value_list = ET.Element(f"{{{DEF_NS}}}ValueListDef", {"OID": oid})
        present = frame[frame[var.name].notna() & (frame[var.name].astype(str) != "")]
        for order, value in enumerate(sorted(present[key].astype(str).unique()), start=1):
            rows = present[present[key].astype(str) == value]
            longest = max([len(str(v).encode("utf-8")) for v in rows[var.name]] + [1])
            sub = Variable(var.name, var.label, var.kind, longest if var.kind == "char" else var.length,
                           var.display_format)
            data_type, extra = _data_type(name, sub, rows, meta)
            part = re.sub(r"[^A-Za-z0-9_-]+", "_", value)  # an OID part without spaces ("RECIST 1.1")
            item_oid, where_oid = f"IT.{name.upper()}.{var.name}.{part}", f"WC.{name.upper()}.{key}.{part}"
            ref = {"ItemOID": item_oid, "OrderNumber": str(order), "Mandatory": "No"}
            if meta.method and meta.origin == "Derived":
                ref["MethodOID"] = f"MT.{meta.method}"
                self.methods.add(meta.method)
            item_ref = _el(value_list, "ItemRef", ref)
            _el(item_ref, "WhereClauseRef", {"WhereClauseOID": where_oid}, ns=DEF_NS)
            if where_oid not in self.where_clauses:  # shared by every variable split on the same key
                where = ET.Element(f"{{{DEF_NS}}}WhereClauseDef", {"OID": where_oid})
                check = _el(where, "RangeCheck", {"Comparator": "EQ", "SoftHard": "Soft",
                                                  f"{{{DEF_NS}}}ItemOID": f"IT.{name.upper()}.{key}"})
                _el(check, "CheckValue").text = value
                self.where_clauses[where_oid] = where
            item = ET.Element(f"{{{ODM_NS}}}ItemDef", {"OID": item_oid, "Name": var.name, "SASFieldName": var.name,
                                                       "DataType": data_type, **extra})
            _description(item, f"{var.name} where {key} = {value}", self.language)
            _origin(item, meta, self.language)
            self.items.append(item)
        self.value_lists.append(value_list)
        return oid


def _group(mdv: ET.Element, name: str, frame: pd.DataFrame, variables: list[Variable], label: str,
           parts: _Define, standard: str) -> None:
    adam = is_adam(name)
    attrs = {"OID": f"IG.{name.upper()}", "Name": name.upper(), "Repeating": "No" if name in ("dm", "adsl") else
             "Yes", "IsReferenceData": "No", "SASDatasetName": name.upper(), "Purpose": "Analysis" if adam else
             "Tabulation", f"{{{DEF_NS}}}Structure": STRUCTURE[name], f"{{{DEF_NS}}}ArchiveLocationID":
             f"LF.{name.upper()}", f"{{{DEF_NS}}}StandardOID": standard}
    if not adam:
        attrs = {**attrs, "Domain": name.upper()}
    group = _el(mdv, "ItemGroupDef", attrs)
    _description(group, label, parts.language)
    keys = KEYS.get(name, ())
    for order, var in enumerate(variables, start=1):
        _, meta = parts.item(name, var, frame)
        complete = bool(frame[var.name].notna().all() and (frame[var.name].astype(str) != "").all())
        ref = {"ItemOID": f"IT.{name.upper()}.{var.name}", "OrderNumber": str(order),
               "Mandatory": "Yes" if meta.required and complete else "No"}
        if var.name in keys:
            ref["KeySequence"] = str(keys.index(var.name) + 1)
        if meta.method and meta.origin == "Derived":
            ref["MethodOID"] = f"MT.{meta.method}"
            parts.methods.add(meta.method)
        if not adam:
            ref["Role"] = ROLES.get(var.name, "Record Qualifier")
        _el(group, "ItemRef", ref)
    _el(group, "Class", {"Name": CLASSES[name]}, ns=DEF_NS)
    leaf = _el(group, "leaf", {"ID": f"LF.{name.upper()}", f"{{{XLINK_NS}}}href": f"{name}.xpt"}, ns=DEF_NS)
    _el(leaf, "title", ns=DEF_NS).text = f"{name}.xpt"


def define_xml(datasets: Mapping[str, pd.DataFrame], variables: Mapping[str, list[Variable]],
               dataset_labels: Mapping[str, str], study_id: str, language: str, created: datetime,
               guide: str = "../reviewers_guide.md") -> bytes:
    """Define-XML 2.1 document (UTF-8) of ``datasets`` — all SDTM or all ADaM — as written.

    ``created`` is the export time (``CreationDateTime``); ``guide`` the reviewer's guide's path relative to
    the define (a SupplementalDoc). Raises :class:`CdiscExportError` when a variable has no metadata or a
    controlled variable holds a value outside its codelist.
    """
    kinds = {is_adam(n) for n in datasets}
    if len(kinds) != 1:
        raise ValueError(f"a define describes SDTM or ADaM datasets, not both: {sorted(datasets)}")
    adam = kinds.pop()
    for name, frame in datasets.items():
        check_terms(name, frame)
    ET.register_namespace("", ODM_NS)
    ET.register_namespace("def", DEF_NS)
    ET.register_namespace("xlink", XLINK_NS)
    ig_name, ig_version = ("ADaMIG", ADAMIG_VERSION) if adam else ("SDTMIG", SDTMIG_VERSION)
    odm = ET.Element(f"{{{ODM_NS}}}ODM", {
        "FileType": "Snapshot", "FileOID": f"DEFINE.{study_id}.{ig_name}", "ODMVersion": "1.3.2",
        "CreationDateTime": created.isoformat(timespec="seconds"), "Originator": "fedresponse",
        "SourceSystem": "fedresponse export-cdisc", f"{{{DEF_NS}}}Context": "Submission"})
    study = _el(odm, "Study", {"OID": f"STUDY.{study_id}"})
    glob = _el(study, "GlobalVariables")
    for tag, text in (("StudyName", study_id), ("StudyDescription", study_id), ("ProtocolName", study_id)):
        _el(glob, tag).text = text
    mdv = _el(study, "MetaDataVersion", {"OID": f"MDV.{study_id}.{ig_name}", "Name": f"{study_id} {ig_name} "
                                         f"{ig_version}", f"{{{DEF_NS}}}DefineVersion": DEFINE_VERSION})
    standards = _el(mdv, "Standards", ns=DEF_NS)
    _el(standards, "Standard", {"OID": "STD.IG", "Name": ig_name, "Type": "IG", "Version": ig_version,
                                "Status": "Final"}, ns=DEF_NS)
    _el(standards, "Standard", {"OID": "STD.CT", "Name": "CDISC/NCI", "Type": "CT", "PublishingSet": "ADaM" if adam
                                else "SDTM", "Version": CT_VERSION, "Status": "Final"}, ns=DEF_NS)
    supplemental = _el(mdv, "SupplementalDoc", ns=DEF_NS)
    _el(supplemental, "DocumentRef", {"leafID": "LF.GUIDE"}, ns=DEF_NS)
    parts = _Define(language)
    for name, frame in datasets.items():
        _group(mdv, name, frame, variables[name], dataset_labels[name], parts, "STD.IG")
    at = list(mdv).index(supplemental) + 1  # value-level metadata precedes the ItemGroupDefs (ODM order)
    for offset, element in enumerate([*parts.value_lists, *parts.where_clauses.values()]):
        mdv.insert(at + offset, element)
    for item in parts.items:
        mdv.append(item)
    for oid, (codelist, used) in sorted(parts.codelists.items()):
        _codelist(mdv, oid, codelist, used, language, "STD.CT")
    for key in sorted(parts.methods):
        method = METHODS[key]
        element = _el(mdv, "MethodDef", {"OID": f"MT.{key}", "Name": method.name, "Type": method.kind})
        _description(element, method.description, "en")
    for oid, text in sorted(parts.comments.items()):
        _description(_el(mdv, "CommentDef", {"OID": oid}, ns=DEF_NS), text, "en")
    leaf = _el(mdv, "leaf", {"ID": "LF.GUIDE", f"{{{XLINK_NS}}}href": guide}, ns=DEF_NS)
    _el(leaf, "title", ns=DEF_NS).text = "Data reviewer's guide"
    ET.indent(odm)
    return ET.tostring(odm, encoding="utf-8", xml_declaration=True)


def _cnsr_table() -> str:
    from evaluation.cdisc.pfs import CENSORING

    rows = ["  | CNSR | EVNTDESC | CNSDTDSC |", "  |---|---|---|",
            "  | 0 | DISEASE PROGRESSION / DEATH | (event) |"]
    rows += [f"  | {code} | {evnt} | {cns} |" for code, (evnt, cns) in CENSORING.items()]
    return "\n".join(rows)


def reviewers_guide(datasets: Mapping[str, pd.DataFrame], study_id: str, evaluator: str, encoding: str,
                    populations_given: bool = False) -> str:
    """The data reviewer's guide (Markdown): what each dataset holds, how ADaM is derived, how to re-run it."""
    counts = "\n".join(f"| {'adam' if is_adam(name) else 'sdtm'}/{name}.xpt | {len(frame)} | {frame.shape[1]} | "
                       f"{STRUCTURE[name]} |" for name, frame in datasets.items())
    flags = ("the sites' analysis-population flags (`evaluation.populations`, derived at each site from its "
             "eligibility assessment, unresolved HARD edit-check queries and image QC — data SDTM does not "
             "carry; shipped as `adam/programs/populations.csv`)" if populations_given else
             "derived from SDTM alone (no site store held analysis-population flags): ITTFL = Y, ELIGFL = EFFFL = "
             "has a post-baseline response, PFSFL = EFFFL without a death dated before the first dose")
    return f"""# Data reviewer's guide — study {study_id}

## Datasets
| file | records | variables | structure |
|---|---|---|---|
{counts}

All files are SAS transport version 5 (one dataset per file, file name = dataset name), character variables
sized to their longest value, labels ≤ 40 bytes ({encoding}). `sdtm/define.xml` (SDTMIG {SDTMIG_VERSION}) and
`adam/define.xml` (ADaMIG {ADAMIG_VERSION}), both Define-XML 2.1, describe every variable: origin, controlled
terminology (codelists), derivation (MethodDef). USUBJID is identical across datasets (`STUDYID-SITEID-NNNN`);
no direct identifier is present. All dates are the de-identified site stores' dates, shifted per patient;
`--DTC` of an assessment = RFSTDTC + its study day. ADaM numeric dates are SAS dates with format DATE9.

## SDTM
- **DM** from the site CRF extracts (single arm: PD-1/PD-L1 inhibitor + chemotherapy; COUNTRY = CHN).
  RFSTDTC = RFXSTDTC = first dose; RFICDTC = consent; RFENDTC = RFPENDTC = death or last contact; the CRF
  does not collect RACE or the last dose date (RFXENDTC): both are submitted null.
- **TU/TR** from the blinded independent readers' lesion measurements (TUEVAL/TREVAL = INDEPENDENT ASSESSOR,
  --EVALID = reader id, --METHOD = CT SCAN): LDIAM for non-nodal lesions, SAXIS for nodes (mm), TUMSTATE for
  lesions followed by status only; a lesion the reader could not evaluate is TRSTAT = NOT DONE.
- **CM** start of a new anticancer therapy (CRF NEW_THERAPY_DATE); **CE** investigator-reported progression
  (CRF PD_DATE). Each is submitted only when it has records.
- **RS** overall response per post-baseline visit and evaluator, RECIST 1.1 (RSCAT "RECIST 1.1") and
  iRECIST (RSCAT "iRECIST"), computed by the platform's response engine from TR-level measurements;
  RSEVAL = ADJUDICATION COMMITTEE for the adjudicated assessment (RSEVALID = FINAL).

## ADaM
- Analysis evaluator: **{evaluator}** (`FINAL` = the adjudicated assessment of `fedresponse assess`, exported
  when every site store holds one; otherwise the first reader id).
- **ADSL**: one row per DM subject; TRTSDT = RFXSTDTC; TRT01P = ARM, TRT01A = ACTARM; ITTFL/ELIGFL/EFFFL/PFSFL
  and EXCLREAS are {flags}.
- **ADRS**: OVR/IOVR copied from RS (SRCSEQ = RSSEQ); BOR/CBOR/IBOR/ICBOR by RECIST 1.1 §4.4 (SD ≥ 42 days
  after the first dose, confirmation ≥ 28 days later) and iRECIST.
- **ADTTE** (PFSFL = Y subjects with a first dose): PFS = first RECIST PD (RSDY) or death (DTHDTC); IPFS =
  the confirmed iUPD, or death. AVAL = ADT − STARTDT + 1 days. Censoring (FDA 2018 Appendix 3 table A; EMA
  PFS appendix), one CNSR code per reason, EVNTDESC/CNSDTDSC naming it:
{_cnsr_table()}

## Programs (traceability)
`adam/programs/` holds the code that derived ADaM — `adam.py` and the modules it uses, shipped as they ran —
with the protocol (`study.yaml`, and the same values as `study.json`, read by `study_protocol.py`). With only
pandas and pyreadstat installed, from the package folder:

    python adam/programs/derive_adam.py sdtm adam regenerated

regenerates ADSL, ADRS and ADTTE from `sdtm/*.xpt` into `regenerated/*.csv` and compares each with
`adam/*.xpt` (exit status 0 and "MATCHES" when identical), and

    python adam/programs/results.py adam results.json

recomputes the headline results (ORR over all enrolled and over EFFFL with Clopper–Pearson 95 % intervals,
median PFS/IPFS with Brookmeyer–Crowley 95 % intervals) from the ADaM files and compares them with
`adam/results.json`.
"""
