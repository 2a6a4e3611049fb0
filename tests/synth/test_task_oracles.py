"""Per-task oracles of the generator: durable benefit from the T2 state, pseudoprogression at T1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synth.cohort import plan_cohort
from synth.outcomes import at_t2, benefit_oracle, oracle_summary, progressing_at_t1, task_oracles
from synth.presets import PRESETS


@pytest.fixture(scope="module")
def trial_patients() -> list:
    plan = plan_cohort(2, 40, 5, PRESETS["trial"])
    return [p for patients in plan.values() for p in patients]


def test_the_t2_state_keeps_three_visits_and_no_later_lesion(trial_patients: list) -> None:
    patient = next(p for p in trial_patients if len(p.visits) > 3)
    copy = at_t2(patient)
    assert copy.visits == patient.visits[:3] and all(len(les.sizes) == 3 for les in copy.lesions)
    assert len(patient.visits) > 3  # the original is untouched


def test_an_early_progressor_has_no_chance_of_benefit(trial_patients: list) -> None:
    early = [p for p in trial_patients if p.pd_visit in ("T1", "T2") and p.pfs_days < 150]
    assert early
    for patient in early[:3]:
        assert benefit_oracle(patient, draws=8) == {"dcb6": 0.0, "dcb12": 0.0}


def test_oracles_are_reproducible_and_do_not_move_the_cohort(trial_patients: list) -> None:
    first = [task_oracles(p) for p in trial_patients[:5]]
    again = [task_oracles(p) for p in trial_patients[:5]]
    assert json.dumps(first) == json.dumps(again)
    replanned = [p for ps in plan_cohort(2, 40, 5, PRESETS["trial"]).values() for p in ps]
    assert [p.pfs_days for p in replanned] == [p.pfs_days for p in trial_patients]


def test_task_oracles_separate_their_truth_labels(trial_patients: list) -> None:
    rows = [{"RESPONDER": int(p.responder), "PSEUDOPROG": int(p.kinetics.pseudo), "PFS_DAYS": p.pfs_days,
             "PFS_EVENT": int(p.pfs_event), **task_oracles(p)} for p in trial_patients]
    summary = oracle_summary(rows)
    assert summary["early"]["auc"] > 0.75 and summary["full_dcb6"]["auc"] > 0.8
    assert summary["full_dcb6"]["n"] <= len(rows)  # censored before the landmark: left out
    eligible = [p for p in trial_patients if progressing_at_t1(p)]
    assert summary["pseudo"]["n"] == len(eligible)
    assert all(np.isnan(r["ORACLE_PSEUDO_SCORE"]) for r, p in zip(rows, trial_patients, strict=True)
               if not progressing_at_t1(p))


def test_the_cohort_writes_task_oracles(small_cohort: Path) -> None:
    oracle = json.loads((small_cohort / "truth" / "oracle.json").read_text())
    assert {"early", "full_dcb6", "full_dcb12", "pseudo"} <= set(oracle["tasks"])
    header = (small_cohort / "truth" / "subjects.csv").read_text().splitlines()[0].split(",")
    assert {"ORACLE_EARLY_P", "ORACLE_DCB6_P", "ORACLE_DCB12_P", "ORACLE_PSEUDO_SCORE"} <= set(header)
