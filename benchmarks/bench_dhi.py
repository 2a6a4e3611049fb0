"""DHI repeatability (ICC under perturbed segmentation and noise), association with response, and speed.

    .venv/bin/python benchmarks/bench_dhi.py --preset quick            # synthesize + ingest a small cohort
    .venv/bin/python benchmarks/bench_dhi.py --stores /tmp/st/S01 /tmp/st/S02 --cohort /tmp/c

For every patient (largest T0 target lesion) the DHI is recomputed under perturbations in the spirit of
Zwanenburg et al. (Sci Rep 2019, "Assessing robustness of radiomic features by image perturbation"):
segmentation eroded / dilated by one voxel, contour jitter (a smooth random field of ~1 voxel added to
the signed distance map), and Gaussian image noise of 10 HU, each applied independently at every time
point. Repeatability is ICC(3,1) and ICC(2,1) over (patients × conditions). Association: DHI by the
generator's response class (``truth/subjects.csv``, read only here). Speed: batched node features
(torch, one pass over all nodes × time points) against a per-node numpy loop on the same VOIs.
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

from fedresponse.commands.radiomics_graphs import VISITS, choose_lesion, load_lesion_series, patient_seed  # noqa: E402
from fl_client.store import SiteStore  # noqa: E402
from radiomics.dhi import dhi_intervals, habitat_states, icc  # noqa: E402
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


CONDITIONS = ("original", "erode", "dilate", "jitter-a", "jitter-b", "noise-a", "noise-b")


def dhi_rows(usubjid: str, series: list[TimePointImage], seed: int, conditions: list[str]) -> list[dict[str, object]]:
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
        for iv in dhi_intervals(states):
            rows.append({"USUBJID": usubjid, "condition": cond, "interval": f"{VISITS[iv.start]}-{VISITS[iv.end]}",
                         "ith_from": states[iv.start].ith, "jsd": iv.jsd, "delta_ith": iv.delta_ith, "dhi": iv.dhi,
                         "status": iv.status})
    return rows


def icc_table(df: pd.DataFrame) -> None:
    groups = {"segmentation": ["original", "erode", "dilate", "jitter-a", "jitter-b"],
              "noise 10 HU": ["original", "noise-a", "noise-b"], "all": list(CONDITIONS)}
    print("\nRepeatability: ICC(3,1) / ICC(2,1) over patients × conditions (n = complete patients)")
    print(f"{'quantity':<22}{'perturbation':<15}{'n':>4}{'ICC(3,1)':>10}{'ICC(2,1)':>10}")
    for interval in sorted(df["interval"].unique()):
        sub = df[df["interval"] == interval]
        for value in ("dhi", "jsd", "ith_from"):
            for name, conds in groups.items():
                wide = sub[sub["condition"].isin(conds)].pivot(index="USUBJID", columns="condition", values=value)
                wide = wide.reindex(columns=conds).dropna()
                label = f"{value} {interval}"
                try:
                    a, b = icc(wide.to_numpy(), "3,1"), icc(wide.to_numpy(), "2,1")
                    print(f"{label:<22}{name:<15}{len(wide):>4}{a:>10.3f}{b:>10.3f}")
                except ValueError as err:
                    print(f"{label:<22}{name:<15}{len(wide):>4}  undefined ({err})")


def association(df: pd.DataFrame, truth: Path) -> None:
    subjects = pd.read_csv(truth)[["USUBJID", "RESPONSE_CLASS", "RESPONDER"]]
    orig = df[df["condition"] == "original"].merge(subjects, on="USUBJID")
    print("\nAssociation with the generator's response class (original segmentation)")
    for interval, sub in orig.groupby("interval"):
        by = sub.groupby("RESPONSE_CLASS")["dhi"].agg(["count", "median", "mean"])
        print(f"DHI {interval}:\n{by.to_string(float_format=lambda v: f'{v:.4f}')}")
        for value in ("dhi", "delta_ith", "jsd"):
            yes, no = sub.loc[sub["RESPONDER"] == 1, value], sub.loc[sub["RESPONDER"] == 0, value]
            if len(yes) and len(no):
                u = stats.mannwhitneyu(yes, no, alternative="two-sided")
                auc = u.statistic / (len(yes) * len(no))
                print(f"  {value:>9}, responder vs not: AUC = {auc:.3f} (n = {len(yes)} + {len(no)}), "
                      f"Mann–Whitney p = {u.pvalue:.3f}")


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
    ap.add_argument("--cohort", type=Path, help="the synthesized cohort of --stores (for truth/subjects.csv)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, help="keep the synthesized cohort and stores here (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, help="write the per-condition DHI rows as CSV")
    ap.add_argument("--conditions", nargs="*", default=list(CONDITIONS), choices=list(CONDITIONS),
                    help="perturbations to run (only 'original' for a quick association on a larger cohort)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_dhi_") as tmp:
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
                    all_series[uid] = load_lesion_series(store, uid, lesion)
        print(f"{len(all_series)} patients from {len(stores)} site stores")
        t = time.perf_counter()
        rows = [r for uid, s in all_series.items() for r in dhi_rows(uid, s, args.seed, args.conditions)]
        print(f"DHI under {len(args.conditions)} conditions in {time.perf_counter() - t:.1f} s")
        df = pd.DataFrame(rows)
        if args.out:
            df.to_csv(args.out, index=False)
        if len(args.conditions) > 1:
            icc_table(df)
        if cohort is not None and (cohort / "truth" / "subjects.csv").exists():
            association(df, cohort / "truth" / "subjects.csv")
        speed(all_series, args.device)


if __name__ == "__main__":
    main()
