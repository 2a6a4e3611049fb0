"""define.xml (Define-XML 2.0 metadata of every dataset and variable) and the reviewer's guide."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping

import pandas as pd

from evaluation.cdisc.xpt import Variable

ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"
DEF_NS = "http://www.cdisc.org/ns/def/v2.0"
XLINK_NS = "http://www.w3.org/1999/xlink"
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


def _data_type(var: Variable, frame: pd.DataFrame) -> str:
    if var.kind == "char":
        return "text"
    values = frame[var.name].dropna()
    return "integer" if len(values) and (values == values.round()).all() else "float"


def define_xml(datasets: Mapping[str, pd.DataFrame], variables: Mapping[str, list[Variable]],
               dataset_labels: Mapping[str, str], study_id: str, language: str) -> bytes:
    """Define-XML 2.0 document (UTF-8) describing ``datasets`` as written."""
    ET.register_namespace("", ODM_NS)
    ET.register_namespace("def", DEF_NS)
    ET.register_namespace("xlink", XLINK_NS)
    odm = ET.Element(f"{{{ODM_NS}}}ODM", {"FileType": "Snapshot", "FileOID": f"define.{study_id}",
                                           "ODMVersion": "1.3.2", "CreationDateTime": "2026-01-01T00:00:00",
                                           f"{{{DEF_NS}}}Context": "Submission"})
    study = ET.SubElement(odm, f"{{{ODM_NS}}}Study", {"OID": study_id})
    glob = ET.SubElement(study, f"{{{ODM_NS}}}GlobalVariables")
    for tag, text in (("StudyName", study_id), ("StudyDescription", study_id), ("ProtocolName", study_id)):
        ET.SubElement(glob, f"{{{ODM_NS}}}{tag}").text = text
    mdv = ET.SubElement(study, f"{{{ODM_NS}}}MetaDataVersion", {
        "OID": "MDV.1", "Name": f"{study_id} SDTM/ADaM", f"{{{DEF_NS}}}DefineVersion": "2.0.0"})
    items: dict[str, ET.Element] = {}
    for name, frame in datasets.items():
        is_adam = name.startswith("ad")
        group = ET.SubElement(mdv, f"{{{ODM_NS}}}ItemGroupDef", {
            "OID": f"IG.{name.upper()}", "Name": name.upper(), "Repeating": "No" if name in ("dm", "adsl") else "Yes",
            "SASDatasetName": name.upper(), "Purpose": "Analysis" if is_adam else "Tabulation",
            f"{{{DEF_NS}}}Structure": STRUCTURE[name], f"{{{DEF_NS}}}Class": CLASSES[name],
            f"{{{DEF_NS}}}ArchiveLocationID": f"LF.{name.upper()}", **({} if is_adam else {"Domain": name.upper()}),
        })
        _description(group, dataset_labels[name], language)
        for order, var in enumerate(variables[name], start=1):
            oid = f"IT.{name.upper()}.{var.name}"
            ET.SubElement(group, f"{{{ODM_NS}}}ItemRef", {"ItemOID": oid, "OrderNumber": str(order),
                                                          "Mandatory": "Yes" if var.name in ("STUDYID", "USUBJID")
                                                          else "No"})
            item = ET.Element(f"{{{ODM_NS}}}ItemDef", {"OID": oid, "Name": var.name, "SASFieldName": var.name,
                                                       "DataType": _data_type(var, frame), "Length": str(var.length)})
            _description(item, var.label, language)
            items[oid] = item
        leaf = ET.SubElement(group, f"{{{DEF_NS}}}leaf", {"ID": f"LF.{name.upper()}", f"{{{XLINK_NS}}}href":
                                                           f"{name}.xpt"})
        ET.SubElement(leaf, f"{{{DEF_NS}}}title").text = f"{name}.xpt"
    for item in items.values():
        mdv.append(item)
    ET.indent(odm)
    return ET.tostring(odm, encoding="utf-8", xml_declaration=True)


def _description(parent: ET.Element, text: str, language: str) -> None:
    desc = ET.SubElement(parent, f"{{{ODM_NS}}}Description")
    ET.SubElement(desc, f"{{{ODM_NS}}}TranslatedText", {"xml:lang": language}).text = text


def _cnsr_table() -> str:
    from evaluation.cdisc.pfs import CENSORING

    rows = ["  | CNSR | EVNTDESC | CNSDTDSC |", "  |---|---|---|",
            "  | 0 | DISEASE PROGRESSION / DEATH | (event) |"]
    rows += [f"  | {code} | {evnt} | {cns} |" for code, (evnt, cns) in CENSORING.items()]
    return "\n".join(rows)


def reviewers_guide(datasets: Mapping[str, pd.DataFrame], study_id: str, evaluator: str, encoding: str) -> str:
    """The data reviewer's guide (Markdown): what each dataset holds, how ADaM is derived, how to re-run it."""
    counts = "\n".join(f"| {name}.xpt | {len(frame)} | {frame.shape[1]} | {STRUCTURE[name]} |"
                       for name, frame in datasets.items())
    return f"""# Data reviewer's guide — study {study_id}

## Datasets
| file | records | variables | structure |
|---|---|---|---|
{counts}

All files are SAS transport version 5 (one dataset per file, file name = dataset name), character variables
sized to their longest value, labels ≤ 40 bytes ({encoding}). `define.xml` (Define-XML 2.0) describes every
variable. USUBJID is identical across datasets (`STUDYID-SITEID-NNNN`); no direct identifier is present.

## SDTM
- **DM** from the site CRF extracts (single arm: PD-1/PD-L1 inhibitor + chemotherapy).
- **TU/TR** from the blinded independent readers' lesion measurements (TREVALID = reader id): LDIAM for
  non-nodal targets, SAXIS for nodes (mm), TUMSTATE for lesions followed by status only.
- **CM** start of a new anticancer therapy (CRF NEW_THERAPY_DATE); **CE** investigator-reported progression
  (CRF PD_DATE). Each is submitted only when it has records.
- **RS** overall response per post-baseline visit and evaluator, RECIST 1.1 (RSCAT "RECIST 1.1") and
  iRECIST (RSCAT "iRECIST"), computed by the platform's response engine from TR-level measurements.

## ADaM (derived from SDTM only)
- Analysis evaluator: **{evaluator}** (`FINAL` = the adjudicated assessment of `fedresponse assess`, exported
  when every site store holds one; otherwise the first reader id).
- **ADSL**: one row per DM subject; TRTSDT = RFSTDTC; EFFFL = Y when RS holds a post-baseline response.
- **ADRS**: OVR/IOVR copied from RS (SRCSEQ = RSSEQ); BOR/CBOR/IBOR/ICBOR by RECIST 1.1 §4.4 (SD ≥ 42 days
  after the first dose, confirmation ≥ 28 days later) and iRECIST.
- **ADTTE**: PFS = first RECIST PD (RSDY) or death (DTHDTC); IPFS = date of the iUPD confirmed by iCPD, or
  death. AVAL = ADT − STARTDT + 1 days. Censoring (FDA 2018 Appendix 3 table A; EMA PFS appendix), one CNSR
  code per reason, EVNTDESC/CNSDTDSC naming it:
{_cnsr_table()}

## Programs
`programs/` holds the derivation code (`adam.py`, `sdtm.py`); running `fedresponse export-cdisc` on the same
source regenerates every file byte for byte.
"""
