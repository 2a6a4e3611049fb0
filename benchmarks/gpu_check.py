"""GPU acceptance check (``make gpu-check``): CUDA-only tests, then GPU against CPU in one run.

    .venv/bin/python benchmarks/gpu_check.py            # on a CUDA machine; < 5 min on one H200

1. the CUDA-only tests (``pytest -k cuda``: every test whose name or parameter says cuda; they skip
   without a device), which must pass and not all skip;
2. radiomics throughput: the full IBSI set (configuration C) of every sub-region (48 per scan: 3 shells
   × 3 rings × 8 octants) of many synthetic patients × 3 time points in one
   :func:`radiomics.batch.extract_many` call on the GPU, against the same code on one CPU thread on a
   subset; the common VOIs must agree within ``FEATURE_RTOL`` / ``FEATURE_ATOL`` (goal: ≥ 50× VOIs/s);
3. a training step of the full-mode fusion network (whatever ``model.kind`` is: the fusion net holds the
   default product model's linear ``wide`` path and every deep layer, so it covers every kind) on CPU fp32,
   CUDA fp32 and CUDA bf16 autocast (ms per step; CUDA fp32 logits within ``LOGIT_ATOL_FP32`` and bf16
   within ``LOGIT_ATOL_BF16`` + ``LOGIT_RTOL_BF16`` · |logit| of CPU; the zero-initialised heads get random
   weights first);
4. a DP-SGD step on CUDA through ``fl_client.dp_sgd.make_private`` (Opacus; ms per step, finite loss,
   parameters moved).

Exit status: 0 all within tolerance; 1 a value beyond its tolerance or a failing CUDA test; 2 a CUDA
error. Without CUDA it says so and exits 0 (nothing to check). Timings synchronise the device first.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "models"))

#: Tolerances of a GPU value against the CPU value (float64 features; logits of one batch).
FEATURE_RTOL, FEATURE_ATOL = 1e-5, 1e-6
LOGIT_ATOL_FP32 = 1e-3  # CUDA fp32 (TF32 switched off for the comparison)
LOGIT_ATOL_BF16, LOGIT_RTOL_BF16 = 0.1, 0.05  # bf16 keeps ~3 significant digits
GOAL_SPEEDUP = 50.0


def _sync() -> None:
    torch.cuda.synchronize()


def cuda_tests() -> bool:
    """Run the CUDA-only tests; True when they pass and at least one ran."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", "-rs", "tests/radiomics",
           "tests/models", "tests/fl_client", "tests/privacy"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    print(f"CUDA-only tests: {tail}")
    ran = "passed" in tail
    if proc.returncode != 0 or not ran:
        print(proc.stdout[-4000:])
        return False
    return True


def _patients(n_patients: int, seed: int) -> list:
    """Synthetic tumours (radius 10-14 mm, 0.7 mm voxels, shrinking) at 3 time points each."""
    from radiomics.graphs import TimePointImage

    rng = np.random.default_rng(seed)
    spacing = (0.7, 0.7, 0.7)
    patients = []
    for _ in range(n_patients):
        radius = rng.uniform(10.0, 14.0)
        series = []
        for t in range(3):
            r_t = radius * (1.0 - 0.15 * t * rng.uniform(0.0, 1.0))
            n = int(2 * (r_t + 12.0) / spacing[0]) + 4
            g = (np.indices((n, n, n)) - (n - 1) / 2) * spacing[0]
            mask = np.sqrt((g**2).sum(0)) <= r_t
            ct = np.where(mask, 35.0 + 25.0 * np.cos(g[2] / 3.0), -800.0) + rng.normal(0, 15, mask.shape)
            series.append(TimePointImage(np.round(ct).astype(np.float32), mask, spacing, 1.0 + 63.0 * t))
        patients.append(series)
    return patients


def radiomics_check(n_patients: int, n_cpu_scans: int, budget: int) -> bool:
    from radiomics.batch import extract_many, subregion_scans
    from radiomics.preprocess import IBSI_CONFIGS

    patients = _patients(n_patients, seed=3)
    settings = IBSI_CONFIGS["C"]
    subregion_scans(patients[:1], device="cuda", min_voxels=50)  # warm-up
    _sync()
    start = time.perf_counter()
    scans = subregion_scans(patients, device="cuda", min_voxels=50)  # exact EDTs in torch on the GPU
    _sync()
    t_part = time.perf_counter() - start
    reference = subregion_scans(patients[:1], device="cpu", min_voxels=50)  # scipy EDT
    same_partition = all(np.array_equal(a.labels, b.labels) for a, b in zip(reference, scans, strict=False))
    print(f"\nPartition of {len(scans)} scans into sub-regions on the GPU: {t_part:.2f} s; labels equal to the scipy "
          f"partition on the CPU: {same_partition}")
    extract_many(scans[:2], settings, device="cuda", memory_budget_bytes=budget)  # warm-up (kernels, cuFFT plans)
    _sync()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    gpu = extract_many(scans, settings, device="cuda", memory_budget_bytes=budget)
    _sync()
    t_gpu = time.perf_counter() - start
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    cpu = extract_many(scans[:n_cpu_scans], settings, device="cpu", memory_budget_bytes=budget)
    t_cpu = time.perf_counter() - start
    torch.set_num_threads(threads)
    n_gpu, n_cpu = len(gpu.index), len(cpu.index)
    rate_gpu, rate_cpu = n_gpu / t_gpu, n_cpu / t_cpu
    print(f"\nRadiomics, full IBSI set (config C, {len(gpu.features)} features), sub-regions of {n_patients} patients "
          f"x 3 time points in one call")
    print(f"{'device':<22}{'VOIs':>7}{'s':>9}{'VOIs/s':>10}")
    print(f"{'CPU, 1 thread':<22}{n_cpu:>7}{t_cpu:>9.2f}{rate_cpu:>10.1f}")
    print(f"{torch.cuda.get_device_name(0)[:21]:<22}{n_gpu:>7}{t_gpu:>9.2f}{rate_gpu:>10.1f}")
    speedup = rate_gpu / rate_cpu
    print(f"speed-up {speedup:.1f}x (goal {GOAL_SPEEDUP:g}x: {'met' if speedup >= GOAL_SPEEDUP else 'NOT met'}); "
          f"{gpu.n_chunks} chunk(s), peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB "
          f"(budget {budget / 2**30:.2f} GiB estimated)")
    worst, bad = 0.0, []
    for tag, ref in cpu.features.items():
        a, b = gpu.features[tag][:n_cpu].double().cpu().numpy(), ref.double().numpy()
        same_nan = np.array_equal(np.isnan(a), np.isnan(b))
        ok = same_nan and np.allclose(a, b, rtol=FEATURE_RTOL, atol=FEATURE_ATOL, equal_nan=True)
        finite = np.isfinite(a) & np.isfinite(b)
        if finite.any():
            worst = max(worst, float((np.abs(a - b)[finite] / (FEATURE_ATOL + FEATURE_RTOL * np.abs(b[finite]))).max()))
        if not ok:
            bad.append(tag)
    print(f"IBSI features GPU vs CPU on {n_cpu} VOIs: worst |diff| = {worst:.3g} x tolerance "
          f"(rtol {FEATURE_RTOL:g}, atol {FEATURE_ATOL:g}); beyond: {bad[:8] if bad else 'none'}")
    return not bad and same_partition


def _training_setup(device: torch.device, n_patients: int):
    from model_records import GLOBAL_GROUPS, N_CLINICAL, make_records

    from evaluation.protocol import configs_dir
    from fl_client.centralized import PooledCohort, node_padding
    from fl_client.train import Standardizer, to_dataset
    from models.config import build_model, load_model_config

    settings = load_model_config(configs_dir() / "model.yaml")
    records = make_records(n_patients, seed=0, sites=1)
    names = [f"{g}_{i}" for i, g in enumerate(GLOBAL_GROUPS)]
    cohort = PooledCohort(records, names, GLOBAL_GROUPS, [f"c{i}" for i in range(N_CLINICAL)])
    data = to_dataset(records, "full", node_padding(records, settings), Standardizer.fit(records, "full"))
    torch.manual_seed(0)
    model = build_model("fusion", 3, cohort.dims, settings.model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the heads start at zero: give them weights, or every logit compares 0 with 0
        for param in model.parameters():
            if not param.any():
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    return model.to(device), data, settings


def _step_ms(device: torch.device, bf16: bool, steps: int, private: bool = False) -> tuple[float, torch.Tensor, bool]:
    """ms per optimiser step on one batch of 32, the response logits before training, parameters moved."""
    from fl_client.train import N_INPUTS, multitask_loss

    model, data, settings = _training_setup(device, 64)
    batch = [t[:32].to(device) for t in data.tensors]
    model.eval()
    with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(*batch[:N_INPUTS]).response.float().cpu()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.train.lr)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*data.tensors), batch_size=32)
    model.train()  # Opacus validates a module in training mode
    if private:
        from opacus import PrivacyEngine

        from fl_client.dp_sgd import make_private  # the project's DP-SGD set-up (fp32 clipping on CUDA)

        model, optimizer, loader = make_private(PrivacyEngine(accountant="prv"), model, optimizer, loader, device,
                                                noise_multiplier=1.0, max_grad_norm=1.0)
    losses = []

    def step() -> None:
        b = [t.to(device) for t in next(iter(loader))]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(*b[:N_INPUTS])
        loss = multitask_loss(out, b, settings.train.loss_weights)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())

    for _ in range(2):  # warm-up: allocations, Opacus hooks, cuBLAS handles
        step()
    if device.type == "cuda":
        _sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        _sync()
    ms = (time.perf_counter() - start) / steps * 1e3
    finite = bool(torch.isfinite(torch.stack(losses)).all())
    moved = any(not torch.equal(a, p.detach()) for a, p in zip(before, model.parameters(), strict=False))
    return ms, logits, finite and moved


def training_check(steps: int) -> bool:
    cpu = torch.device("cpu")
    cuda = torch.device("cuda")
    t_cpu, logit_cpu, ok_cpu = _step_ms(cpu, False, steps)
    t_fp32, logit_fp32, ok_fp32 = _step_ms(cuda, False, steps)
    t_bf16, logit_bf16, ok_bf16 = _step_ms(cuda, True, steps)
    t_dp, _, ok_dp = _step_ms(cuda, False, steps, private=True)
    d32 = float((logit_fp32 - logit_cpu).abs().max())
    d16 = float((logit_bf16 - logit_cpu).abs().max())
    ok16 = bool(((logit_bf16 - logit_cpu).abs() <= LOGIT_ATOL_BF16 + LOGIT_RTOL_BF16 * logit_cpu.abs()).all())
    print("\nTraining step, full-mode fusion network, batch 32")
    print(f"{'run':<26}{'ms/step':>9}{'max |logit - CPU|':>20}{'tolerance':>11}")
    print(f"{'CPU fp32':<26}{t_cpu:>9.2f}{'-':>20}{'-':>11}")
    print(f"{'CUDA fp32':<26}{t_fp32:>9.2f}{d32:>20.2e}{LOGIT_ATOL_FP32:>11g}")
    print(f"{'CUDA bf16 autocast':<26}{t_bf16:>9.2f}{d16:>20.2e}{f'{LOGIT_ATOL_BF16:g}+{LOGIT_RTOL_BF16:g}|x|':>11}")
    print(f"{'CUDA fp32 DP-SGD (Opacus)':<26}{t_dp:>9.2f}{'-':>20}{'-':>11}  DP/plain {t_dp / t_fp32:.2f}x")
    healthy = ok_cpu and ok_fp32 and ok_bf16 and ok_dp
    if not healthy:
        print("a training step produced a non-finite loss or left the parameters unchanged")
    return healthy and d32 <= LOGIT_ATOL_FP32 and ok16 and math.isfinite(d32 + d16)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=24, help="synthetic patients of the GPU radiomics call")
    ap.add_argument("--cpu-scans", type=int, default=3, help="scans timed on one CPU thread (and compared)")
    ap.add_argument("--budget-gib", type=float, default=16.0, help="memory budget of one radiomics chunk")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per configuration")
    ap.add_argument("--skip-tests", action="store_true", help="leave out the CUDA-only pytest run")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}, "
              f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}); nothing to check, exit 0")
        return 0
    print(f"gpu-check on {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in the comparisons with the CPU
    torch.backends.cudnn.allow_tf32 = False
    start = time.perf_counter()
    try:
        ok = args.skip_tests or cuda_tests()
        ok = radiomics_check(args.patients, args.cpu_scans, int(args.budget_gib * 2**30)) and ok
        ok = training_check(args.steps) and ok
        _sync()
    except (torch.cuda.OutOfMemoryError, RuntimeError) as err:  # CUDA errors surface as RuntimeError
        print(f"gpu-check: CUDA error: {err}")
        return 2
    print(f"\ngpu-check {'passed' if ok else 'FAILED'} in {time.perf_counter() - start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
