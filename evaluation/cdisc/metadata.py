"""Define-XML metadata of every submitted variable: origin, controlled terminology, derivation method.

The define is driven by the datasets as written: every column of every exported dataset must have an entry
here (:func:`variable_meta` raises :class:`CdiscExportError` naming the variable otherwise), so a variable
added to SDTM or ADaM cannot reach the package undocumented. Values of a variable with a codelist must be
terms of it (:func:`check_terms`).

Controlled terminology: CDISC submission values as published (SDTM/ADaM CT, NCI EVS); NCI codes are given
only where cited in docs/cdisc.md; sponsor-defined lists say so (``nci=""``, ``extensible`` irrelevant).
Origins follow Define-XML 2.1 (§5.3.11.2): Collected (CRF at the site: ``Investigator``; blinded
independent readers: ``Vendor``), Derived (``Sponsor``, with a MethodDef), Assigned, Protocol, Predecessor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from evaluation.exceptions import CdiscExportError

SDTMIG_VERSION = "3.4"
ADAMIG_VERSION = "1.3"
CT_VERSION = "2024-09-27"  # the CDISC CT package the submission values were checked against (docs/cdisc.md)


@dataclass(frozen=True)
class VarMeta:
    """Define metadata of one variable.

    ``origin``: Define-XML 2.1 origin type; ``source``: origin source (Investigator/Sponsor/Subject/Vendor)
    or, for ``Predecessor``, the ``DATASET.VARIABLE`` it is copied from; ``codelist`` / ``method``: keys of
    :data:`CODELISTS` / :data:`METHODS`; ``sas_date``: numeric SAS date written with format DATE9.;
    ``required``: SDTMIG/ADaMIG core "Req" (ItemRef Mandatory="Yes" when it also has no null).
    """

    origin: str
    source: str = ""
    codelist: str = ""
    method: str = ""
    sas_date: bool = False
    required: bool = False
    note: str = ""


@dataclass(frozen=True)
class Codelist:
    """A codelist: name, NCI code of the list (``""`` = sponsor-defined) and its terms → NCI term codes.

    ``terms=None``: the list enumerates the values found in the data (sponsor-defined parameter codes),
    decoded by ``decode`` (the paired name variable, e.g. PARAMCD → PARAM).
    """

    name: str
    nci: str = ""
    terms: dict[str, str] | None = field(default=None)
    decode: str = ""
    data_type: str = "text"


CODELISTS: dict[str, Codelist] = {
    "NY": Codelist("No Yes Response", "C66742", {"Y": "C49488", "N": "C49487"}),
    "SEX": Codelist("Sex", "C66731", {"M": "C20197", "F": "C16576", "U": "C17998"}),
    "AGEU": Codelist("Age Unit", "C66781", {"YEARS": "C29848"}),
    "COUNTRY": Codelist("Country (ISO 3166-1 alpha-3)", "C66786", {"CHN": "C16428"}),
    "UNIT": Codelist("Unit", "C71620", {"mm": "C28251"}),
    "METHOD": Codelist("Method", "C85492", {"CT SCAN": "C17204"}),
    "EVAL": Codelist("Evaluator", "C78735", {"INDEPENDENT ASSESSOR": "C70793", "INVESTIGATOR": "C25936",
                                             "ADJUDICATION COMMITTEE": ""}),
    "ARMNRS": Codelist("Arm Null Reason", "", {"NOT TREATED": "", "SCREEN FAILURE": "",
                                                      "NOT ASSIGNED": "", "ASSIGNED, NOT TREATED": ""}),
    "DOMAIN": Codelist("SDTM Domain Abbreviation", "C66734",
                       {"DM": "", "TU": "", "TR": "", "RS": "", "CM": "", "CE": ""}),
    "TUTESTCD": Codelist("Tumor or Lesion Identification Test Code", "", {"TUMIDENT": ""}),
    "TUTEST": Codelist("Tumor or Lesion Identification Test Name", "", {"Tumor Identification": ""}),
    "TUIDRS": Codelist("Tumor or Lesion Identification Result", "",
                       {"TARGET": "", "NON-TARGET": "", "NEW": ""}),
    "TRTESTCD": Codelist("Tumor or Lesion Properties Test Code", "",
                         {"LDIAM": "", "SAXIS": "", "TUMSTATE": ""}),
    "TRTEST": Codelist("Tumor or Lesion Properties Test Name", "",
                       {"Longest Diameter": "", "Short Axis": "", "Tumor State": ""}),
    "TRSTATE": Codelist("Tumor State Result (sponsor extension: INCREASED)", "",
                        {"ABSENT": "", "PRESENT": "", "INCREASED": "", "UNEQUIVOCAL PROGRESSION": ""}),
    "ND": Codelist("Not Done", "C66789", {"NOT DONE": "C49484"}),
    "RSTESTCD": Codelist("Oncology Response Assessment Test Code", "", {"OVRLRESP": ""}),
    "RSTEST": Codelist("Oncology Response Assessment Test Name", "", {"Overall Response": ""}),
    "RSCAT": Codelist("Category of Oncology Response Assessment", "", {"RECIST 1.1": "", "iRECIST": ""}),
    "RESP": Codelist("Oncology Response Assessment Result (RECIST 1.1, iRECIST)", "",
                     {"CR": "", "PR": "", "SD": "", "NON-CR/NON-PD": "", "PD": "", "NE": "", "iCR": "", "iPR": "",
                      "iSD": "", "NON-iCR/NON-iUPD": "", "iUPD": "", "iCPD": ""}),
    "LOC": Codelist("Anatomical Location", "C74456", {"LUNG": "C12468", "LYMPH NODE": "C12745", "LIVER": "C12392",
                                                      "BONE": "C12366", "BRAIN": "C12439",
                                                      "ADRENAL GLAND": "C12666"}),
    "PARAMCD": Codelist("Parameter Code (sponsor-defined)", decode="PARAM"),
    "SRCDOM": Codelist("Source Domain (sponsor-defined)", "", {"RS": "", "DM": "", "CM": "", "CE": "",
                                                               "ADSL": ""}),
    "CNSR": Codelist("Censoring Code (sponsor-defined, reviewer's guide)", "",
                     {"0": "", "1": "", "2": "", "3": "", "4": "", "5": ""}, data_type="integer"),
}


@dataclass(frozen=True)
class Method:
    """A derivation (MethodDef): name and the algorithm in words a reviewer can re-implement."""

    name: str
    description: str
    kind: str = "Computation"


METHODS: dict[str, Method] = {
    "SEQ": Method("Sequence number", "Order of the subject's records in the dataset's sort order, from 1."),
    "STUDY_DAY": Method("Study day", "--DY = --DTC - RFSTDTC + 1 when on or after RFSTDTC, else --DTC - "
                                     "RFSTDTC (CDISC: no day 0); collected as the scan's study day."),
    "DTC_FROM_DAY": Method("Assessment date", "--DTC = RFSTDTC + (--DY - 1) days for --DY > 0, RFSTDTC + --DY "
                                              "days otherwise (ISO 8601). RFSTDTC is the per-patient shifted "
                                              "first-dose date of the de-identified site store."),
    "VISITNUM": Method("Visit number", "Protocol VISITNUM of T0/T1/T2 (configs/study.yaml); follow-up visit FUn "
                                       "= last protocol VISITNUM + n."),
    "TUMIDENT": Method("Lesion first identification", "One record per lesion and reader at the first visit the "
                                                      "reader recorded it; TUORRES = its RECIST category."),
    "TR_TEST": Method("Lesion measurement test", "LDIAM for a measured non-nodal lesion, SAXIS for a measured "
                                                 "lymph node, TUMSTATE for a lesion followed by status only."),
    "OVRLRESP": Method("Overall response per visit", "RECIST 1.1 (Eisenhauer 2009) and iRECIST (Seymour 2017) "
                                                     "overall response of each reader computed from that "
                                                     "reader's TR measurements by the platform's response "
                                                     "engine; FINAL = adjudicated assessment."),
    "DM_ARM": Method("Actual arm", "ACTARMCD/ACTARM = the planned single arm when the subject received a first "
                                   "dose (RFXSTDTC not null), else null with ARMNRS = NOT TREATED."),
    "DM_DTH": Method("Death flag", "DTHFL = Y when DTHDTC is not null."),
    "DM_END": Method("End of participation", "RFENDTC = RFPENDTC = DTHDTC when the subject died, else the "
                                             "date of last contact."),
    "SAS_DATE": Method("ISO date to SAS date", "Numeric date = ISO 8601 date - 1960-01-01 in days (SAS "
                                               "date), displayed with DATE9."),
    "TRTSDT": Method("Treatment start", "TRTSDT = DM.RFXSTDTC (first dose) as a SAS date."),
    "TRTEDT": Method("Treatment end", "TRTEDT = DM.RFXENDTC as a SAS date (null: not collected)."),
    "TRT01": Method("Treatment of period 01", "Single-arm study: TRT01P = DM.ARM; TRT01A = DM.ACTARM."),
    "POPFL": Method("Analysis population flags", "configs/study.yaml `populations`, derived once per site by "
                                                 "evaluation.populations (fedresponse assess): ITTFL all "
                                                 "enrolled; ELIGFL eligibility criteria met, no unresolved "
                                                 "HARD query, no imaging REJECT; EARLYFL eligible (reasons "
                                                 "about T2 alone do not count) + CT at T0 and T1 + a reference "
                                                 "label (early mode); EFFFL eligible + CT at every "
                                                 "efficacy visit + a reference label; PFSFL EFFFL + no open "
                                                 "HARD query on a PFS field. EXCLREAS says why not."),
    "EFFFL_RS": Method("Efficacy flag (no population file)", "When the site store holds no populations file: "
                                                             "EFFFL = Y when RS holds a post-baseline response."),
    "AVAL_RESP": Method("Numeric response", "AVAL = 1 CR/iCR, 2 PR/iPR, 3 SD/iSD/NON-CR/NON-PD, 4 PD/iUPD, "
                                            "5 iCPD, 6 NE."),
    "OVR": Method("Visit response", "PARAMCD OVR/IOVR: AVALC = RS.RSSTRESC of the analysis evaluator for RSCAT "
                                    "RECIST 1.1 / iRECIST; ADY = RS.RSDY; SRCSEQ = RS.RSSEQ."),
    "BOR": Method("Best overall response", "BOR/IBOR: best of CR > PR > SD > PD over the visits up to the first "
                                           "PD, SD counting only when assessed >= 42 days (protocol sd_min_days) "
                                           "after the first dose; CBOR/ICBOR: CR/PR need a repeat CR/PR >= 28 "
                                           "days later (confirm_min_days), else SD when that qualifies "
                                           "(RECIST 1.1 section 4.4; iRECIST analogous); NE when no "
                                           "assessment."),
    "PFS_AVAL": Method("Time to event", "AVAL = ADT - STARTDT + 1 (days); ADT = event or censoring date."),
    "PFS": Method("PFS event and censoring", "PFS: first RECIST 1.1 PD (RS) or death (DM.DTHDTC); IPFS: the "
                                             "iUPD that an iCPD confirmed, or death. Censoring (CNSR): 1 no event "
                                             "(last adequate assessment), 2 no adequate post-baseline assessment "
                                             "(day 1), 3 new anticancer therapy (CM.CMSTDTC), 4 event after 2+ "
                                             "missed assessments, 5 clinical progression (CE.CESTDTC) before "
                                             "radiological PD; see the reviewer's guide table."),
    "STARTDT": Method("Time-to-event origin", "STARTDT = ADSL.TRTSDT (first dose)."),
}


def _pred(source: str, **kw: object) -> VarMeta:
    return VarMeta("Predecessor", source, **kw)  # type: ignore[arg-type]


_CRF = "Investigator"
_READERS = "Vendor"  # blinded independent central readers
_SPONSOR = "Sponsor"

#: variables shared by every dataset that holds them
COMMON: dict[str, VarMeta] = {
    "STUDYID": VarMeta("Protocol", required=True, note="configs/study.yaml study_id"),
    "DOMAIN": VarMeta("Assigned", _SPONSOR, codelist="DOMAIN", required=True),
    "USUBJID": VarMeta("Assigned", _SPONSOR, required=True, note="STUDYID-SITEID-NNNN, assigned at ingest"),
    "VISITNUM": VarMeta("Derived", _SPONSOR, method="VISITNUM"),
    "VISIT": VarMeta("Collected", _READERS),
}

SDTM: dict[str, dict[str, VarMeta]] = {
    "dm": {
        "SUBJID": VarMeta("Collected", _CRF, required=True), "RFSTDTC": VarMeta("Collected", _CRF),
        "RFENDTC": VarMeta("Derived", _SPONSOR, method="DM_END"), "RFXSTDTC": VarMeta("Collected", _CRF),
        "RFXENDTC": VarMeta("Not Available", note="last dose date not collected by the CRF"),
        "RFICDTC": VarMeta("Collected", _CRF), "RFPENDTC": VarMeta("Derived", _SPONSOR, method="DM_END"),
        "DTHDTC": VarMeta("Collected", _CRF), "DTHFL": VarMeta("Derived", _SPONSOR, codelist="NY", method="DM_DTH"),
        "SITEID": VarMeta("Assigned", _SPONSOR, required=True), "AGE": VarMeta("Collected", _CRF),
        "AGEU": VarMeta("Assigned", _SPONSOR, codelist="AGEU"),
        "SEX": VarMeta("Collected", _CRF, codelist="SEX", required=True),
        "RACE": VarMeta("Not Available", note="race not collected by the registry CRF"),
        "ARMCD": VarMeta("Protocol"), "ARM": VarMeta("Protocol"),
        "ACTARMCD": VarMeta("Derived", _SPONSOR, method="DM_ARM"),
        "ACTARM": VarMeta("Derived", _SPONSOR, method="DM_ARM"),
        "ARMNRS": VarMeta("Derived", _SPONSOR, codelist="ARMNRS", method="DM_ARM"),
        "ACTARMUD": VarMeta("Not Available", note="no unplanned arm in a single-arm study"),
        "COUNTRY": VarMeta("Protocol", codelist="COUNTRY", required=True),
    },
    "tu": {
        "TUSEQ": VarMeta("Derived", _SPONSOR, method="SEQ", required=True), "TULNKID": VarMeta("Collected", _READERS),
        "TUTESTCD": VarMeta("Assigned", _SPONSOR, codelist="TUTESTCD", method="TUMIDENT", required=True),
        "TUTEST": VarMeta("Assigned", _SPONSOR, codelist="TUTEST", required=True),
        "TUORRES": VarMeta("Collected", _READERS, codelist="TUIDRS"),
        "TUSTRESC": VarMeta("Derived", _SPONSOR, codelist="TUIDRS", method="TUMIDENT"),
        "TULOC": VarMeta("Collected", _READERS, codelist="LOC"),
        "TUMETHOD": VarMeta("Protocol", codelist="METHOD"), "TUEVAL": VarMeta("Assigned", _SPONSOR, codelist="EVAL"),
        "TUEVALID": VarMeta("Collected", _READERS), "TUDTC": VarMeta("Derived", _SPONSOR, method="DTC_FROM_DAY"),
        "TUDY": VarMeta("Collected", _READERS, method="STUDY_DAY"),
    },
    "tr": {
        "TRSEQ": VarMeta("Derived", _SPONSOR, method="SEQ", required=True), "TRLNKID": VarMeta("Collected", _READERS),
        "TRTESTCD": VarMeta("Derived", _SPONSOR, codelist="TRTESTCD", method="TR_TEST", required=True),
        "TRTEST": VarMeta("Derived", _SPONSOR, codelist="TRTEST", method="TR_TEST", required=True),
        "TRORRES": VarMeta("Collected", _READERS), "TRORRESU": VarMeta("Collected", _READERS, codelist="UNIT"),
        "TRSTRESC": VarMeta("Derived", _SPONSOR, method="TR_TEST"),
        "TRSTRESN": VarMeta("Derived", _SPONSOR, method="TR_TEST"),
        "TRSTRESU": VarMeta("Assigned", _SPONSOR, codelist="UNIT"),
        "TRSTAT": VarMeta("Derived", _SPONSOR, codelist="ND", method="TR_TEST"),
        "TRREASND": VarMeta("Collected", _READERS), "TRMETHOD": VarMeta("Protocol", codelist="METHOD"),
        "TREVAL": VarMeta("Assigned", _SPONSOR, codelist="EVAL"), "TREVALID": VarMeta("Collected", _READERS),
        "TRDTC": VarMeta("Derived", _SPONSOR, method="DTC_FROM_DAY"),
        "TRDY": VarMeta("Collected", _READERS, method="STUDY_DAY"),
    },
    "rs": {
        "RSSEQ": VarMeta("Derived", _SPONSOR, method="SEQ", required=True),
        "RSTESTCD": VarMeta("Assigned", _SPONSOR, codelist="RSTESTCD", required=True),
        "RSTEST": VarMeta("Assigned", _SPONSOR, codelist="RSTEST", required=True),
        "RSCAT": VarMeta("Assigned", _SPONSOR, codelist="RSCAT"),
        "RSORRES": VarMeta("Derived", _SPONSOR, codelist="RESP", method="OVRLRESP"),
        "RSSTRESC": VarMeta("Derived", _SPONSOR, codelist="RESP", method="OVRLRESP"),
        "RSEVAL": VarMeta("Assigned", _SPONSOR, codelist="EVAL"), "RSEVALID": VarMeta("Assigned", _SPONSOR),
        "RSDTC": VarMeta("Derived", _SPONSOR, method="DTC_FROM_DAY"),
        "RSDY": VarMeta("Derived", _SPONSOR, method="STUDY_DAY"),
    },
    "cm": {
        "CMSEQ": VarMeta("Derived", _SPONSOR, method="SEQ", required=True),
        "CMTRT": VarMeta("Assigned", _SPONSOR, required=True, note="CRF records the start of a new therapy only"),
        "CMDECOD": VarMeta("Not Available", note="the CRF records no drug name, so nothing to code (WHODrug)"),
        "CMCAT": VarMeta("Assigned", _SPONSOR), "CMSTDTC": VarMeta("Collected", _CRF, note="CRF NEW_THERAPY_DATE"),
        "CMSTDY": VarMeta("Derived", _SPONSOR, method="STUDY_DAY"),
    },
    "ce": {
        "CESEQ": VarMeta("Derived", _SPONSOR, method="SEQ", required=True),
        "CETERM": VarMeta("Assigned", _SPONSOR, required=True), "CEDECOD": VarMeta("Assigned", _SPONSOR),
        "CECAT": VarMeta("Assigned", _SPONSOR), "CESTDTC": VarMeta("Collected", _CRF, note="CRF PD_DATE"),
        "CESTDY": VarMeta("Derived", _SPONSOR, method="STUDY_DAY"),
    },
}

_FLAG = VarMeta("Derived", _SPONSOR, codelist="NY", method="POPFL")
ADAM: dict[str, dict[str, VarMeta]] = {
    "adsl": {
        "SUBJID": _pred("DM.SUBJID", required=True), "SITEID": _pred("DM.SITEID", required=True),
        "AGE": _pred("DM.AGE", required=True), "AGEU": _pred("DM.AGEU", codelist="AGEU", required=True),
        "SEX": _pred("DM.SEX", codelist="SEX", required=True), "RACE": _pred("DM.RACE"),
        "COUNTRY": _pred("DM.COUNTRY", codelist="COUNTRY"), "ARMCD": _pred("DM.ARMCD", required=True),
        "ARM": _pred("DM.ARM", required=True), "ACTARMCD": _pred("DM.ACTARMCD", required=True),
        "ACTARM": _pred("DM.ACTARM", required=True),
        "TRT01P": VarMeta("Derived", _SPONSOR, method="TRT01", required=True),
        "TRT01A": VarMeta("Derived", _SPONSOR, method="TRT01"),
        "TRT01PN": VarMeta("Derived", _SPONSOR, method="TRT01"),
        "TRT01AN": VarMeta("Derived", _SPONSOR, method="TRT01"),
        "TRTSDT": VarMeta("Derived", _SPONSOR, method="TRTSDT", sas_date=True),
        "TRTEDT": VarMeta("Derived", _SPONSOR, method="TRTEDT", sas_date=True),
        "ITTFL": _FLAG, "ELIGFL": _FLAG, "EARLYFL": _FLAG, "EFFFL": _FLAG, "PFSFL": _FLAG, "SAFFL": _FLAG,
        "EXCLREAS": VarMeta("Derived", _SPONSOR, method="POPFL"),
        "DTHFL": _pred("DM.DTHFL", codelist="NY"),
    },
    "adrs": {
        "SITEID": _pred("ADSL.SITEID"),
        "PARAMCD": VarMeta("Assigned", _SPONSOR, codelist="PARAMCD", required=True),
        "PARAM": VarMeta("Assigned", _SPONSOR, required=True), "PARCAT1": VarMeta("Assigned", _SPONSOR),
        "AVALC": VarMeta("Derived", _SPONSOR, codelist="RESP", method="BOR"),
        "AVAL": VarMeta("Derived", _SPONSOR, method="AVAL_RESP"), "ADY": VarMeta("Derived", _SPONSOR, method="OVR"),
        "ADT": VarMeta("Derived", _SPONSOR, method="SAS_DATE", sas_date=True),
        "TRTSDT": _pred("ADSL.TRTSDT", sas_date=True), "SRCDOM": VarMeta("Assigned", _SPONSOR, codelist="SRCDOM"),
        "SRCVAR": VarMeta("Assigned", _SPONSOR), "SRCSEQ": VarMeta("Derived", _SPONSOR, method="OVR"),
        "ANL01FL": VarMeta("Derived", _SPONSOR, codelist="NY", method="OVR"),
        "ITTFL": _pred("ADSL.ITTFL", codelist="NY"), "EFFFL": _pred("ADSL.EFFFL", codelist="NY"),
    },
    "adtte": {
        "SITEID": _pred("ADSL.SITEID"),
        "PARAMCD": VarMeta("Assigned", _SPONSOR, codelist="PARAMCD", required=True),
        "PARAM": VarMeta("Assigned", _SPONSOR, required=True),
        "AVAL": VarMeta("Derived", _SPONSOR, method="PFS_AVAL", required=True),
        "CNSR": VarMeta("Derived", _SPONSOR, codelist="CNSR", method="PFS", required=True),
        "EVNTDESC": VarMeta("Derived", _SPONSOR, method="PFS"), "CNSDTDSC": VarMeta("Derived", _SPONSOR, method="PFS"),
        "STARTDT": VarMeta("Derived", _SPONSOR, method="STARTDT", sas_date=True, required=True),
        "ADT": VarMeta("Derived", _SPONSOR, method="PFS", sas_date=True, required=True),
        "SRCDOM": VarMeta("Assigned", _SPONSOR, codelist="SRCDOM"), "SRCVAR": VarMeta("Assigned", _SPONSOR),
        "SRCSEQ": VarMeta("Derived", _SPONSOR, method="PFS"),
        "ITTFL": _pred("ADSL.ITTFL", codelist="NY"), "EFFFL": _pred("ADSL.EFFFL", codelist="NY"),
        "PFSFL": _pred("ADSL.PFSFL", codelist="NY"),
    },
}


#: value-level metadata: (dataset, variable) → the variable whose values split it (a ValueListDef with one
#: WhereClauseDef per value found, e.g. TR.TRSTRESN where TRTESTCD = LDIAM)
VALUE_LISTS: dict[tuple[str, str], str] = {
    ("tr", "TRORRES"): "TRTESTCD", ("tr", "TRSTRESC"): "TRTESTCD", ("tr", "TRSTRESN"): "TRTESTCD",
    ("rs", "RSSTRESC"): "RSCAT",
    ("adrs", "AVALC"): "PARAMCD", ("adrs", "AVAL"): "PARAMCD", ("adtte", "AVAL"): "PARAMCD",
}


def is_adam(dataset: str) -> bool:
    """ADaM datasets are named ``ad*``; everything else is SDTM."""
    return dataset.startswith("ad")


def variable_meta(dataset: str, variable: str) -> VarMeta:
    """Metadata of ``dataset.variable``; :class:`CdiscExportError` when it has none."""
    own = (ADAM if is_adam(dataset) else SDTM).get(dataset)
    if own is None:
        raise CdiscExportError(f"dataset {dataset!r} has no define metadata; add it to evaluation/cdisc/metadata.py")
    meta = own.get(variable) or COMMON.get(variable)
    if meta is None:
        raise CdiscExportError(f"{dataset}.{variable} has no define metadata (origin, codelist, method); add it to "
                               f"evaluation/cdisc/metadata.py {'ADAM' if is_adam(dataset) else 'SDTM'}[{dataset!r}]")
    return meta


def sas_date_formats(dataset: str, columns: list[str]) -> dict[str, str]:
    """``{variable: "DATE9."}`` for the numeric SAS dates among ``columns``."""
    return {c: "DATE9." for c in columns if variable_meta(dataset, c).sas_date}


def _terms_of(value: object, codelist: Codelist) -> str:
    if codelist.data_type == "integer" and isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def check_terms(dataset: str, frame: pd.DataFrame) -> None:
    """Every non-null value of a variable with a fixed codelist is one of its terms."""
    for column in frame.columns:
        meta = variable_meta(dataset, str(column))
        if not meta.codelist:
            continue
        codelist = CODELISTS[meta.codelist]
        if codelist.terms is None:
            continue
        values = {_terms_of(v, codelist) for v in frame[column].dropna() if str(v) != ""}
        unknown = sorted(values - set(codelist.terms))
        if unknown:
            raise CdiscExportError(f"{dataset}.{column}: {unknown} not in codelist {meta.codelist} "
                                   f"({codelist.name}: {sorted(codelist.terms)}); use the CDISC submission value "
                                   "or extend the codelist in evaluation/cdisc/metadata.py")
