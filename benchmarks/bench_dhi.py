"""DHI repeatability (ICC with bootstrap CIs under perturbed segmentation and noise), association with
response and PFS (raw and adjusted for the volume change), calibration of the component scales, and speed.

    .venv/bin/python benchmarks/bench_dhi.py --preset quick            # synthesize + ingest a small cohort
    .venv/bin/python benchmarks/bench_dhi.py --stores /tmp/st/S01 /tmp/st/S02 --cohort /tmp/c
    .venv/bin/python benchmarks/bench_dhi.py --cohort /tmp/trial90/cohort    # stores found in /tmp/trial90/stores

For every patient (largest T0 target lesion) the DHI is recomputed under perturbations in the spirit of
Zwanenburg et al. (Sci Rep 2019, "Assessing robustness of radiomic features by image perturbation"):
segmentation eroded / dilated by one voxel, contour jitter (a smooth random field of ~0.7 voxel added to
the signed distance map), and Gaussian image noise of 10 HU, each applied independently at every time
point. Repeatability is ICC(3,1) and ICC(2,1) over (patients × conditions), with percentile bootstrap CIs
over patients, for the DHI and each standardised component. Association (``evaluation.dhi_stats``): AUC
for the generator's responder flag, Spearman ρ with the log volume change, the partial correlation and
the Cox HR of PFS adjusted for it (``truth/subjects.csv``, read only here). ``--calibrate`` prints the mean
and SD of the raw component rates (per 30 days) for ``configs/study.yaml`` ``heterogeneity.dhi_components``.
Speed: batched node features against a per-node numpy loop on the same VOIs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage, stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation.dhi_stats import dhi_association  # noqa: E402
from evaluation.protocol import load_protocol  # noqa: E402
from fedresponse.commands.radiomics_graphs import (  # noqa: E402
    VISITS,
    choose_lesion,
    dhi_definition,
    load_lesion_series,
    patient_seed,
)
from fl_client.store import SiteStore  # noqa: E402
from radiomics.dhi import DhiDefinition, component_rates, dhi_intervals, habitat_states, icc_ci  # noqa: E402
from radiomics.exceptions import RadiomicsError  # noqa: E402
from radiomics.graphs import TimePointImage, first_order_features, node_features  # noqa: E402
from radiomics.subregions import Partition, SubregionSpec, partition_tumour, tumour_frame  # noqa: E402

FACE = ndimage.generate_binary_structure(3, 1)


def _jitter(mask: np.ndarray, spacing: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    if not mask.any():
        return mask
    edt = ndimage.distance_transform_edt
    sdf = edt(mask, sampling=spacing) - edt(~mask, sampling=spacing)
    field = ndimage.gaussian_filter(rng.standard_normal(mask.shape), 2.0)
    field *= 0.7 * min(spacing) / max(float(field.std()), 1e-9)
    return np.asarray((sdf + field) > 0)


def perturb(series: list[TimePointImage], kind: str, rng: np.random.Generator) -> list[TimePointImage]:
    out = []
    for tp in series:
        ct, mask = np.asarray(tp.ct), np.asarray(tp.mask, dtype=bool)
        if kind == "erode":
            mask = ndimage.binary_erosion(mask, FACE)
        elif kind == "dilate":
            mask = ndimage.binary_dilation(mask, FACE) if mask.any() else mask
        elif kind.startswith("jitter"):
            mask = _jitter(mask, tp.spacing, rng)
        elif kind.startswith("noise"):
            ct = np.clip(ct + rng.normal(0.0, 10.0, ct.shape), -1024, 3071).astype(np.float32)
        out.append(TimePointImage(ct, mask, tp.spacing, tp.day))
    return out


def crop_series(series: list[TimePointImage], margin: int = 8) -> list[TimePointImage]:
    """Each scan cut to its lesion's bounding box plus ``margin`` voxels (perturbations then cost little).

    Habitats correspond through feature space, not voxel positions, so per-scan crops change nothing but
    the cost (and the random draws of the noise and jitter fields, which are drawn on the crop).
    """
    out = []
    for tp in series:
        ct, mask = np.asarray(tp.ct), np.asarray(tp.mask, dtype=bool)
        idx = np.argwhere(mask)
        if idx.size == 0:
            box = tuple(slice(0, min(2 * margin, n)) for n in mask.shape)
        else:
            lo, hi = np.maximum(idx.min(0) - margin, 0), np.minimum(idx.max(0) + margin + 1, mask.shape)
            box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        out.append(TimePointImage(np.ascontiguousarray(ct[box]), np.ascontiguousarray(mask[box]), tp.spacing, tp.day))
    return out


CONDITIONS = ("original", "erode", "dilate", "jitter-a", "jitter-b", "noise-a", "noise-b")


def dhi_rows(usubjid: str, series: list[TimePointImage], seed: int, conditions: list[str],
             definition: DhiDefinition) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for cond in conditions:
        rng = np.random.default_rng(patient_seed(seed, usubjid, cond))
        gen = torch.Generator().manual_seed(patient_seed(seed, usubjid, "habitats"))
        pert = perturb(series, cond, rng)
        try:
            states = habitat_states([(s.ct, s.mask, s.day) for s in pert], gen)
        except RadiomicsError as err:
            print(f"  {usubjid} {cond}: skipped ({err})")
            continue
        for iv in dhi_intervals(states, definition):
            raw = component_rates(iv.jsd, iv.delta_mixing, iv.delta_texture, iv.days, definition.per_days)
            rows.append({"USUBJID": usubjid, "condition": cond, "FROM": VISITS[iv.start], "TO": VISITS[iv.end],
                         "interval": f"{VISITS[iv.start]}-{VISITS[iv.end]}", "status": iv.status,
                         "ITH_FROM": states[iv.start].ith, "JSD": iv.jsd, "DELTA_ITH": iv.delta_ith,
                         "DLOGVOL": iv.dlogvol, **raw, "Z_DENSITY": iv.z["density"],
                         "Z_SPATIAL": iv.z["spatial"], "Z_TEXTURE": iv.z["texture"], "DHI": iv.dhi})
    return rows


GROUPS = {"segmentation": ["original", "erode", "dilate", "jitter-a", "jitter-b"],
          "noise 10 HU": ["original", "noise-a", "noise-b"], "all": list(CONDITIONS)}
ICC_QUANTITIES = ("DHI", "Z_DENSITY", "Z_SPATIAL", "Z_TEXTURE", "ITH_FROM", "DELTA_ITH")


def icc_table(df: pd.DataFrame, n_boot: int, seed: int, icc_min: float) -> pd.DataFrame:
    """ICC(3,1) and ICC(2,1) with bootstrap CIs per interval, quantity and perturbation group; prints the table."""
    rng = np.random.default_rng(seed)
    out = []
    print(f"\nRepeatability: ICC(3,1) / ICC(2,1) [95 % bootstrap CI, {n_boot} resamples of patients] over "
          "patients × conditions (n = patients complete under every condition of the group)")
    print(f"{'quantity':<22}{'perturbation':<14}{'n':>4}  {'ICC(3,1) [CI]':<24}{'ICC(2,1) [CI]':<24}")
    for interval in sorted(df["interval"].unique()):
        sub = df[df["interval"] == interval]
        for value in ICC_QUANTITIES:
            for name, conds in GROUPS.items():
                conds = [c for c in conds if c in set(sub["condition"])]
                if len(conds) < 2:
                    continue
                wide = sub[sub["condition"].isin(conds)].pivot(index="USUBJID", columns="condition", values=value)
                wide = wide.reindex(columns=conds).dropna()
                label = f"{value} {interval}"
                try:
                    a = icc_ci(wide.to_numpy(), "3,1", rng, n_boot)
                    b = icc_ci(wide.to_numpy(), "2,1", rng, n_boot)
                except ValueError as err:
                    print(f"{label:<22}{name:<14}{len(wide):>4}  undefined ({err})")
                    continue
                out.append({"interval": interval, "quantity": value, "group": name, "n": len(wide),
                            "icc31": a[0], "icc31_low": a[1], "icc31_high": a[2],
                            "icc21": b[0], "icc21_low": b[1], "icc21_high": b[2]})
                print(f"{label:<22}{name:<14}{len(wide):>4}  {a[0]:.3f} [{a[1]:.2f}, {a[2]:.2f}]"
                      f"{'':<6}{b[0]:.3f} [{b[1]:.2f}, {b[2]:.2f}]")
    table = pd.DataFrame(out)
    if not table.empty:
        _limits(table, icc_min)
    return table


def _limits(table: pd.DataFrame, icc_min: float) -> None:
    """Say, per interval, whether the DHI meets the protocol bar and which component limits it."""
    print(f"\nAgainst the protocol bar ICC ≥ {icc_min:g} (agreement.icc_min), all conditions:")
    for interval, sub in table[table["group"] == "all"].groupby("interval"):
        row = sub.set_index("quantity")
        if "DHI" not in row.index:
            continue
        dhi = row.loc["DHI"]
        comps = row.loc[[q for q in ("Z_DENSITY", "Z_SPATIAL", "Z_TEXTURE") if q in row.index]]
        worst = comps["icc21"].idxmin() if len(comps) else "-"
        verdict = "meets" if min(dhi["icc31"], dhi["icc21"]) >= icc_min else "misses"
        print(f"  DHI {interval}: ICC(3,1) {dhi['icc31']:.3f}, ICC(2,1) {dhi['icc21']:.3f} -> {verdict} the bar; "
              f"least repeatable component {worst} (ICC(2,1) {comps['icc21'].min():.3f})")


def association(df: pd.DataFrame, truth: Path) -> pd.DataFrame:
    subjects = pd.read_csv(truth)[["USUBJID", "RESPONSE_CLASS", "RESPONDER", "PFS_DAYS", "PFS_EVENT"]]
    orig = df[df["condition"] == "original"]
    print("\nAssociation with the generator's response (original segmentation). AUC: P(responder higher); "
          "rho_vol: Spearman with ln volume change; partial: with the responder flag given the volume change; "
          "HR: Cox PFS per SD, adjusted for the volume change (crude in brackets)")
    for interval, sub in orig.merge(subjects, on="USUBJID").groupby("interval"):
        by = sub.groupby("RESPONSE_CLASS")["DHI"].agg(["count", "median", "mean"])
        print(f"DHI {interval} by class:\n{by.to_string(float_format=lambda v: f'{v:.3f}')}")
    table = dhi_association(orig, subjects)
    print(f"{'interval':<8}{'quantity':<11}{'n':>4}{'AUC [95% CI]':>22}{'rho_vol':>9}{'partial (p)':>16}"
          f"{'HR adj [CI] p (crude)':>34}")
    for r in table.itertuples(index=False):
        auc = f"{r.auc:.2f} [{r.auc_low:.2f}, {r.auc_high:.2f}]" if pd.notna(getattr(r, "auc", np.nan)) else "-"
        part = f"{r.partial_rho:+.2f} ({r.partial_p:.3f})" if pd.notna(r.partial_rho) else "-"
        hr = (f"{r.hr:.2f} [{r.hr_low:.2f}, {r.hr_high:.2f}] {r.hr_p:.3f} ({r.hr_crude:.2f})"
              if pd.notna(getattr(r, "hr", np.nan)) else "-")
        print(f"{r.interval:<8}{r.quantity:<11}{r.n:>4}{auc:>22}{r.rho_vol:>9.2f}{part:>16}{hr:>34}")
    return table


def calibrate(df: pd.DataFrame) -> None:
    """Mean and SD of the raw component rates (original segmentation, both intervals pooled)."""
    orig = df[(df["condition"] == "original") & (df["status"] != "absent")]
    print(f"\nCalibration (original segmentation, {orig['USUBJID'].nunique()} patients, {len(orig)} intervals): "
          "raw component rates per 30 days")
    for c in ("density", "spatial", "texture"):
        x = orig[c].to_numpy(float)
        med = float(np.median(x))
        mad = 1.4826 * float(np.median(np.abs(x - med)))
        print(f"  {c}: mean {x.mean():.4g}, sd {x.std(ddof=1):.4g}; robust {{mean: {med:.4g}, sd: {mad:.4g}}}; "
              f"by interval {orig.groupby('interval')[c].agg(['median', 'std']).round(4).to_dict('index')}")


def _partitions(series: list[TimePointImage], spec: SubregionSpec) -> list[Partition]:
    frame = tumour_frame(series[0].mask, series[0].spacing, spec.frame)
    return [partition_tumour(tp.mask, tp.spacing, frame, spec) for tp in series]


def _per_node_numpy(series: list[TimePointImage], parts: list[Partition], spec: SubregionSpec) -> np.ndarray:
    """Baseline: the same first-order statistics, one node at a time with numpy/scipy."""
    out = []
    for tp, part in zip(series, parts, strict=True):
        crop = np.asarray(tp.ct)[part.crop]
        for v in range(spec.n_nodes):
            vals = crop[part.labels == v] if not part.vanished else np.zeros(0)
            if vals.size == 0:
                out.append(np.zeros(8))
                continue
            p10, p25, p50, p75, p90 = np.percentile(vals, [10, 25, 50, 75, 90])
            out.append(np.array([vals.mean(), p50, p10, p90, p75 - p25, stats.skew(vals), stats.kurtosis(vals),
                                 np.abs(vals - vals.mean()).mean()]))
    return np.stack(out)


def _batched_first_order(series: list[TimePointImage], parts: list[Partition], spec: SubregionSpec,
                         device: str) -> torch.Tensor:
    vals, segs = [], []
    for t, (tp, part) in enumerate(zip(series, parts, strict=True)):
        if part.vanished:
            continue
        lab = torch.as_tensor(part.labels, device=device)
        crop = torch.as_tensor(np.asarray(tp.ct)[part.crop], device=device)
        vals.append(crop[lab >= 0].double())
        segs.append(lab[lab >= 0] + t * spec.n_nodes)
    return first_order_features(torch.cat(vals), torch.cat(segs), len(series) * spec.n_nodes)


def speed(all_series: dict[str, list[TimePointImage]], device: str) -> None:
    spec = SubregionSpec()
    items = []
    for uid, s in all_series.items():
        try:
            node_features(s, spec, device)
            items.append(s)
        except RadiomicsError as err:
            print(f"  graphs: {uid} skipped ({err})")
    n_vois = sum(len(s) for s in items) * spec.n_nodes
    t = time.perf_counter()
    parts = [_partitions(s, spec) for s in items]
    t_part = time.perf_counter() - t
    t = time.perf_counter()
    for s, p in zip(items, parts, strict=True):
        _batched_first_order(s, p, spec, device)
    t_batched = time.perf_counter() - t
    t = time.perf_counter()
    for s, p in zip(items, parts, strict=True):
        _per_node_numpy(s, p, spec)
    t_loop = time.perf_counter() - t
    t = time.perf_counter()
    for s in items:
        node_features(s, spec, device)
    t_full = time.perf_counter() - t
    t = time.perf_counter()
    for uid, s in all_series.items():
        habitat_states([(x.ct, x.mask, x.day) for x in s], torch.Generator().manual_seed(patient_seed(0, uid, "h")))
    dhi_time = time.perf_counter() - t
    print(f"\nSpeed on {device} ({torch.get_num_threads()} torch thread(s), {os.cpu_count()} CPUs), "
          f"{len(items)} patients, {n_vois} node VOIs:")
    print(f"  partition (EDT, sectors): {t_part:.2f} s = {n_vois / t_part:.0f} VOIs/s")
    print(f"  first-order, batched torch: {t_batched:.2f} s = {n_vois / t_batched:.0f} VOIs/s; per-node numpy/scipy "
          f"loop: {t_loop:.2f} s = {n_vois / t_loop:.0f} VOIs/s; ratio {t_loop / t_batched:.1f}x")
    print(f"  full node features (partition + first-order + 3 GLCM): {t_full:.2f} s = {n_vois / t_full:.0f} VOIs/s, "
          f"{t_full / len(items):.2f} s per patient")
    print(f"  habitats + ITH: {dhi_time / len(all_series):.2f} s per patient (3 time points)")


def sibling_stores(cohort: Path) -> list[Path]:
    """Site stores of a cohort laid out as ``ROOT/cohort`` + ``ROOT/stores/<SITE>`` (e.g. /tmp/trial90)."""
    root = cohort.parent / "stores"
    stores = sorted(p for p in root.iterdir() if (p / "store.json").exists()) if root.is_dir() else []
    if not stores:
        raise SystemExit(f"no site stores under {root}; pass --stores STORE [STORE ...] with --cohort {cohort}")
    return stores


def make_cohort(workdir: Path, patients_per_site: int, preset: str, seed: int) -> tuple[list[Path], Path]:
    cli = [sys.executable, "-m", "fedresponse"]
    cohort = workdir / "cohort"
    subprocess.run([*cli, "synth", str(cohort), "--sites", "3", "--patients-per-site", str(patients_per_site),
                    "--seed", str(seed), "--preset", preset], check=True)
    env = {**os.environ, "FEDRESPONSE_REID_PASSPHRASE": "benchmark-only-passphrase"}
    stores = []
    from synth.cohort import cohort_sites

    for site in cohort_sites(cohort):
        store = workdir / "stores" / site
        subprocess.run([*cli, "ingest", str(cohort / site), "--site", site, "--out", str(store)], check=True, env=env)
        stores.append(store)
    return stores, cohort


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="quick", choices=["quick", "trial"])
    ap.add_argument("--patients-per-site", type=int, default=4)
    ap.add_argument("--stores", type=Path, nargs="*", help="existing site stores (skip synth + ingest)")
    ap.add_argument("--cohort", type=Path, help="the synthesized cohort (truth/subjects.csv); without --stores its "
                    "sibling stores/ folder is read")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, help="keep the synthesized cohort and stores here (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, help="write the per-condition DHI rows as CSV")
    ap.add_argument("--conditions", nargs="*", default=list(CONDITIONS), choices=list(CONDITIONS),
                    help="perturbations to run (only 'original' for a quick association on a larger cohort)")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of patients for ICC CIs")
    ap.add_argument("--calibrate", action="store_true", help="print the component means/SDs for study.yaml")
    ap.add_argument("--skip-speed", action="store_true", help="leave out the node-feature speed comparison")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_dhi_") as tmp:
        if not args.stores and args.cohort is not None:
            args.stores = sibling_stores(args.cohort)
        if args.stores:
            stores, cohort = list(args.stores), args.cohort
        else:
            stores, cohort = make_cohort(args.workdir or Path(tmp), args.patients_per_site, args.preset, args.seed)
        all_series: dict[str, list[TimePointImage]] = {}
        for path in stores:
            store = SiteStore(path)
            for uid in sorted(store.visits()["USUBJID"].unique()):
                lesion = choose_lesion(store, uid)
                if lesion is not None:
                    all_series[uid] = crop_series(load_lesion_series(store, uid, lesion))
        print(f"{len(all_series)} patients from {len(stores)} site stores")
        definition = dhi_definition()
        t = time.perf_counter()
        rows = [r for uid, s in all_series.items() for r in dhi_rows(uid, s, args.seed, args.conditions, definition)]
        print(f"DHI under {len(args.conditions)} conditions in {time.perf_counter() - t:.1f} s")
        df = pd.DataFrame(rows)
        if args.out:
            df.to_csv(args.out, index=False)
        if args.calibrate:
            calibrate(df)
        if len(args.conditions) > 1:
            icc_table(df, args.bootstrap, args.seed, load_protocol().agreement.icc_min)
        if cohort is not None and (cohort / "truth" / "subjects.csv").exists():
            association(df, cohort / "truth" / "subjects.csv")
        if not args.skip_speed:
            speed(all_series, args.device)


if __name__ == "__main__":
    main()
