"""Per-round cost of federated training: plaintext FedAvg vs DP only vs HE only vs DP+HE.

Runs the product round in-process (no network transport): each site trains the fusion network on
its synthetic model inputs (``tests/models/model_records.py``; early and full networks in one DP-SGD run,
as the product task does), encodes its update (float32 or CKKS),
the server validates and aggregates, each site decodes the aggregate and loads it. Sites would run
in parallel, so the round's critical path is ``max(site train + encode) + aggregate + max(decode)``.
Reported at the demo model size (``configs/model.yaml``) and at a wider network with ≈ 10× the
parameters, plus CKKS encryption / aggregation / decryption throughput in parameters per second.

Targets (issue 7): HE adds ≤ 25 % to the round's wall time; ciphertext bytes ≤ 10× the float32 update.

    .venv/bin/python benchmarks/bench_federation.py --preset quick
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "models"))

from model_records import GLOBAL_GROUPS, N_CLINICAL, N_GLOBAL, make_records  # noqa: E402

from fl_client.federated import ClientSettings, SiteKeys, apply_global_model, fusion_task, site_round  # noqa: E402
from fl_client.train import SiteInputs, save_site_inputs  # noqa: E402
from fl_server.strategy import aggregate_round  # noqa: E402
from fl_server.validation import Expectation  # noqa: E402
from models.config import InputDims, NetworkSettings, build_model  # noqa: E402
from privacy.ckks import (  # noqa: E402
    PUBLIC_CONTEXT,
    SECRET_CONTEXT,
    KeyInfo,
    decrypt_vector,
    encrypt_vector,
    load_ciphertext,
    load_public_context,
    load_site_context,
    write_key_files,
)

PRESETS = {"quick": {"sites": 2, "patients": 32, "repeats": 1}, "full": {"sites": 3, "patients": 60, "repeats": 3}}
MODES = ("plain", "dp", "he", "dp-he")
WIDE = NetworkSettings(stgcn_channels=(96, 96, 192, 192), d_model=96, embed_dim=192, hidden=192)


def _setup(root: Path, sites: int, patients: int) -> tuple[list[str], SiteKeys, Any]:
    records = make_records(patients * sites, seed=11, sites=sites)
    names = [f"S{i:02d}" for i in range(1, sites + 1)]
    for site in names:
        inputs = SiteInputs(site, [r for r in records if r.site == site], [f"g{i}" for i in range(N_GLOBAL)],
                            GLOBAL_GROUPS, [f"c{i}" for i in range(N_CLINICAL)])
        save_site_inputs(inputs, root / site / "model_inputs.pt")
    write_key_files(root / "keys")
    keys = SiteKeys(KeyInfo.read(root / "keys" / "site" / "keyinfo.json"),
                    load_site_context(root / "keys" / SECRET_CONTEXT))
    return names, keys, load_public_context(root / "keys" / PUBLIC_CONTEXT)


def _dims(task: Any) -> InputDims:
    groups = tuple(tuple(i for i, g in enumerate(GLOBAL_GROUPS) if g == name) for name in dict.fromkeys(GLOBAL_GROUPS))
    return InputDims(int(task.data.train.tensors[0].shape[-1]), N_GLOBAL, N_CLINICAL, groups)


def _wide_model(dims: InputDims) -> Any:
    """The product task's early + full pair (one DP-SGD run trains both), each network ≈ 10× wider."""
    from fl_client.two_mode import EarlyFullNet

    return EarlyFullNet(build_model("fusion", 2, dims, WIDE), build_model("fusion", 3, dims, WIDE))


def _round(root: Path, names: list[str], keys: SiteKeys, public: Any, mode: str, wide: bool,
           tag: str) -> dict[str, Any]:
    settings = ClientSettings(mode=mode, local_epochs=1, batch_size=16, noise_multiplier=1.0, epsilon_budget=1e6)
    site_times, decode_times, updates = [], [], []
    for site in names:
        task = fusion_task(site, root / site, settings)
        if wide:
            task.model_fn = lambda dims=_dims(task): _wide_model(dims)
        began = time.perf_counter()
        updates.append(site_round(1, task.model_fn, task.data, None, settings, keys, root / "state" / tag / site,
                                  task.train_fn))
        site_times.append(time.perf_counter() - began)
    meta = updates[0].meta
    exp = Expectation(1, meta.layout_digest, meta.length, keys.info.key_id, settings.encoding, keys.params)
    began = time.perf_counter()
    report = aggregate_round([u.to_record() for u in updates], [], len(names), exp, public, len(names))
    aggregate_s = time.perf_counter() - began
    assert report.global_model is not None
    for site in names:
        task = fusion_task(site, root / site, settings)
        model = _wide_model(_dims(task)) if wide else task.model_fn()
        began = time.perf_counter()
        apply_global_model(model, report.global_model, keys)
        decode_times.append(time.perf_counter() - began)
    round_s = max(site_times) + aggregate_s + max(decode_times)
    return {"params": meta.length, "round_s": round_s, "site_s": max(site_times), "aggregate_s": aggregate_s,
            "decode_s": max(decode_times), "update_bytes": updates[0].nbytes,
            "global_bytes": report.global_model.nbytes}


def _throughput(keys: SiteKeys, public: Any, params: int) -> dict[str, float]:
    vector = np.random.default_rng(0).normal(size=params)
    began = time.perf_counter()
    chunks = encrypt_vector(keys.context, vector, keys.params)
    enc = time.perf_counter() - began
    loaded = [load_ciphertext(public, c) for c in chunks]
    others = [load_ciphertext(public, c) for c in chunks]
    began = time.perf_counter()
    for a, b in zip(loaded, others, strict=True):
        a.add_(b)
    add = time.perf_counter() - began
    began = time.perf_counter()
    decrypt_vector(keys.context, [a.serialize() for a in loaded], params)
    dec = time.perf_counter() - began
    return {"encrypt": params / enc, "add": params / add, "decrypt": params / dec}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"bench_federation preset={args.preset} sites={preset['sites']} patients/site={preset['patients']} "
          f"threads={torch.get_num_threads()} device=cpu (in-process round, no transport)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names, keys, public = _setup(root, preset["sites"], preset["patients"])
        for wide in (False, True):
            rows = {}
            for mode in MODES:
                runs = [_round(root, names, keys, public, mode, wide, f"{mode}-{wide}-{i}")
                        for i in range(preset["repeats"])]
                rows[mode] = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
            label = "10x" if wide else "demo"
            print(f"\n== model {label}: {int(rows['plain']['params']):,} parameters "
                  f"(float32 update {4 * rows['plain']['params'] / 1024:.0f} KiB)")
            print(f"{'mode':7s} {'round s':>8s} {'site s':>8s} {'agg s':>8s} {'dec s':>8s} {'update KiB':>11s} "
                  f"{'x fp32':>7s} {'vs plain':>9s}")
            for mode in MODES:
                r = rows[mode]
                print(f"{mode:7s} {r['round_s']:8.2f} {r['site_s']:8.2f} {r['aggregate_s']:8.3f} {r['decode_s']:8.3f} "
                      f"{r['update_bytes'] / 1024:11.0f} {r['update_bytes'] / (4 * r['params']):7.2f} "
                      f"{r['round_s'] / rows['plain']['round_s']:8.2f}x")
            he_overhead = rows["dp-he"]["round_s"] / rows["dp"]["round_s"] - 1
            print(f"HE overhead on the DP round: {100 * he_overhead:+.1f} % (target <= +25 %); "
                  f"ciphertext/fp32 bytes: {rows['dp-he']['update_bytes'] / (4 * rows['dp-he']['params']):.2f}x "
                  "(target <= 10x)")
            params = int(rows["plain"]["params"])
            speed = _throughput(keys, public, params)
            print("CKKS throughput (params/s): " + ", ".join(f"{k} {v:,.0f}" for k, v in speed.items()))
            # Wall-clock differences between modes are noisy on a shared machine; the HE work itself is
            # encrypt (site) + add (server, one per extra site) + decrypt (site), measured directly.
            he_s = params / speed["encrypt"] + (len(names) - 1) * params / speed["add"] + params / speed["decrypt"]
            print(f"HE work per round on the critical path: {he_s:.3f} s = {100 * he_s / rows['dp']['round_s']:.1f} % "
                  f"of the measured DP round ({rows['dp']['round_s']:.2f} s)")


if __name__ == "__main__":
    main()
