"""Ingest throughput (slices/s) and peak memory per site, against a plain pydicom read in the same run.

Usage::

    .venv/bin/python benchmarks/bench_ingest.py --preset quick            # synthesizes a small cohort
    .venv/bin/python benchmarks/bench_ingest.py --preset trial --sites 1 --patients-per-site 3
    .venv/bin/python benchmarks/bench_ingest.py --cohort /tmp/h3cohort    # reuse a cohort
    .venv/bin/python benchmarks/bench_ingest.py --preset chest --sites 1 --patients-per-site 2 --featurize

For each site it prints: CT slices, ingest wall and CPU seconds (the ingest process and its discovery
workers), slices/s (wall and per CPU second; on a shared machine the per-CPU-second figure is the stable one),
the baseline (``pydicom.dcmread`` + ``pixel_array`` of every CT file, nothing else) in slices/s and the
ratio ingest/baseline, and the ingest's peak-memory increase (max RSS in a fresh child process minus its
RSS after imports and writer warm-up) next to the size of one protocol series and of all the site's
pixels — the first must track one series, not the cohort; a last row ingests every site's images as one
export to show that. Target (issue 3): >= 300 slices/s on 2 cores. The ``chest`` preset is what a scanner
sends (512 × 512, 300-450 slices per series, issue 15); ``--featurize`` also times the featurize step
(sub-region graphs over T0/T1/T2 and the DHI) per patient on each ingested store. The load average is
printed with the figures: on a shared machine they scale with it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

PASSPHRASE = "benchmark-passphrase-only"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_seconds() -> float:
    """CPU seconds of this process, of its finished children, and of the ingest's forkserver and the workers it
    forked and reaped (``fl_client.ingest.workers``: they are the forkserver's children, not ours, so
    ``RUSAGE_CHILDREN`` misses them; its ``/proc/<pid>/stat`` utime, stime, cutime and cstime hold them)."""
    from multiprocessing import forkserver

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    server = 0.0
    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    if pid:
        time.sleep(0.2)  # the forkserver reaps its exited workers on SIGCHLD
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        server = sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + server


def _warm_up(folder: Path) -> None:
    """Load the lazily imported writers (pyarrow's Parquet engine, nibabel, zlib) before the baseline RSS,
    so that the peak increase measures data, not code."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"a": [1]}).to_parquet(folder / "warm.parquet")
    pd.read_parquet(folder / "warm.parquet")
    nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)).to_bytes()


def _child(src: str, store: str, site: str, workers: int, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    import fl_client.ingest.pipeline as pipeline

    _warm_up(Path(store).parent)
    before = _rss_mb()
    cpu = _cpu_seconds()
    wall = time.perf_counter()
    config = pipeline.IngestConfig(site=site, passphrase=PASSPHRASE, workers=workers,
                                   parallel_from_files=0 if workers > 1 else pipeline.PARALLEL_FROM_FILES)
    summary = pipeline.ingest_site(Path(src), Path(store), config)
    queue.put({"wall": time.perf_counter() - wall, "cpu": _cpu_seconds() - cpu, "slices": summary.slices,
               "rss_before": before, "rss_peak": _rss_mb(), "files": sum(summary.files.values())})


def _baseline(site_dir: Path) -> tuple[int, float, int, int]:
    """(CT slices, seconds, largest series bytes, all pixel bytes) reading every CT file with pydicom."""
    import pydicom

    start = time.perf_counter()
    slices, total = 0, 0
    per_series: dict[str, int] = {}
    for path in sorted(p for p in (site_dir / "pacs").rglob("*") if p.is_file()):
        ds = pydicom.dcmread(path)
        if ds.get("SOPClassUID") != "1.2.840.10008.5.1.4.1.1.2" or "PixelData" not in ds:
            continue
        nbytes = ds.pixel_array.nbytes
        slices += 1
        total += nbytes
        per_series[str(ds.SeriesInstanceUID)] = per_series.get(str(ds.SeriesInstanceUID), 0) + nbytes
    return slices, time.perf_counter() - start, max(per_series.values(), default=0), total


def _cohort(args: argparse.Namespace, work: Path) -> Path:
    if args.cohort:
        return Path(args.cohort)
    from synth.cohort import synthesize

    out = work / "cohort"
    start = time.perf_counter()
    synthesize(out, args.sites, args.patients_per_site, seed=args.seed, preset_name=args.preset, workers=2)
    print(f"synthesized {args.preset} cohort ({args.sites} sites x {args.patients_per_site}) in "
          f"{time.perf_counter() - start:.0f} s")
    return out


def _run_child(src: Path, store: Path, site: str, workers: int) -> dict[str, float]:
    queue: mp.Queue = mp.get_context("spawn").Queue()  # type: ignore[type-arg]
    child = mp.get_context("spawn").Process(target=_child, args=(str(src), str(store), site, workers, queue))
    child.start()
    result: dict[str, float] = queue.get()
    child.join()
    return result


def _merged_row(cohort: Path, sites: list[str], work: Path, workers: int) -> None:
    """Every site's PACS export in one folder (no site tables: subjects numbered on the fly): N times the
    images of one site. Peak memory must stay near the single-site figure (bounded by a series)."""
    merged = work / "merged"
    for site in sites:
        shutil.copytree(cohort / site / "pacs", merged / "pacs" / site)
    pixels = sum(_baseline(cohort / site)[3] for site in sites)
    result = _run_child(merged, work / "stores" / "S99", "S99", workers)
    print(f"{'mrg':4} {int(result['slices']):6d} {result['wall']:7.2f} {result['cpu']:6.2f} "
          f"{result['slices'] / result['wall']:6.0f} {result['slices'] / result['cpu']:8.0f} {'':9} {'':6} "
          f"{result['rss_peak'] - result['rss_before']:8.0f} {'':9} {pixels / 2**20:10.1f}   "
          f"(all sites' images as one export)")


def _featurize_row(store: Path, work: Path) -> None:
    """Featurize cost per patient on an ingested store: sub-region graphs (T0-T2) and the DHI."""
    import pandas as pd

    from fedresponse.commands.radiomics_graphs import build_site_graphs, site_dhi

    patients = pd.read_parquet(store / "visits.parquet")["USUBJID"].nunique()
    timings = []
    for name, step in (("graphs", lambda: build_site_graphs(store, work / f"{store.name}.graphs.pt", "cpu")),
                       ("dhi", lambda: site_dhi(store, work / f"{store.name}.dhi.csv", 0, "cpu"))):
        cpu, wall = _cpu_seconds(), time.perf_counter()
        count, skipped = step()
        timings.append(f"{name} {(time.perf_counter() - wall) / patients:.1f} s wall, "
                       f"{(_cpu_seconds() - cpu) / patients:.1f} CPU s per patient ({count} built, "
                       f"{len(skipped)} skipped)")
    print(f"featurize {store.name} ({patients} patients, 3 visits each): " + "; ".join(timings))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick", choices=["quick", "trial", "chest"])
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--patients-per-site", type=int, default=2)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--cohort", help="use this existing cohort instead of synthesizing one")
    parser.add_argument("--featurize", action="store_true",
                        help="also time sub-region graphs + DHI per patient on each ingested store")
    parser.add_argument("--workers", type=int, default=1,
                        help="ingest worker processes (>1 forces parallel discovery and image building)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    try:
        cohort = _cohort(args, work)
        from synth.cohort import cohort_sites

        sites = cohort_sites(cohort)
        header = (f"{'site':4} {'slices':>6} {'wall s':>7} {'cpu s':>6} {'sl/s':>6} {'sl/cpu-s':>8} "
                  f"{'base sl/s':>9} {'ratio':>6} {'peak+ MB':>8} {'series MB':>9} {'site px MB':>10}")
        print(f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
        print(header)
        totals = [0, 0.0, 0.0]
        for site in sites:
            slices, base_s, series_bytes, all_bytes = _baseline(cohort / site)
            result = _run_child(cohort / site, work / "stores" / site, site, args.workers)
            rate, base = result["slices"] / result["wall"], slices / base_s
            totals = [totals[0] + result["slices"], totals[1] + result["wall"], totals[2] + result["cpu"]]
            print(f"{site:4} {result['slices']:6d} {result['wall']:7.2f} {result['cpu']:6.2f} {rate:6.0f} "
                  f"{result['slices'] / result['cpu']:8.0f} {base:9.0f} {rate / base:6.2f} "
                  f"{result['rss_peak'] - result['rss_before']:8.0f} {series_bytes / 2**20:9.1f} "
                  f"{all_bytes / 2**20:10.1f}")
        if args.featurize:
            for site in sites:
                _featurize_row(work / "stores" / site, work)
        print(f"all  {totals[0]:6d} {totals[1]:7.2f} {totals[2]:6.2f} {totals[0] / totals[1]:6.0f} "
              f"{totals[0] / totals[2]:8.0f}   (target >= 300 slices/s on 2 cores)")
        if len(sites) > 1:
            _merged_row(cohort, sites, work, args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
