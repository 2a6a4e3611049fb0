"""Models: held-out AUC of the fusion model vs its baselines vs the generator's oracle; epoch time; DP overhead.

    .venv/bin/python benchmarks/bench_models.py                          # synthetic in-memory records
    .venv/bin/python benchmarks/bench_models.py --cohort /tmp/trial      # model_inputs.pt under a cohort
    .venv/bin/python benchmarks/bench_models.py --speed-only             # epoch time and DP overhead only

Accuracy: patient-level stratified CV (and leave-one-site-out) exactly as ``fedresponse train
--centralized`` runs it (:func:`fl_client.centralized.evaluate_modes`), printed per mode and model with
the DeLong 95 % CI, against ``truth/oracle.json`` when the cohort has one. Without ``--cohort`` the
records come from the tests' synthetic generator (``tests/models/model_records.py``), whose signal is
not the trial generator's, so its AUCs say only that the pipeline learns; the oracle is then absent.

Speed: mean time per optimizer step and per epoch of the full-mode fusion network on one site's worth
of patients (batch 32), plain vs Opacus DP-SGD (Poisson sampling, per-sample clipping, noise), with
the ratio, on CPU — and on CUDA (bf16 autocast) when a GPU is present.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "models"))

from evaluation.protocol import configs_dir  # noqa: E402
from fl_client.centralized import NEURAL, PooledCohort, evaluate_modes, node_padding  # noqa: E402
from fl_client.featurize import stale_columns  # noqa: E402
from fl_client.train import Standardizer, load_site_inputs, to_dataset, train_epoch  # noqa: E402
from models.config import DIAGNOSTIC_KINDS, ModelSettings, build_model, load_model_config  # noqa: E402


def _cohort(args: argparse.Namespace) -> tuple[PooledCohort, float | None, str]:
    if args.cohort is None:
        from model_records import GLOBAL_GROUPS, N_CLINICAL, make_records

        records = make_records(args.patients, seed=args.seed, sites=3)
        names = [f"{g}_{i}" for i, g in enumerate(GLOBAL_GROUPS)]
        return PooledCohort(records, names, GLOBAL_GROUPS, [f"c{i}" for i in range(N_CLINICAL)]), None, "synthetic"
    sites = [load_site_inputs(p) for p in sorted(args.cohort.rglob("model_inputs.pt"))]
    if not sites:
        raise SystemExit(f"no model_inputs.pt under {args.cohort}; featurize the sites first")
    stale = [reason for s in sites if (reason := stale_columns(s)) is not None]
    if stale:
        raise SystemExit(f"{stale[0]}; re-featurize (fedresponse.featurize.featurize_store) and point --cohort "
                         "at the new files")
    oracle_path = args.cohort / "truth" / "oracle.json"
    oracle = json.loads(oracle_path.read_text())["early_oracle_auc"] if oracle_path.exists() else None
    records = [r for s in sites for r in s.records]
    return PooledCohort(records, sites[0].global_names, sites[0].global_groups, sites[0].clinical_names), oracle, \
        str(args.cohort)


def _step_times(cohort: PooledCohort, settings: ModelSettings, device: torch.device, private: bool,
                n_patients: int, epochs: int) -> tuple[float, float, float]:
    """Wall s/step, process-CPU s/step and wall s/epoch of the full-mode fusion net, after a warm-up epoch.

    Process CPU time is reported because the shared machines run many jobs: wall time then measures the
    neighbours as much as us, CPU time only our own work.
    """
    from opacus import PrivacyEngine

    records = cohort.records[:n_patients]
    data = to_dataset(records, "full", node_padding(records, settings), Standardizer.fit(records, "full"))
    torch.manual_seed(0)
    model: torch.nn.Module = build_model("fusion", 3, cohort.dims, settings.model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.train.lr)
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(1))
    if private:
        model, optimizer, loader = PrivacyEngine(accountant="prv").make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0)
    weights = settings.train.loss_weights
    train_epoch(model, loader, optimizer, device, weights)  # warm-up (allocations, Opacus hooks)
    steps = 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        train_epoch(model, loader, optimizer, device, weights)
        steps += len(loader)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return elapsed / steps, cpu / steps, elapsed / epochs


def speed(cohort: PooledCohort, settings: ModelSettings, n_patients: int, epochs: int) -> None:
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"\nSpeed: full-mode fusion, {min(n_patients, len(cohort.records))} patients, batch 32, "
          f"{sum(p.numel() for p in build_model('fusion', 3, cohort.dims, settings.model).parameters())} parameters")
    print(f"{'device':8s} {'plain ms/step':>14s} {'DP ms/step':>11s} {'DP/plain':>9s} {'plain CPU-ms':>13s} "
          f"{'DP CPU-ms':>10s} {'CPU ratio':>10s} {'plain s/epoch':>14s} {'DP s/epoch':>11s}")
    for device in devices:
        plain_step, plain_cpu, plain_epoch = _step_times(cohort, settings, device, False, n_patients, epochs)
        dp_step, dp_cpu, dp_epoch = _step_times(cohort, settings, device, True, n_patients, epochs)
        print(f"{device.type:8s} {plain_step * 1e3:14.1f} {dp_step * 1e3:11.1f} {dp_step / plain_step:9.2f} "
              f"{plain_cpu * 1e3:13.1f} {dp_cpu * 1e3:10.1f} {dp_cpu / plain_cpu:10.2f} "
              f"{plain_epoch:14.2f} {dp_epoch:11.2f}")


def accuracy(cohort: PooledCohort, settings: ModelSettings, oracle: float | None, seed: int,
             diagnostics: bool = False, modes: tuple[str, ...] = ("early", "full")) -> None:
    start = time.perf_counter()
    kinds = NEURAL + (tuple(DIAGNOSTIC_KINDS) if diagnostics else ())
    metrics, _ = evaluate_modes(cohort.records, cohort.dims, settings, torch.device("cpu"), seed, modes=modes,
                                kinds=kinds, delta_columns=cohort.radiomics_columns)
    print(f"\nHeld-out AUC ({settings.evaluation.cv_folds}-fold patient CV; LOSO in brackets), "
          f"{len(cohort.records)} patients, {settings.train.epochs} epochs, {time.perf_counter() - start:.0f} s")
    print(f"{'mode':6s} {'model':24s} {'AUC':>6s} {'95 % CI':>13s} {'sens':>5s} {'spec':>5s} {'C-index':>8s} "
          f"{'LOSO AUC':>9s} {'vs fusion':>9s}")
    for mode in modes:
        fused = metrics[mode]["fusion"]["auc"]
        for name, row in metrics[mode].items():
            if not isinstance(row, dict):
                continue
            loso = metrics.get("leave_one_site_out", {}).get(mode, {}).get(name, {}).get("auc")
            c_index = row.get("c_index")
            print(f"{mode:6s} {name:24s} {row['auc']:6.3f} {row['auc_ci'][0]:6.3f}–{row['auc_ci'][1]:.3f} "
                  f"{row['sensitivity']:5.2f} {row['specificity']:5.2f} "
                  f"{'' if c_index is None else f'{c_index:.3f}':>8s} {'' if loso is None else f'{loso:.3f}':>9s} "
                  f"{row['auc'] - fused:+9.3f}")
    if oracle is not None and "early" in metrics:
        print(f"oracle (early, generator's Bayes-optimal) AUC {oracle:.3f}; fusion early − oracle = "
              f"{metrics['early']['fusion']['auc'] - oracle:+.3f}")


def subset_oracle(cohort: PooledCohort, truth: Path) -> None:
    """The generator's per-subject oracle (``truth/subjects.csv`` ``ORACLE_EARLY_P``) on exactly the evaluated
    patients, against the pipeline's reference label (what the models are scored on) and the truth label."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    subjects = pd.read_csv(truth / "subjects.csv").set_index("USUBJID")
    ids = [r.usubjid for r in cohort.records if r.usubjid in subjects.index]
    p = subjects.loc[ids, "ORACLE_EARLY_P"].to_numpy()
    label = [r.responder["early"] for r in cohort.records if r.usubjid in subjects.index]
    agree = float((subjects.loc[ids, "RESPONDER"].to_numpy() == label).mean())
    print(f"oracle on the {len(ids)} evaluated patients: AUC {roc_auc_score(label, p):.3f} against the reference "
          f"label, {roc_auc_score(subjects.loc[ids, 'RESPONDER'], p):.3f} against the truth label "
          f"(reference = truth for {agree:.1%})")


def _override(settings: ModelSettings, assignments: list[str]) -> ModelSettings:
    """Apply ``SECTION.KEY=VALUE`` overrides (YAML-parsed values) and re-validate."""
    data = settings.model_dump()
    for item in assignments:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if section not in data or name not in data[section]:
            raise SystemExit(f"--set {item!r}: unknown preset; use one of model.*, train.*, evaluation.*")
        data[section][name] = yaml.safe_load(value)
    return ModelSettings.model_validate(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, help="Folder holding model_inputs.pt per site (+ truth/oracle.json).")
    parser.add_argument("--patients", type=int, default=300, help="Synthetic patients when no --cohort.")
    parser.add_argument("--epochs", type=int, help="Override train.epochs (accuracy runs).")
    parser.add_argument("--folds", type=int, help="Override evaluation.cv_folds.")
    parser.add_argument("--speed-patients", type=int, default=160, help="Patients of the speed test (one site).")
    parser.add_argument("--speed-epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on 2 cores).")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--accuracy-only", action="store_true", help="Skip the speed test.")
    parser.add_argument("--diagnostics", action="store_true",
                        help="Also fit the halves of the fusion model: its wide path alone, its deep part alone.")
    parser.add_argument("--modes", default="early,full", help="Modes to evaluate (comma-separated).")
    parser.add_argument("--config", type=Path, help="Model presets to use instead of configs/model.yaml.")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="Override one preset, e.g. train.lr=0.001 or model.dropout=0.2 (repeatable; tuning).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    settings = _override(load_model_config(args.config or configs_dir() / "model.yaml"), args.set)
    if args.epochs:
        settings = settings.model_copy(update={"train": settings.train.model_copy(update={"epochs": args.epochs})})
    if args.folds:
        settings = settings.model_copy(update={"evaluation": settings.evaluation.model_copy(
            update={"cv_folds": args.folds})})
    cohort, oracle, source = _cohort(args)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), "
          f"CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}; data: {source}")
    print(f"presets: model {settings.model.model_dump()} train {settings.train.model_dump()}")
    if not args.accuracy_only:
        speed(cohort, settings, args.speed_patients, args.speed_epochs)
    if args.cohort is not None and (args.cohort / "truth" / "subjects.csv").exists():
        subset_oracle(cohort, args.cohort / "truth")
    if not args.speed_only:
        accuracy(cohort, settings, oracle, args.seed, args.diagnostics, tuple(args.modes.split(",")))


if __name__ == "__main__":
    main()
