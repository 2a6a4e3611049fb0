"""Regenerate the ADaM datasets from the submitted SDTM datasets and compare them with the submitted ADaM.

Run from the package (only pandas and pyreadstat needed)::

    python adam/programs/derive_adam.py [SDTM_DIR] [ADAM_DIR] [OUT_DIR]

Defaults: ``../../sdtm``, ``..`` (relative to this file) and ``./regenerated``. Reads every ``*.xpt`` of
SDTM_DIR, derives ADSL, ADRS and ADTTE with the shipped derivation modules (``adam.py``, ``pfs.py``,
``bor.py``, ... — the code that produced the submitted files) and the protocol values of ``study.json``
(= ``study.yaml``) — and, when present, the sites' analysis-population flags of ``populations.csv`` (derived
at the sites from data SDTM does not carry; without it ADSL's flags are derived as far as SDTM allows) —
writes them as CSV to OUT_DIR and compares each with ADAM_DIR's XPT file: exit status 0
when every dataset matches (same columns, rows, values; numbers to 1e-9), 1 otherwise with the differences.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pyreadstat

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from adam import make_adam  # noqa: E402  (shipped beside this file)
from study_protocol import load_protocol  # noqa: E402


def read_xpt(path: Path) -> pd.DataFrame:
    """An XPT dataset as written: text as str ("" for blank), numbers (dates too) as float."""
    frame, _ = pyreadstat.read_xport(str(path), disable_datetime_conversion=True)
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].fillna("").astype(str)
        else:
            frame[column] = frame[column].astype("float64")
    return frame


def as_submitted(frame: pd.DataFrame) -> pd.DataFrame:
    """What the XPT writer stores: numbers as float64, text with missing as ""."""
    out = frame.reset_index(drop=True).copy()
    for column in out.columns:
        if pd.api.types.is_numeric_dtype(out[column]) and not pd.api.types.is_bool_dtype(out[column]):
            out[column] = out[column].astype("float64")
        else:
            out[column] = out[column].fillna("").astype(str).str.rstrip()
    return out


def differences(name: str, mine: pd.DataFrame, submitted: pd.DataFrame) -> list[str]:
    """Human-readable differences between a regenerated and a submitted dataset (empty when equal)."""
    if list(mine.columns) != list(submitted.columns):
        return [f"{name}: columns {list(mine.columns)} != submitted {list(submitted.columns)}"]
    if len(mine) != len(submitted):
        return [f"{name}: {len(mine)} rows != submitted {len(submitted)}"]
    out = []
    for column in mine.columns:
        a, b = mine[column], submitted[column]
        if a.dtype == "float64" and b.dtype == "float64":
            same = ((a - b).abs() <= 1e-9 * b.abs().clip(lower=1)) | (a.isna() & b.isna())
        else:
            same = a.astype(str) == b.astype(str)
        if not same.all():
            row = int((~same).to_numpy().nonzero()[0][0])
            out.append(f"{name}.{column}: {int((~same).sum())} rows differ, first row {row}: "
                       f"{a.iloc[row]!r} != submitted {b.iloc[row]!r}")
    return out


def main(argv: list[str]) -> int:
    sdtm_dir = Path(argv[1]) if len(argv) > 1 else HERE.parent.parent / "sdtm"
    adam_dir = Path(argv[2]) if len(argv) > 2 else HERE.parent
    out_dir = Path(argv[3]) if len(argv) > 3 else Path("regenerated")
    sdtm = {path.stem: read_xpt(path) for path in sorted(sdtm_dir.glob("*.xpt"))}
    if "dm" not in sdtm or "rs" not in sdtm:
        print(f"no dm.xpt/rs.xpt in {sdtm_dir}; pass the SDTM folder of the package", file=sys.stderr)
        return 2
    flags = HERE / "populations.csv"
    populations = pd.read_csv(flags, dtype=str, keep_default_na=False) if flags.exists() else None
    adam = make_adam(sdtm, load_protocol(), populations)
    out_dir.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    for name, frame in adam.items():
        mine = as_submitted(frame)
        mine.to_csv(out_dir / f"{name}.csv", index=False)
        submitted = adam_dir / f"{name}.xpt"
        found = differences(name, mine, read_xpt(submitted)) if submitted.exists() else [f"{submitted} missing"]
        problems += found
        print(f"{name}: {len(mine)} rows regenerated, {'MATCHES' if not found else 'DIFFERS FROM'} {submitted.name}")
    for problem in problems:
        print("  " + problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
