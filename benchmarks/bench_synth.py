"""Generation time of the synthetic cohort, and the series encoder against pydicom's dcmwrite.

    python benchmarks/bench_synth.py --preset trial --out /tmp/trial   # the 500-patient registered cohort
    python benchmarks/bench_synth.py --preset quick                     # 3 sites x 12 patients

Prints wall time, patients/s, files/s, bytes written, peak resident memory of the main process and
of the largest worker, and the generator's oracle AUC; then the per-slice encoding speed of
``synth.dicom_writer.encode_series`` against ``pydicom.dcmwrite`` on the same slices (ratio).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from synth.cohort import plan_cohort, synthesize
from synth.dicom_writer import SCANNERS, StudyInfo, ct_series_datasets, encode_series, uid
from synth.identity import hospital_for_site, patient_identity
from synth.presets import get_preset


def _cpu_seconds() -> float:
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def bench_oracle(preset: str) -> None:
    """The registered cohort's oracle AUC and balance from the plan alone (no pixels)."""
    start = time.perf_counter()
    patients = [p for ps in plan_cohort(3, None, 0, get_preset(preset)).values() for p in ps]
    y = np.array([p.responder for p in patients])
    auc = roc_auc_score(y, [p.oracle_p for p in patients]) if 0 < y.sum() < len(y) else float("nan")
    print(f"plan ({preset}, seed 0): patients={len(patients)} responders={int(y.sum())} "
          f"oracle early AUC={auc:.3f} (spec 0.80-0.92) in {time.perf_counter() - start:.1f} s")


def bench_generation(preset: str, out: Path, workers: int, patients_per_site: int | None) -> None:
    start = time.perf_counter()
    cpu_start = _cpu_seconds()
    summary = synthesize(out, n_sites=3, patients_per_site=patients_per_site, seed=0, preset_name=preset,
                         workers=workers, force=True)
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_start
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"preset={preset} workers={workers} cpu_cores={os.cpu_count()}")
    print(f"patients={summary.patients} responders={summary.responders} files={summary.files} "
          f"bytes={size / 1e9:.2f} GB")
    print(f"cpu={cpu:.1f} s (main + workers; on an idle machine wall ~ cpu / workers)")
    print(f"wall={seconds:.1f} s  patients/s={summary.patients / seconds:.2f}  files/s={summary.files / seconds:.0f}")
    print(f"peak RSS main={self_rss:.0f} MB  largest worker={child_rss:.0f} MB")
    per_patient = seconds / summary.patients
    total = get_preset(preset).total_patients or summary.patients
    print(f"per patient={per_patient:.2f} s wall with {workers} workers -> projected {total} patients: "
          f"{per_patient * total / 60:.1f} min, {size / summary.patients * total / 1e9:.1f} GB")


def bench_encoder(slices: int = 96, matrix: int = 144) -> None:
    rng = np.random.default_rng(0)
    info = StudyInfo(patient_identity(rng, 0, 60, dt.date(2025, 1, 1)), hospital_for_site(0, rng), "M", uid("a"),
                     uid("b"), dt.date(2025, 1, 1), "ACC1000000", "CT1000000", "baseline staging")
    hu = rng.normal(-500, 300, size=(slices, matrix, matrix)).astype(np.float32)
    datasets = ct_series_datasets(info, SCANNERS[0], hu, (1.0, 0.7, 0.7), (0.0, 0.0, 0.0), uid("c"), 2, "d")
    start = time.perf_counter()
    for ds in datasets:
        ds.save_as(io.BytesIO(), enforce_file_format=True)
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    encode_series(datasets)
    fast = time.perf_counter() - start
    print(f"encoder: dcmwrite {1e3 * baseline / slices:.2f} ms/slice, encode_series {1e3 * fast / slices:.2f} "
          f"ms/slice, speed-up x{baseline / fast:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick", choices=["quick", "trial"])
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", action="store_true", help="keep the generated cohort")
    parser.add_argument("--patients-per-site", type=int, default=None,
                        help="render only this many per site (the oracle line still plans the full preset)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_synth_")) / "cohort"
    try:
        bench_oracle(args.preset)
        bench_generation(args.preset, out, args.workers, args.patients_per_site)
        bench_encoder()
    finally:
        if not args.keep and args.out is None:
            shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
