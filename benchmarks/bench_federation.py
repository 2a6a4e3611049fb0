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

With ``--cohort STORES`` (assessed site stores, e.g. the trial preset's) it instead runs the real thing once —
``fedresponse train`` (Flower simulation, one node per site, the run config of ``configs/federation.yaml``
overridden by ``--config`` / ``--set key=value``) next to a centralized run of the same stores (``--centralized
CRUN``, else trained here) — and prints, per mode, the federated and centralized AUC **on the same held-out
patients** (the federated run's ``SPLIT=test`` rows; the centralized run's out-of-fold scores of those patients)
with the paired DeLong CI of the difference, and ε per site, rounds completed (and why the run stopped), wall
time per round, bytes per round and the HE share of the round (also written to ``OUT/bench_summary.json``).
The centralized reference cross-fits the product model (``model.kind``) alone, without the leave-one-site-out
pass: the comparison reads only its patient-CV out-of-fold scores, and each deep kind is another full cross-fit
(``--centralized-kinds wide,fusion`` and ``--centralized-loso`` ask for more). A lever is one more run against the
same centralized reference:

    .venv/bin/python benchmarks/bench_federation.py --cohort /tmp/trial90/stores --out /tmp/bench_fed
    .venv/bin/python benchmarks/bench_federation.py --cohort /tmp/trial90/stores --out /tmp/bench_fed_sigma \
        --centralized /tmp/bench_fed/centralized --set noise-multiplier=1.5 --set num-server-rounds=9
"""

from __future__ import annotations

import argparse
import logging
import math
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


def paired_delong(y: np.ndarray, a: np.ndarray, b: np.ndarray, alpha: float = 0.05) -> dict[str, Any]:
    """AUC of scores ``a`` and ``b`` on the same patients and the DeLong CI of ``AUC_a − AUC_b`` (DeLong 1988).

    ``var(Δ) = var_a + var_b − 2 cov``, the covariance from the paired placement values:
    ``cov(V10_a, V10_b)/m + cov(V01_a, V01_b)/n``.
    """
    from scipy.stats import norm

    from evaluation.stats import delong_placements, delong_variance

    positives = int(np.sum(y == 1))
    if min(positives, y.size - positives) < 2:  # no AUC (one class), or no placement variance (one patient)
        return {"auc_a": math.nan, "auc_b": math.nan, "diff": math.nan, "diff_ci": (math.nan, math.nan),
                "n": int(y.size), "positives": positives}
    auc_a, v10a, v01a = delong_placements(y, a)
    auc_b, v10b, v01b = delong_placements(y, b)
    cov = float(np.cov(v10a, v10b)[0, 1]) / v10a.size + float(np.cov(v01a, v01b)[0, 1]) / v01a.size
    variance = max(0.0, delong_variance(v10a, v01a) + delong_variance(v10b, v01b) - 2 * cov)
    half = float(norm.ppf(1 - alpha / 2)) * variance ** 0.5  # a difference lies in [-1, 1]: no clipping to [0, 1]
    return {"auc_a": auc_a, "auc_b": auc_b, "diff": auc_a - auc_b,
            "diff_ci": (auc_a - auc_b - half, auc_a - auc_b + half), "n": int(y.size), "positives": positives}


def _centralized_run(cohort: Path, out: Path, seed: int, kinds: tuple[str, ...] | None = None,
                     loso: bool = False) -> Path:
    """A centralized (pooled) run of the same stores with the model presets, as ``fedresponse train --centralized``.

    ``kinds`` are the networks cross-fitted (default: the product model ``model.kind`` alone — the comparison
    reads only its out-of-fold scores, and each further kind is a full cross-fit: the deep ones cost tens of
    minutes on 2 cores); ``loso`` keeps the leave-one-site-out pass, which the paired comparison does not read.
    """
    from evaluation.protocol import configs_dir
    from fedresponse.featurize import pooled_cohort
    from fl_client.centralized import run_centralized
    from models.config import load_model_config

    settings = load_model_config(configs_dir() / "model.yaml")
    evaluation: dict[str, Any] = {"leave_one_site_out": loso}
    if "kinds" in type(settings.evaluation).model_fields:  # model.kind / evaluation.kinds (configs/model.yaml)
        evaluation["kinds"] = kinds or (settings.model.kind,)
    settings = settings.model_copy(update={"evaluation": settings.evaluation.model_copy(update=evaluation)})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    run_centralized(pooled_cohort(cohort, seed=seed), out, settings, device, seed, None)
    return out


def _same_patients(run: Path, centralized: Path) -> dict[str, dict[str, Any]]:
    """Per mode: federated vs centralized on the federated run's held-out patients (paired DeLong)."""
    import pandas as pd

    from evaluation.metrics import read_predictions

    fed = pd.concat([read_predictions(p) for p in sorted((run / "sites").glob("*/predictions.csv"))])
    cen = pd.concat([read_predictions(p) for p in sorted(centralized.rglob("predictions.csv"))])
    out = {}
    for mode in ("early", "full"):
        # each mode against its own task's label; a patient without one in this mode is left out
        test = fed[(fed["MODE"] == mode) & (fed["SPLIT"] == "test") & fed["LABEL"].notna()].set_index("USUBJID")
        other = cen[cen["MODE"] == mode].drop_duplicates("USUBJID").set_index("USUBJID")
        ids = [u for u in test.index if u in other.index]
        out[mode] = paired_delong(test.loc[ids, "LABEL"].to_numpy(int), test.loc[ids, "SCORE"].to_numpy(float),
                                  other.loc[ids, "SCORE"].to_numpy(float))
    return out


def _parse_sets(pairs: list[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set takes key=value, but was {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def _round_costs(run: Path, keys: Path) -> list[dict[str, Any]]:
    """Per completed round: wall s, bytes in / out, and the HE work (encrypt + adds + decrypt of one update,
    timed here on this machine) as a share of the round."""
    import json

    from fl_server.checkpoint import load_latest

    rounds = [json.loads(line) for line in (run / "rounds.jsonl").read_text(encoding="utf-8").splitlines()]
    latest = load_latest(run)
    if not rounds or latest is None:
        return []
    params = latest.global_model.length
    site_keys = SiteKeys(KeyInfo.read(keys / "site" / "keyinfo.json"), load_site_context(keys / SECRET_CONTEXT))
    speed = _throughput(site_keys, load_public_context(keys / PUBLIC_CONTEXT), params)
    rows = []
    for r in rounds:
        sites = max(1, len(r["accepted"]))
        he_s = params / speed["encrypt"] + (sites - 1) * params / speed["add"] + params / speed["decrypt"]
        rows.append({"round": r["round"], "seconds": r["seconds"], "bytes_in": r["bytes_in"],
                     "bytes_out": r["bytes_out"], "he_s": he_s, "he_share": he_s / max(r["seconds"], 1e-9),
                     "params": params})
    return rows


def _federated_row(args: argparse.Namespace, run: Path, keys: Path, centralized: Path, overrides: dict[str, Any],
                   wall: float) -> dict[str, Any]:
    """Print and return one federated run's row: stop, ε per site, per-mode paired AUCs, per-round costs."""
    import json

    from fedresponse.federation import budget_phrase

    summary = json.loads((run / "run_summary.json").read_text(encoding="utf-8"))
    privacy = json.loads((run / "privacy.json").read_text(encoding="utf-8"))
    settings = ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "defaults (configs/federation.yaml)"
    print(f"bench_federation --cohort {args.cohort}: {summary['stop']} ({wall:.0f} s in all); settings: {settings}")
    print("epsilon per site: " + ", ".join(f"{site} {row['epsilon']:.2f} of {row['budget']}"
                                           for site, row in sorted(privacy["sites"].items()))
          + f" (delta {privacy.get('delta')}); {budget_phrase(summary)}")
    paired = _same_patients(run, centralized)
    for mode, row in paired.items():
        lo, hi = row["diff_ci"]
        print(f"{mode:5s} AUC federated {row['auc_a']:.3f} vs centralized {row['auc_b']:.3f} on the same {row['n']} "
              f"held-out patients ({row['positives']} positive): difference {row['diff']:+.3f} "
              f"(paired DeLong 95 % CI {lo:+.3f} to {hi:+.3f})")
    costs = _round_costs(run, keys)
    for r in costs:
        print(f"round {r['round']}: {r['seconds']:6.1f} s, {r['bytes_in'] / 2**20:6.1f} MiB in, "
              f"{r['bytes_out'] / 2**20:6.1f} MiB out, HE work {r['he_s']:.2f} s = "
              f"{100 * r['he_share']:.1f} % of the round ({r['params']:,} parameters)")
    if costs:
        print(f"mean per round: {np.mean([r['seconds'] for r in costs]):.1f} s, "
              f"{np.mean([r['bytes_in'] + r['bytes_out'] for r in costs]) / 2**20:.1f} MiB in + out, HE share "
              f"{100 * np.mean([r['he_share'] for r in costs]):.1f} %")
    return {"settings": overrides, "run": str(run), "wall_s": wall, "stop": summary["stop"],
            "rounds_configured": summary.get("rounds_configured"), "rounds_planned": summary.get("rounds_planned"),
            "rounds_completed": summary.get("rounds_completed"), "affordable_rounds": summary["affordable_rounds"],
            "epsilon": {site: row["epsilon"] for site, row in sorted(privacy["sites"].items())},
            "delta": privacy.get("delta"), "paired": paired, "rounds": costs}


def split_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per mode, the federated − centralized difference averaged over the seeded held-out splits: mean, SD and
    the standard error of the mean (SD / √K), with each split's difference and held-out n."""
    out: dict[str, dict[str, Any]] = {}
    for mode in ("early", "full"):
        diffs = [r["paired"][mode]["diff"] for r in rows if mode in r["paired"]
                 and np.isfinite(r["paired"][mode]["diff"])]
        if not diffs:
            continue
        sd = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else math.nan
        out[mode] = {"mean_diff": float(np.mean(diffs)), "sd": sd, "se": sd / math.sqrt(len(diffs)),
                     "splits": len(diffs), "diffs": diffs, "n": [r["paired"][mode]["n"] for r in rows]}
    return out


def cohort_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """``--cohort``: federated run(s) and their centralized reference on real site stores; one table.

    ``--splits K`` trains K federated runs whose ``seed`` (the held-out split, and the seeded draws) is
    ``seed``, ``seed + 1``, … against the same centralized reference, and prints each run's row and the
    per-mode difference averaged over the K splits (mean, SD, SE): a lever's effect is read off that mean,
    not one split's draw. ``--federated RUN`` reads a finished run instead of training one (its stores are
    still ``--cohort``). Everything printed is also written to ``OUT/bench_summary.json``.
    """
    import json
    import os

    from fedresponse.federation import train_federated

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = _parse_sets(args.set)
    centralized = Path(args.centralized) if args.centralized else None
    centralized_s = math.nan
    if centralized is None:
        began = time.perf_counter()
        kinds = tuple(k for k in args.centralized_kinds.split(",") if k) or None
        centralized = _centralized_run(Path(args.cohort), out / "centralized", int(overrides.get("seed", 7)), kinds,
                                       args.centralized_loso)
        centralized_s = time.perf_counter() - began
        print(f"centralized run: {centralized_s:.0f} s -> {centralized}")
    keys = Path(args.keys) if args.keys else out / "keys"
    rows = []
    if args.federated:
        rows.append(_federated_row(args, Path(args.federated), keys, centralized, overrides, math.nan))
    else:
        write_key_files(keys, overwrite=True)
        base = int(overrides.get("seed", 7))
        for split in range(args.splits):
            run_overrides = {**overrides, "seed": base + split} if args.splits > 1 else overrides
            run = out / ("federated" if args.splits == 1 else f"federated-seed{base + split}")
            began = time.perf_counter()
            train_federated(Path(args.cohort), keys, run, Path(args.config) if args.config else None,
                            overrides=run_overrides, centralized=centralized)
            rows.append(_federated_row(args, run, keys, centralized, run_overrides, time.perf_counter() - began))
    averaged = split_summary(rows) if len(rows) > 1 else {}
    for mode, row in averaged.items():
        print(f"{mode:5s} difference over {row['splits']} seeded held-out splits: mean {row['mean_diff']:+.3f}, "
              f"SD {row['sd']:.3f}, SE {row['se']:.3f} (each: "
              + ", ".join(f"{d:+.3f}" for d in row["diffs"]) + ")")
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, {'cuda' if torch.cuda.is_available() else 'no GPU'}, "
          f"load average now {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min)")
    print(f"resolved config: {Path(rows[-1]['run']) / 'federation.resolved.yaml'}")
    # "settings": what was asked, not the last split's seed
    result = {**rows[-1], "cohort": str(args.cohort), "settings": overrides, "centralized": str(centralized),
              "centralized_s": centralized_s, "splits": rows, "averaged": averaged,
              "cpus": os.cpu_count(), "cuda": torch.cuda.is_available(), "load": load}
    (out / "bench_summary.json").write_text(json.dumps(result, indent=1, default=float), encoding="utf-8")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--cohort", help="assessed site stores: run fedresponse train there instead (see above)")
    parser.add_argument("--centralized", help="--cohort: a centralized run of the same stores (else trained here)")
    parser.add_argument("--config", help="--cohort: federation config YAML (federation: section)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="--cohort: override one federation setting (repeatable)")
    parser.add_argument("--out", default="bench_federation_out", help="--cohort: output folder")
    parser.add_argument("--federated", help="--cohort: read this finished federated run instead of training one")
    parser.add_argument("--keys", help="--cohort --federated: the run's KEYDIR (default OUT/keys)")
    parser.add_argument("--splits", type=int, default=1, metavar="K",
                        help="--cohort: K federated runs on seeded held-out splits seed, seed+1, ... averaged")
    parser.add_argument("--centralized-kinds", default="", metavar="KIND,...",
                        help="--cohort: networks the centralized reference cross-fits (default: model.kind alone)")
    parser.add_argument("--centralized-loso", action="store_true",
                        help="--cohort: also run the centralized leave-one-site-out pass (not read by the table)")
    args = parser.parse_args()
    if args.cohort:
        logging.basicConfig(level=logging.WARNING)
        cohort_benchmark(args)
        return
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
