"""SAS transport (XPORT) version 5 writer, with the submission naming rules enforced before writing.

Format: SAS Institute, *TS-140: The record layout of a data set in SAS transport (XPORT) format*. Every
record is 80 bytes; a file holds one library header, one member (dataset) header with one 140-byte
NAMESTR per variable, and the observations, numbers as 8-byte IBM System/360 hexadecimal floating point
and character values blank-padded to the variable's length.

Rules (DOMAIN §3, the data-submission guideline): dataset names lowercase letters/digits, starting with a
letter, ≤ 8; variable names uppercase letters/digits, starting with a letter, ≤ 8; labels ≤ 40 *bytes* in
the chosen encoding, without unpaired quotes or brackets or control characters; character length = the
longest value in bytes, ≤ 200.
"""

from __future__ import annotations

import math
import os
import re
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.exceptions import CdiscExportError

SAS_FORMAT = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]{0,7})(?P<width>\d{0,3})\.(?P<decimals>\d{0,2})$")
DATASET_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")
VARIABLE_NAME = re.compile(r"^[A-Z][A-Z0-9]{0,7}$")
MAX_LABEL_BYTES = 40
MAX_CHAR_BYTES = 200
_PAIRS = (("(", ")"), ("[", "]"), ("{", "}"), ("（", "）"), ("【", "】"))


@dataclass(frozen=True)
class Variable:
    """One column as written: name, label, type (``"char"``/``"num"``), length in bytes and SAS display format
    (``"DATE9."`` on numeric dates, else ``""``)."""

    name: str
    label: str
    kind: str
    length: int
    display_format: str = ""


def check_label(label: str, encoding: str, where: str) -> bytes:
    """Return the encoded label after checking the label rules; raise :class:`CdiscExportError` otherwise."""
    raw = label.encode(encoding)
    if len(raw) > MAX_LABEL_BYTES:
        raise CdiscExportError(
            f"{where}: label {label!r} is {len(raw)} bytes in {encoding}, over the {MAX_LABEL_BYTES}-byte limit; "
            "shorten it in evaluation/cdisc/labels.py"
        )
    if any(ord(c) < 32 for c in label) or label.count('"') % 2 or label.count("'") % 2:
        raise CdiscExportError(f"{where}: label {label!r} holds control characters or an unpaired quote")
    for opening, closing in _PAIRS:
        if label.count(opening) != label.count(closing):
            raise CdiscExportError(f"{where}: label {label!r} has unpaired brackets {opening}{closing}")
    return raw


def _ibm(value: float) -> bytes:
    """IEEE double → 8-byte IBM hexadecimal float (big-endian); NaN → SAS missing ``.``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return b"\x2e" + b"\x00" * 7
    if value == 0:
        return b"\x00" * 8
    sign = 0x80 if value < 0 else 0
    mantissa, exponent = math.frexp(abs(value))  # abs(value) = mantissa * 2**exponent, 0.5 <= mantissa < 1
    # IBM: value = 0.F * 16**(E - 64); shift so that exponent is a multiple of 4
    shift = (-exponent) % 4
    exponent16 = (exponent + shift) // 4
    fraction = round(mantissa * 2.0 ** (56 - shift))
    if fraction >= 1 << 56:  # rounding overflowed into a new hex digit
        fraction >>= 4
        exponent16 += 1
    if not -64 <= exponent16 <= 63:
        raise CdiscExportError(f"number {value!r} is outside the IBM float range of XPORT v5")
    return struct.pack(">B", sign | (exponent16 + 64)) + fraction.to_bytes(7, "big")


def _record(text: str | bytes) -> bytes:
    raw = text.encode("ascii") if isinstance(text, str) else text
    if len(raw) > 80:
        raise AssertionError(f"header record longer than 80 bytes: {raw!r}")
    return raw.ljust(80, b" ")


def _stamp(when: datetime) -> str:
    return when.strftime("%d%b%y:%H:%M:%S").upper()


def describe(frame: pd.DataFrame, labels: Mapping[str, str], encoding: str, dataset: str,
             formats: Mapping[str, str] | None = None) -> list[Variable]:
    """Variables of ``frame`` with checked names and labels and fitted lengths; ``formats`` gives numeric
    variables a SAS display format (``{"ADT": "DATE9."}``)."""
    formats = formats or {}
    out = []
    for column in frame.columns:
        if not VARIABLE_NAME.match(str(column)):
            raise CdiscExportError(
                f"{dataset}: variable name {column!r} breaks the rule (uppercase letters/digits, letter first, ≤ 8)"
            )
        if column not in labels:
            raise CdiscExportError(f"{dataset}.{column} has no label; add one to evaluation/cdisc/labels.py")
        check_label(labels[column], encoding, f"{dataset}.{column}")
        if pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column]):
            fmt = formats.get(str(column), "")
            if fmt and not SAS_FORMAT.match(fmt):
                raise CdiscExportError(f"{dataset}.{column}: display format {fmt!r} is not a SAS format (e.g. DATE9.)")
            out.append(Variable(str(column), labels[column], "num", 8, fmt))
            continue
        if str(column) in formats:
            raise CdiscExportError(f"{dataset}.{column} is character but has display format {formats[column]!r}; "
                                   "formats apply to numeric dates (store them as SAS dates)")
        values = frame[column].fillna("").astype(str)
        length = max([len(v.encode(encoding)) for v in values] + [1])
        if length > MAX_CHAR_BYTES:
            raise CdiscExportError(f"{dataset}.{column}: a value is {length} bytes, over {MAX_CHAR_BYTES}")
        out.append(Variable(str(column), labels[column], "char", length))
    return out


def _namestr(var: Variable, index: int, position: int, encoding: str) -> bytes:
    label = var.label.encode(encoding).ljust(40, b" ")
    head = struct.pack(">hhhh", 2 if var.kind == "char" else 1, 0, var.length, index)
    fmt = SAS_FORMAT.match(var.display_format) if var.display_format else None
    nform = fmt["name"].encode("ascii").ljust(8) if fmt else b" " * 8
    nfl, nfd = (int(fmt["width"] or 0), int(fmt["decimals"] or 0)) if fmt else (0, 0)
    body = var.name.encode("ascii").ljust(8) + label + nform + struct.pack(">hhhh", nfl, nfd, 0, 0)
    tail = b" " * 8 + struct.pack(">hhi", 0, 0, position) + b"\x00" * 52
    raw = head + body + tail
    assert len(raw) == 140
    return raw


def _observations(frame: pd.DataFrame, variables: list[Variable], encoding: str) -> bytes:
    columns = []
    for var in variables:
        series = frame[var.name]
        if var.kind == "num":
            columns.append([_ibm(float(v)) if pd.notna(v) else _ibm(float("nan")) for v in series])
        else:
            columns.append([str(v).encode(encoding).ljust(var.length, b" ") if pd.notna(v) and v != ""
                            else b" " * var.length for v in series])
    rows = b"".join(b"".join(cells) for cells in zip(*columns, strict=True)) if columns and len(frame) else b""
    pad = (-len(rows)) % 80
    return rows + b" " * pad


def xpt_bytes(frame: pd.DataFrame, dataset: str, dataset_label: str, labels: Mapping[str, str],
              encoding: str = "utf-8", when: datetime | None = None,
              formats: Mapping[str, str] | None = None) -> tuple[bytes, list[Variable]]:
    """The complete XPORT v5 file content of one dataset and the variables as written (``when``: the
    creation time in the headers, default 2026-01-01 so that bytes are reproducible)."""
    if not DATASET_NAME.match(dataset):
        raise CdiscExportError(f"dataset name {dataset!r} breaks the rule (lowercase letters/digits, ≤ 8)")
    check_label(dataset_label, encoding, f"dataset {dataset}")
    variables = describe(frame, labels, encoding, dataset, formats)
    stamp = _stamp(when or datetime(2026, 1, 1))
    parts = [
        _record("HEADER RECORD*******LIBRARY HEADER RECORD!!!!!!!000000000000000000000000000000"),
        _record("SAS     SAS     SASLIB  9.4     " + "X64_LIN ".ljust(8) + " " * 24 + stamp),
        _record(stamp),
        _record("HEADER RECORD*******MEMBER  HEADER RECORD!!!!!!!000000000000000001600000000140"),
        _record("HEADER RECORD*******DSCRPTR HEADER RECORD!!!!!!!000000000000000000000000000000"),
        _record("SAS     " + dataset.upper().ljust(8) + "SASDATA 9.4     " + "X64_LIN ".ljust(8) + " " * 24 + stamp),
        _record(stamp.encode("ascii") + b" " * 16 + dataset_label.encode(encoding).ljust(40, b" ") + b" " * 8),
        _record(f"HEADER RECORD*******NAMESTR HEADER RECORD!!!!!!!000000{len(variables):04d}00000000000000000000"),
    ]
    position, names = 0, b""
    for index, var in enumerate(variables, start=1):
        names += _namestr(var, index, position, encoding)
        position += var.length
    names += b" " * ((-len(names)) % 80)
    parts += [names, _record("HEADER RECORD*******OBS     HEADER RECORD!!!!!!!000000000000000000000000000000")]
    parts.append(_observations(frame, variables, encoding))
    return b"".join(parts), variables


def write_xpt(path: Path, frame: pd.DataFrame, dataset_label: str, labels: Mapping[str, str],
              encoding: str = "utf-8", formats: Mapping[str, str] | None = None,
              when: datetime | None = None) -> list[Variable]:
    """Write ``frame`` to ``path`` (file name = dataset name + ``.xpt``) atomically; return its variables."""
    dataset = path.stem
    data, variables = xpt_bytes(frame, dataset, dataset_label, labels, encoding, when, formats)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return variables


def to_numeric_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Cast ``columns`` to float64 (XPORT numbers), keeping missing as NaN."""
    out = frame.copy()
    for column in columns:
        out[column] = pd.to_numeric(out[column], errors="coerce").astype(np.float64)
    return out
