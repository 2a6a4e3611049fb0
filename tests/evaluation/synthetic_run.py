"""A small seeded run directory in exactly the formats ``fedresponse evaluate`` reads (test fixture only).

Writes, under ``run/``: per site ``sites/SXX/predictions.csv``, ``subjects.csv`` and ``visits.csv`` (the
response module's columns), ``populations.csv`` (evaluation.populations: the predicted subjects in EFFFL and
PFSFL, the three screening failures enrolled but not eligible), ``cutoffs.json``, ``privacy_ledger.csv``
(privacy.accounting columns) and ``privacy.json`` (budgets); under ``cohort/SXX/``: ``crf.csv`` (a few
screening failures) and ``reads.csv`` (two readers' baseline target lesions).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

VISITS = (("T0", -7), ("T1", 62), ("T2", 104), ("FU1", 167))


def _subject_rows(usubjid: str, y: int, rng: np.random.Generator) -> tuple[list[dict], dict]:
    base = float(rng.uniform(30, 110))
    drift = rng.uniform(-0.55, -0.25) if y else rng.uniform(-0.1, 0.45)
    sld = [base * (1 + drift * k / 3) for k in range(4)]
    rows, nadir = [], base
    for (visit, ady), value in zip(VISITS, sld, strict=True):
        if visit == "T0":
            rows.append(
                {
                    "USUBJID": usubjid,
                    "VISIT": visit,
                    "ADY": ady,
                    "SLD_MM": round(value, 1),
                    "PCHG_BASE": None,
                    "PCHG_NADIR": None,
                    "TRGRESP": "",
                    "NTRGRESP": "",
                    "NEWLES": "",
                    "RECIST_OVR": "",
                    "IRECIST_OVR": "",
                }
            )
            continue
        pchg = 100 * (value - base) / base
        pn = 100 * (value - nadir) / nadir
        resp = "PR" if pchg <= -30 else "PD" if (pn >= 20 and value - nadir >= 5) else "SD"
        nadir = min(nadir, value)
        rows.append(
            {
                "USUBJID": usubjid,
                "VISIT": visit,
                "ADY": ady,
                "SLD_MM": round(value, 1),
                "PCHG_BASE": round(pchg, 2),
                "PCHG_NADIR": round(pn, 2),
                "TRGRESP": resp,
                "NTRGRESP": "NON-CR/NON-PD",
                "NEWLES": "N",
                "RECIST_OVR": resp,
                "IRECIST_OVR": {"PR": "iPR", "SD": "iSD", "PD": "iUPD"}[resp],
            }
        )
    post = [r["RECIST_OVR"] for r in rows[1:]]
    bor = "PR" if "PR" in post else ("SD" if post[0] != "PD" else "PD")
    pd_day = next((r["ADY"] for r in rows[1:] if r["RECIST_OVR"] == "PD"), None)
    cbor = "PR" if post.count("PR") >= 2 else ("SD" if bor != "PD" else "PD")
    summary = {
        "USUBJID": usubjid,
        "BOR": bor,
        "CBOR": cbor,
        "IBOR": "i" + bor if bor != "PD" else "iUPD",
        "PD_ADY": pd_day,
        "IUPD_ADY": pd_day,
        "ICPD_ADY": None,
        "PSEUDOPROG": "N",
    }
    return rows, summary


def make_run(root: Path, seed: int = 0, n_sites: int = 2, n_per_site: int = 20, dhi: bool = True) -> dict[str, Path]:
    """Write a run and a cohort folder under ``root``; return their paths."""
    rng = np.random.default_rng(seed)
    run, cohort = root / "run", root / "cohort"
    ledger = []
    for s in range(1, n_sites + 1):
        site = f"S{s:02d}"
        ids = [f"FEDRESP-{site}-{i:04d}" for i in range(1, n_per_site + 1)]
        y = rng.integers(0, 2, n_per_site)
        y[:2] = [0, 1]
        pfs_true = rng.exponential(np.where(y == 1, 420.0, 160.0))
        censor = rng.uniform(120, 700, n_per_site)
        pfs = np.maximum(np.ceil(np.minimum(pfs_true, censor)), 1)
        event = (pfs_true <= censor).astype(int)
        preds = []
        for mode, strength in (("early", 0.45), ("full", 0.8)):
            score = 1 / (1 + np.exp(-(rng.normal(0, 1, n_per_site) + strength * (y - 0.5) * 2)))
            preds.append(
                pd.DataFrame(
                    {
                        "USUBJID": ids,
                        "MODE": mode,
                        "SCORE": np.round(score, 6),
                        "LABEL": y,
                        "PFS_DAYS": pfs.astype(int),
                        "PFS_EVENT": event,
                    }
                )
            )
        frame = pd.concat(preds, ignore_index=True)
        if dhi:
            frame["DHI"] = np.tile(np.round(np.abs(rng.normal(0.4, 0.25, n_per_site)) + 0.3 * y, 4), 2)
        folder = run / "sites" / site
        folder.mkdir(parents=True)
        frame.to_csv(folder / "predictions.csv", index=False)
        features = ["dSLD @ T1", "DHI @ T2", "node 03 @ T2", "clinical:PDL1_TPS"]
        pd.DataFrame(
            [{"USUBJID": u, "MODE": "full", "FEATURE": f, "ATTRIBUTION": round(float(rng.normal()), 4)}
             for u in ids for f in features]
        ).to_csv(folder / "attributions_full.csv", index=False)
        visits, subjects = [], []
        for usubjid, label in zip(ids, y, strict=True):
            v, sub = _subject_rows(usubjid, int(label), rng)
            visits += v
            subjects.append(sub)
        subjects[0]["PSEUDOPROG"] = "Y"
        pd.DataFrame(visits).to_csv(folder / "visits.csv", index=False)
        pd.DataFrame(subjects).to_csv(folder / "subjects.csv", index=False)
        _cohort_site(cohort / site, site, ids, visits, rng)
        _populations(folder, site, ids)
        for rnd in (1, 2, 3):
            ledger.append(
                {
                    "site": site,
                    "round": rnd,
                    "steps": 10 * rnd,
                    "sample_rate": 0.25,
                    "noise_multiplier": 1.1,
                    "delta": 1e-5,
                    "epsilon": round(0.9 * rnd + 0.3 * s, 4),
                    "accountant": "prv",
                }
            )
    pd.DataFrame(ledger).to_csv(run / "privacy_ledger.csv", index=False)
    budgets = {f"S{s:02d}": {"budget": 8.0} for s in range(1, n_sites + 1)}
    (run / "privacy.json").write_text(json.dumps({"delta": 1e-5, "sites": budgets}))
    (run / "cutoffs.json").write_text(json.dumps({"early": 0.5, "full": 0.48}))
    return {"run": run, "cohort": cohort}


def _populations(folder: Path, site: str, ids: list[str]) -> None:
    failed = {"0900": "not eligible: inclusion: ECOG must be 0 or 1",
              "0901": "not eligible: exclusion: radiotherapy of the target lesion before baseline",
              "0902": "not eligible: exclusion: other malignancy"}
    rows = [{"USUBJID": u, "SITEID": site, "ITTFL": "Y", "ELIGFL": "Y", "EFFFL": "Y", "PFSFL": "Y", "EXCLREAS": ""}
            for u in ids]
    rows += [{"USUBJID": f"FEDRESP-{site}-{n}", "SITEID": site, "ITTFL": "Y", "ELIGFL": "N", "EFFFL": "N",
              "PFSFL": "N", "EXCLREAS": why} for n, why in failed.items()]
    pd.DataFrame(rows).to_csv(folder / "populations.csv", index=False)


def _cohort_site(folder: Path, site: str, ids: list[str], visits: list[dict], rng: np.random.Generator) -> None:
    folder.mkdir(parents=True)
    crf = pd.DataFrame(
        {
            "USUBJID": ids,
            "SUBJID": [i[-4:] for i in ids],
            "SITEID": site,
            "AGE": rng.integers(40, 80, len(ids)),
            "ECOG": rng.integers(0, 2, len(ids)),
            "PRIOR_RT_TARGET": "N",
            "OTHER_MALIGNANCY": "N",
            "ORGAN_FUNCTION": "ADEQUATE",
        }
    )
    extra = pd.DataFrame(
        {
            "USUBJID": [f"FEDRESP-{site}-09{k:02d}" for k in range(3)],
            "SUBJID": ["0900", "0901", "0902"],
            "SITEID": site,
            "AGE": [60, 70, 65],
            "ECOG": [2, 1, 0],
            "PRIOR_RT_TARGET": ["N", "Y", "N"],
            "OTHER_MALIGNANCY": ["N", "N", "Y"],
            "ORGAN_FUNCTION": "ADEQUATE",
        }
    )
    pd.concat([crf, extra]).to_csv(folder / "crf.csv", index=False)
    reads = []
    for v in visits:
        if v["VISIT"] != "T0":
            continue
        for reader, noise in (("R1", 0.0), ("R2", float(rng.normal(0, 2)))):
            reads.append(
                {
                    "USUBJID": v["USUBJID"],
                    "VISIT": "T0",
                    "ADY": -7,
                    "LESIONID": "L01",
                    "ORGAN": "LUNG",
                    "CATEGORY": "TARGET",
                    "NODE": "N",
                    "DIAM_MM": round(v["SLD_MM"] + noise, 1),
                    "STATUS": "",
                    "READER": reader,
                }
            )
    pd.DataFrame(reads).to_csv(folder / "reads.csv", index=False)
