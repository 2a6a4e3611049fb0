"""Cost of pooling evaluation aggregates under CKKS vs in the clear, and of the pooled vs exact statistics.

Prints, for S sites of N patients: aggregate vector length, ciphertexts per site, bytes per site, time to build,
encrypt (site), add (server, public context), decrypt (key holder), and the ratio CKKS / plain for the whole
pooling; plus the pooled-vs-union AUC error against its stated bound.

    .venv/bin/python benchmarks/bench_pooled.py --preset quick
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from evaluation.pooled import (
    MODES,
    AggregateLayout,
    CkksCodec,
    PlainCodec,
    SiteInputs,
    pool,
    pooled_metrics,
    site_aggregate,
)
from privacy.ckks import PUBLIC_CONTEXT, SECRET_CONTEXT, load_public_context, load_site_context, write_key_files

PRESETS = {"quick": (3, 60, 3), "trial": (10, 50, 5)}  # sites, patients per site, repeats
CUTOFFS = {"early": 0.5, "full": 0.5}


def _site(rng: np.random.Generator, n: int) -> SiteInputs:
    y = rng.integers(0, 2, n)
    scores = {m: 1 / (1 + np.exp(-(rng.normal(0, 1, n) + (0.4 + 0.3 * k) * (2 * y - 1)))) for k, m in enumerate(MODES)}
    days = np.ceil(rng.exponential(np.where(y == 1, 400.0, 150.0)))
    return SiteInputs(y, np.minimum(days, 700), (days <= 700).astype(int), scores, CUTOFFS)


def _time(fn, repeats: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    args = parser.parse_args()
    n_sites, n_patients, repeats = PRESETS[args.preset]
    rng = np.random.default_rng(0)
    sites = [_site(rng, n_patients) for _ in range(n_sites)]
    layout = AggregateLayout()
    t_build, vectors = _time(lambda: [site_aggregate(s, layout) for s in sites], repeats)
    with tempfile.TemporaryDirectory() as tmp:
        info = write_key_files(Path(tmp))
        keys = Path(tmp)
        site_ctx, public_ctx = load_site_context(keys / SECRET_CONTEXT), load_public_context(keys / PUBLIC_CONTEXT)
        codec = CkksCodec(site_ctx, public_ctx, info.params)
        t_enc, blobs = _time(lambda: [codec.encrypt(v) for v in vectors], repeats)
        t_add, total = _time(lambda: _sum(codec, blobs), repeats)
        t_dec, _ = _time(lambda: codec.decrypt(total, layout.size), repeats)
        t_ckks, summed = _time(lambda: pool(vectors, codec, layout), repeats)
    t_plain, plain = _time(lambda: pool(vectors, PlainCodec(), layout), repeats)
    metrics = pooled_metrics(summed, CUTOFFS, layout)
    y = np.concatenate([s.labels for s in sites])
    exact = roc_auc_score(y, np.concatenate([s.scores["full"] for s in sites]))
    print(f"preset {args.preset}: {n_sites} sites x {n_patients} patients (2 CPU cores, no GPU expected)")
    print(f"aggregate length {layout.size} values; ciphertexts per site {len(blobs[0])}; "
          f"bytes per site {sum(len(b) for b in blobs[0]):,}")
    print(f"build aggregates  {1e3 * t_build:8.1f} ms (all sites)")
    print(f"encrypt (sites)   {1e3 * t_enc:8.1f} ms   add (server) {1e3 * t_add:8.1f} ms   "
          f"decrypt {1e3 * t_dec:8.1f} ms")
    print(f"pool CKKS {1e3 * t_ckks:8.1f} ms vs plain {1e3 * t_plain:8.3f} ms: ratio {t_ckks / t_plain:,.0f}x")
    print(f"max |CKKS - plain| after rounding: {np.max(np.abs(summed - plain)):.2e}")
    full = metrics["full"]
    print(f"pooled AUC {full['auc']:.4f} vs union {exact:.4f}: |diff| {abs(full['auc'] - exact):.4f}"
          f" <= bound {full['auc_binning_bound']:.4f}")


def _sum(codec: CkksCodec, blobs: list[list[bytes]]) -> list[bytes]:
    total = blobs[0]
    for blob in blobs[1:]:
        total = codec.add(total, blob)
    return total


if __name__ == "__main__":
    main()
