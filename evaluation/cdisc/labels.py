"""Dataset and variable labels, English (CDISC SDTMIG 3.4 / ADaMIG 1.3 wording) and Chinese.

Each label must fit 40 bytes in the export encoding (UTF-8: a CJK character takes 3 bytes, so a Chinese
label holds at most 13 characters); :func:`evaluation.cdisc.xpt.check_label` refuses longer ones.
"""

from __future__ import annotations

DATASET_LABELS: dict[str, tuple[str, str]] = {
    "dm": ("Demographics", "人口统计学"),
    "tu": ("Tumor/Lesion Identification", "肿瘤病灶识别"),
    "tr": ("Tumor/Lesion Results", "肿瘤病灶测量结果"),
    "rs": ("Disease Response and Clin Classification", "疾病缓解评估"),
    "cm": ("Concomitant/Prior Medications", "合并用药"),
    "ce": ("Clinical Events", "临床事件"),
    "adsl": ("Subject-Level Analysis Dataset", "受试者水平分析数据集"),
    "adrs": ("Response Analysis Dataset", "疗效评估分析数据集"),
    "adtte": ("Time-to-Event Analysis Dataset", "事件时间分析数据集"),
}

VARIABLE_LABELS: dict[str, tuple[str, str]] = {
    "STUDYID": ("Study Identifier", "研究标识符"),
    "DOMAIN": ("Domain Abbreviation", "域缩写"),
    "USUBJID": ("Unique Subject Identifier", "受试者唯一标识符"),
    "SUBJID": ("Subject Identifier for the Study", "研究内受试者标识符"),
    "RFSTDTC": ("Subject Reference Start Date/Time", "受试者参考开始日期"),
    "SITEID": ("Study Site Identifier", "研究中心标识符"),
    "AGE": ("Age", "年龄"),
    "AGEU": ("Age Units", "年龄单位"),
    "SEX": ("Sex", "性别"),
    "ARMCD": ("Planned Arm Code", "计划组别代码"),
    "ARM": ("Description of Planned Arm", "计划组别描述"),
    "DTHDTC": ("Date/Time of Death", "死亡日期"),
    "DTHFL": ("Subject Death Flag", "死亡标记"),
    "TUSEQ": ("Sequence Number", "序号"),
    "TULNKID": ("Link ID", "关联标识"),
    "TUTESTCD": ("Tumor Identification Short Name", "肿瘤识别检查简称"),
    "TUTEST": ("Tumor Identification Test Name", "肿瘤识别检查名称"),
    "TUORRES": ("Tumor Identification Result", "肿瘤识别结果"),
    "TUSTRESC": ("Tumor Identification Result Std. Format", "肿瘤识别标准化结果"),
    "TULOC": ("Location of the Tumor", "肿瘤部位"),
    "TUEVAL": ("Evaluator", "评估者"),
    "TUEVALID": ("Evaluator Identifier", "评估者标识符"),
    "TUDY": ("Study Day of Tumor Identification", "肿瘤识别研究日"),
    "TRSEQ": ("Sequence Number", "序号"),
    "TRLNKID": ("Link ID", "关联标识"),
    "TRTESTCD": ("Tumor Assessment Short Name", "肿瘤评估检查简称"),
    "TRTEST": ("Tumor Assessment Test Name", "肿瘤评估检查名称"),
    "TRORRES": ("Result or Finding in Original Units", "原始单位结果"),
    "TRORRESU": ("Original Units", "原始单位"),
    "TRSTRESC": ("Character Result/Finding in Std Format", "标准化字符结果"),
    "TRSTRESN": ("Numeric Result/Finding in Standard Units", "标准化数值结果"),
    "TRSTRESU": ("Standard Units", "标准单位"),
    "TREVAL": ("Evaluator", "评估者"),
    "TREVALID": ("Evaluator Identifier", "评估者标识符"),
    "TRDY": ("Study Day of Tumor Measurement", "肿瘤测量研究日"),
    "RSSEQ": ("Sequence Number", "序号"),
    "RSTESTCD": ("Assessment Short Name", "评估简称"),
    "RSTEST": ("Assessment Name", "评估名称"),
    "RSCAT": ("Category for Assessment", "评估类别"),
    "RSORRES": ("Result or Finding in Original Units", "原始结果"),
    "RSSTRESC": ("Character Result/Finding in Std Format", "标准化字符结果"),
    "RSEVAL": ("Evaluator", "评估者"),
    "RSEVALID": ("Evaluator Identifier", "评估者标识符"),
    "RSDY": ("Study Day of Assessment", "评估研究日"),
    "CMSEQ": ("Sequence Number", "序号"),
    "CMTRT": ("Reported Name of Drug, Med, or Therapy", "药物或治疗名称"),
    "CMCAT": ("Category for Medication", "用药类别"),
    "CMSTDTC": ("Start Date/Time of Medication", "用药开始日期"),
    "CMSTDY": ("Study Day of Start of Medication", "用药开始研究日"),
    "CESEQ": ("Sequence Number", "序号"),
    "CETERM": ("Reported Term for the Clinical Event", "临床事件报告术语"),
    "CEDECOD": ("Dictionary-Derived Term", "标准术语"),
    "CECAT": ("Category for Clinical Event", "临床事件类别"),
    "CESTDTC": ("Start Date/Time of Clinical Event", "临床事件开始日期"),
    "CESTDY": ("Study Day of Start of Clinical Event", "临床事件开始研究日"),
    "VISITNUM": ("Visit Number", "访视编号"),
    "VISIT": ("Visit Name", "访视名称"),
    "TRTSDT": ("Date of First Exposure to Treatment", "首次用药日期"),
    "ITTFL": ("Intent-To-Treat Population Flag", "意向治疗人群标记"),
    "EFFFL": ("Efficacy Population Flag", "疗效分析人群标记"),
    "PARAMCD": ("Parameter Code", "参数代码"),
    "PARAM": ("Parameter", "参数"),
    "PARCAT1": ("Parameter Category 1", "参数类别1"),
    "AVALC": ("Analysis Value (C)", "分析值(字符)"),
    "AVAL": ("Analysis Value", "分析值"),
    "ADY": ("Analysis Relative Day", "分析相对日"),
    "ADT": ("Analysis Date", "分析日期"),
    "STARTDT": ("Time-to-Event Origin Date for Subject", "事件时间起点日期"),
    "CNSR": ("Censor", "删失"),
    "EVNTDESC": ("Event or Censoring Description", "事件或删失描述"),
    "CNSDTDSC": ("Censor Date Description", "删失日期描述"),
    "SRCDOM": ("Source Data", "来源数据"),
    "SRCVAR": ("Source Variable", "来源变量"),
    "SRCSEQ": ("Source Sequence Number", "来源序号"),
    "ANL01FL": ("Analysis Flag 01", "分析标记01"),
}


def labels_for(language: str) -> tuple[dict[str, str], dict[str, str]]:
    """``(dataset labels, variable labels)`` in ``"en"`` or ``"zh"``."""
    if language not in ("en", "zh"):
        raise ValueError(f"labels must be 'en' or 'zh', but was {language!r}")
    pick = 0 if language == "en" else 1
    return ({k: v[pick] for k, v in DATASET_LABELS.items()}, {k: v[pick] for k, v in VARIABLE_LABELS.items()})
