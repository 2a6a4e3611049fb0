"""Models: held-out AUC of the product model (``model.kind``, default ``wide``), the fusion net and the baselines
vs the generator's oracle; epoch time; DP overhead.

    .venv/bin/python benchmarks/bench_models.py                          # synthetic in-memory records
    .venv/bin/python benchmarks/bench_models.py --cohort /tmp/trial      # model_inputs.pt under a cohort
    .venv/bin/python benchmarks/bench_models.py --cohort /tmp/h7/trial90 --accuracy-only --seeds 1,2,3
    .venv/bin/python benchmarks/bench_models.py --speed-only             # step time and DP overhead only

Accuracy: patient-level stratified CV (and leave-one-site-out) exactly as ``fedresponse train
--centralized`` runs it (:func:`fl_client.centralized.evaluate_modes`), over ``--seeds`` (folds and
initialisation), printed per task (early response, durable benefit at 6 and 12 months from T2, T1
pseudoprogression) and model — the fusion with its deep part on (``fusion``) and off (``wide``), the
ST-GCN and the Transformer alone (``evaluation.kinds``; ``--set evaluation.kinds=[wide]`` fits the product
model only), and the baselines of :mod:`fl_client.baselines` — as mean ± SD over
the seeds with the first seed's DeLong 95 % CI, and each model's gap to the task's oracle and to the
features' upper bound on the same patients (:mod:`task_references`). Without ``--cohort`` the records
come from the tests' synthetic generator (``tests/models/model_records.py``), whose signal is not the
trial generator's, so its AUCs say only that the pipeline learns; oracle and bound are then absent.

Speed (``dp_speed.py``): median time of a plain and a DP-SGD step of the full-mode fusion network at
the real graph size on one site's worth of patients (batch 32), taken in turn in the same run, with the
ratio, also for Opacus' defaults and the former Conv2d network, on CPU — and on CUDA (bf16 autocast) when
a GPU is present.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "models"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import dp_speed  # noqa: E402
import task_references  # noqa: E402

from evaluation.protocol import configs_dir  # noqa: E402
from fl_client.baselines import BASELINES  # noqa: E402
from fl_client.centralized import PooledCohort, evaluate_modes  # noqa: E402
from fl_client.featurize import stale_columns  # noqa: E402
from fl_client.train import load_site_inputs  # noqa: E402
from models.config import ModelSettings, load_model_config  # noqa: E402


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
    truth = task_references.truth_dir(args.cohort)
    oracle = json.loads((truth / "oracle.json").read_text())["early_oracle_auc"] if truth is not None else None
    records = [r for s in sites for r in s.records]
    return PooledCohort(records, sites[0].global_names, sites[0].global_groups, sites[0].clinical_names), oracle, \
        str(args.cohort)


#: Networks of the accuracy comparison are ``evaluation.kinds`` (default every product kind: the fusion with its
#: deep part on and off, each deep branch alone); ``--set evaluation.kinds=[wide]`` fits the product model only.
ACCURACY_DIAGNOSTICS = ("deep",)  # the fusion without its wide path (--diagnostics)


def _mean_sd(values: list[float | None]) -> tuple[float, float] | None:
    kept = [v for v in values if v is not None]
    return (float(np.mean(kept)), float(np.std(kept, ddof=1)) if len(kept) > 1 else 0.0) if kept else None


def _fmt(pair: tuple[float, float] | None) -> str:
    return f"{pair[0]:.3f} ± {pair[1]:.3f}" if pair else "—"


def _gap(value: tuple[float, float] | None, reference: float | None) -> str:
    return f"{value[0] - reference:+.3f}" if value and reference is not None else "—"


def _row(name: str, runs: list[dict], pick, ref: task_references.TaskReference | None) -> str:
    """One model's line: mean ± SD over seeds, first seed's CI, sens/spec, gaps to oracle and bound."""
    blocks = [pick(run) for run in runs]
    auc = _mean_sd([b.get("auc") if b else None for b in blocks])
    first = blocks[0] or {}
    ci = first.get("auc_ci")
    extra = _mean_sd([b.get("c_index") if b else None for b in blocks])
    sens, spec = (_mean_sd([b.get(k) if b else None for b in blocks]) for k in ("sensitivity", "specificity"))
    return (f"  {name:32s} {_fmt(auc):>15s} {(f'{ci[0]:.3f}–{ci[1]:.3f}' if ci else '—'):>13s} "
            f"{(f'{sens[0]:.2f}' if sens else '—'):>5s} {(f'{spec[0]:.2f}' if spec else '—'):>5s} "
            f"{(f'{extra[0]:.3f}' if extra else ''):>7s} {_gap(auc, ref.oracle_auc if ref else None):>9s} "
            f"{_gap(auc, ref.bound_auc if ref else None):>9s}")


def _header(title: str, ref: task_references.TaskReference | None) -> None:
    if ref is None:
        print(f"\n{title}")
    else:
        oracle = "—" if ref.oracle_auc is None else f"{ref.oracle_auc:.3f}"
        bound = "—" if ref.bound_auc is None else f"{ref.bound_auc:.3f}"
        print(f"\n{title}: n {ref.n}, positives {ref.positives}; oracle AUC {oracle}, feature bound {bound}")
    print(f"  {'model':32s} {'AUC mean ± SD':>15s} {'95 % CI (s1)':>13s} {'sens':>5s} {'spec':>5s} {'C-index':>7s} "
          f"{'− oracle':>9s} {'− bound':>9s}")


def accuracy(cohort: PooledCohort, settings: ModelSettings, seeds: list[int], diagnostics: bool = False,
             modes: tuple[str, ...] = ("early", "full"), cohort_dir: Path | None = None,
             runs: list[dict] | None = None) -> list[dict]:
    """Every model and baseline per task over ``seeds``, with oracle and feature-bound gaps; returns the runs
    (``runs``: metrics of earlier runs, e.g. one process per seed, to report instead of fitting)."""
    start = time.perf_counter()
    kinds = tuple(dict.fromkeys(settings.evaluation.kinds + (ACCURACY_DIAGNOSTICS if diagnostics else ())))
    if runs is None:
        runs = [evaluate_modes(cohort.records, cohort.dims, settings, torch.device("cpu"), seed, modes=modes,
                               kinds=kinds, delta_columns=cohort.radiomics_columns)[0] for seed in seeds]
    kinds = tuple(k for k in kinds if k in runs[0][modes[0]])
    refs: dict[str, task_references.TaskReference] = {}
    truth = task_references.truth_dir(cohort_dir) if cohort_dir is not None else None
    if truth is not None:
        oracles, patients = task_references.oracle_table(truth)
        tasks = [t for t, (mode, _, _) in task_references.TASKS.items() if mode in modes]
        refs = {t: task_references.task_reference(t, cohort.records, oracles, patients,
                                                  settings.evaluation.cv_folds, seeds[0]) for t in tasks}
    print(f"\nHeld-out AUC ({settings.evaluation.cv_folds}-fold patient CV, seeds {seeds}), {len(cohort.records)} "
          f"patients, {settings.train.epochs} epochs, cut-offs from {settings.evaluation.cutoff_folds} inner folds, "
          f"{time.perf_counter() - start:.0f} s")
    names = [*kinds, *BASELINES]
    titles = {"early": "Task early (T0+T1 → response)", "full": "Task full (T0–T2 → durable benefit at 6 months)"}
    for mode in modes:
        _header(titles[mode], refs.get(mode))
        for name in names:
            print(_row(name, runs, lambda run, n=name, m=mode: run[m].get(n), refs.get(mode)))
        if mode == "full":
            _header("Task dcb12 (the full model's score → durable benefit at 12 months)", refs.get("dcb12"))
            for name in names:
                print(_row(name, runs, lambda run, n=name: {"auc": run["full"][n].get("auc_dcb12")},
                           refs.get("dcb12")))
        if mode == "early":
            _header("Task pseudo (early model's pseudo head, T1 iUPDs → pseudoprogression)", refs.get("pseudo"))
            for name in kinds:
                print(_row(name, runs, lambda run, n=name: run["early"][n]["pseudo"], refs.get("pseudo")))
            product = settings.model.kind
            sens = [run["early"][product]["pseudo"]["sensitivity_at_90_specificity"] for run in runs]
            print(f"  {product} (product model) sensitivity at 90 % specificity per seed: {sens}")
    for mode in modes:
        loso = [run.get("leave_one_site_out", {}).get(mode) for run in runs]
        if loso[0]:
            cells = ", ".join(f"{n} {_fmt(_mean_sd([b[n]['auc'] for b in loso]))}" for n in names)
            print(f"leave-one-site-out {mode}: {cells}")
    return runs


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
    parser.add_argument("--speed-steps", type=int, default=20, help="Steps per variant of the speed test.")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on 2 cores).")
    parser.add_argument("--seed", type=int, default=7, help="Seed of the synthetic records (no --cohort).")
    parser.add_argument("--seeds", default="1,2,3", help="Seeds of the accuracy runs (folds, initialisation).")
    parser.add_argument("--runs-out", type=Path, help="Also write the accuracy runs' metrics (JSON list) here.")
    parser.add_argument("--runs-in", default="", help="Report these comma-separated --runs-out files (no fitting).")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--accuracy-only", action="store_true", help="Skip the speed test.")
    parser.add_argument("--diagnostics", action="store_true",
                        help="Also fit the fusion model without its wide path (the deep part alone).")
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
        graphs = cohort if args.cohort else PooledCohort(dp_speed.real_size(cohort.records), cohort.global_names,
                                                         cohort.global_groups, cohort.clinical_names)
        dp_speed.speed(graphs, settings, args.speed_patients, args.speed_steps)
    if oracle is not None:
        print(f"generator's early oracle over the whole cohort: AUC {oracle:.3f} (truth label)")
    if not args.speed_only:
        earlier = [run for f in args.runs_in.split(",") if f for run in json.loads(Path(f).read_text())] or None
        runs = accuracy(cohort, settings, [int(x) for x in args.seeds.split(",")], args.diagnostics,
                        tuple(args.modes.split(",")), args.cohort, earlier)
        if args.runs_out:
            args.runs_out.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
