"""Fake but realistic hospital identities: the PHI that de-identification at the source must remove.

Every value is distinctive enough that a byte scan of a de-identified store cannot match it by chance
(no short numbers, no common words), and each one is recorded in ``truth/phi.csv``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

SURNAMES = [("WANG", "王"), ("LI", "李"), ("ZHANG", "张"), ("LIU", "刘"), ("CHEN", "陈"), ("YANG", "杨"),
            ("HUANG", "黄"), ("ZHAO", "赵"), ("ZHOU", "周"), ("WU", "吴"), ("XU", "徐"), ("SUN", "孙")]
GIVEN = [("WEIMING", "伟明"), ("XIAOHONG", "晓红"), ("JIANGUO", "建国"), ("GUIYING", "桂英"), ("ZHIQIANG", "志强"),
         ("LIHUA", "丽华"), ("HAITAO", "海涛"), ("YUMEI", "玉梅"), ("DEFU", "德福"), ("SHUFEN", "淑芬")]
INSTITUTIONS = [("Eastern Provincial Chest Hospital", "88 Lakeside Road, Hangzhou"),
                ("Northern University Cancer Centre", "17 Wenhua Avenue, Shenyang"),
                ("Southwest Pulmonary Medical Centre", "5 Jinjiang Street, Chengdu"),
                ("Central City People's Hospital No.4", "301 Zhongshan Road, Wuhan")]
PHYSICIANS = ["QIAN^DONGSHENG^^Dr", "FENG^MINGYUE^^Dr", "JIANG^HAORAN^^Dr", "DU^RUOXI^^Dr", "PAN^ZEYU^^Dr"]
OPERATORS = ["TECH^GAOYUAN", "TECH^LUOXINYI", "TECH^MASHUAI", "TECH^HEJIAYING"]


@dataclass(frozen=True)
class Hospital:
    """A site's institution details that appear in every header it exports."""

    name: str
    address: str
    station: str
    device_serial: str
    referring: str
    performing: str
    operator: str


@dataclass(frozen=True)
class PatientIdentity:
    """A patient's identity at the hospital."""

    mrn: str
    other_id: str
    name_alphabetic: str
    name_ideographic: str
    birth_date: dt.date
    address: str
    phone: str

    @property
    def dicom_name(self) -> str:
        """PN with alphabetic and ideographic component groups (needs ``ISO_IR 192``)."""
        return f"{self.name_alphabetic}={self.name_ideographic}"


def hospital_for_site(site_index: int, rng: np.random.Generator) -> Hospital:
    name, address = INSTITUTIONS[site_index % len(INSTITUTIONS)]
    return Hospital(
        name=name, address=address, station=f"CTSTN{site_index + 1}{int(rng.integers(100, 999))}",
        device_serial=f"SN{int(rng.integers(10**7, 10**8))}",
        referring=PHYSICIANS[int(rng.integers(len(PHYSICIANS)))],
        performing=PHYSICIANS[int(rng.integers(len(PHYSICIANS)))],
        operator=OPERATORS[int(rng.integers(len(OPERATORS)))],
    )


def patient_identity(rng: np.random.Generator, site_index: int, age: int, consent: dt.date) -> PatientIdentity:
    """A patient's hospital identity; the birth date agrees with ``age`` at ``consent``."""
    surname, surname_zh = SURNAMES[int(rng.integers(len(SURNAMES)))]
    given, given_zh = GIVEN[int(rng.integers(len(GIVEN)))]
    birth = consent - dt.timedelta(days=int(age * 365.25 + rng.integers(1, 360)))
    return PatientIdentity(
        mrn=f"H{site_index + 1}MRN{int(rng.integers(10**7, 10**8))}",
        other_id=f"INS{int(rng.integers(10**9, 10**10))}",
        name_alphabetic=f"{surname}^{given}",
        name_ideographic=f"{surname_zh}^{given_zh}",
        birth_date=birth,
        address=f"{int(rng.integers(2, 999))} {given.title()} Lane Apt {int(rng.integers(100, 999))}",
        phone=f"1{int(rng.integers(30, 99))}-{int(rng.integers(1000, 9999))}-{int(rng.integers(1000, 9999))}",
    )


def accession_number(rng: np.random.Generator, site_index: int) -> str:
    return f"ACC{site_index + 1}{int(rng.integers(10**8, 10**9))}"
