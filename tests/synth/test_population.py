"""The latent population: registered balance, oracle difficulty, case mix, pseudoprogression, schedule."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from evaluation.protocol import load_protocol
from synth.cohort import plan_cohort
from synth.outcomes import quotas
from synth.population import ady_to_offset
from synth.presets import get_preset


@pytest.fixture(scope="module")
def trial_plan() -> list:
    plan = plan_cohort(3, None, seed=0, preset=get_preset("trial"))
    return [p for patients in plan.values() for p in patients]


def test_trial_registers_250_responders_and_250_non_responders(trial_plan: list) -> None:
    assert len(trial_plan) == 500
    assert sum(p.responder for p in trial_plan) == 250


@pytest.mark.parametrize("seed", [0, 1])
def test_oracle_auc_of_the_early_bayes_predictor_is_in_the_specified_band(seed: int) -> None:
    patients = [p for ps in plan_cohort(3, None, seed=seed, preset=get_preset("trial")).values() for p in ps]
    y = np.array([p.responder for p in patients])
    auc = roc_auc_score(y, [p.oracle_p for p in patients])
    assert 0.80 <= auc <= 0.92


def test_labels_are_not_a_deterministic_function_of_the_early_oracle(trial_plan: list) -> None:
    p = np.array([pt.oracle_p for pt in trial_plan])
    uncertain = (p > 0.2) & (p < 0.8)
    assert uncertain.sum() >= 50  # many patients whose outcome is genuinely open at T1


def test_sites_differ_in_case_mix(trial_plan: list) -> None:
    by_site: dict[str, list] = {}
    for p in trial_plan:
        by_site.setdefault(p.site, []).append(p)
    high_pdl1 = [np.mean([int(p.covariates["PDL1_TPS"]) >= 50 for p in ps]) for ps in by_site.values()]
    response = [np.mean([p.responder for p in ps]) for ps in by_site.values()]
    assert max(high_pdl1) - min(high_pdl1) > 0.1
    assert max(response) - min(response) > 0.1


def test_covariates_influence_response_in_the_published_direction(trial_plan: list) -> None:
    def rate(cond) -> float:
        group = [p.responder for p in trial_plan if cond(p.covariates)]
        return float(np.mean(group))

    assert rate(lambda c: int(c["PDL1_TPS"]) >= 50) > rate(lambda c: int(c["PDL1_TPS"]) < 1) + 0.1
    driver = rate(lambda c: "POSITIVE" in (c["EGFR"], c["ALK"]))
    wild = rate(lambda c: "POSITIVE" not in (c["EGFR"], c["ALK"]))
    assert driver < wild


def test_pseudoprogression_is_rare_and_shrinks_by_t2(trial_plan: list) -> None:
    pseudo = [p for p in trial_plan if p.kinetics.pseudo]
    assert 0.02 <= len(pseudo) / len(trial_plan) <= 0.08
    for p in pseudo:
        targets = [les for les in p.lesions if les.category == "TARGET"]
        sld = [sum(les.sizes[i] for les in targets) for i in range(3)]
        flare = any(les.kind == "inflammatory" for les in p.lesions) or sld[1] > sld[0]
        assert flare
        assert sld[2] < sld[1]


def test_schedule_follows_the_protocol_windows(trial_plan: list) -> None:
    protocol = load_protocol()
    windows = {v: protocol.timepoints[v].window for v in protocol.visits}
    late = 0
    for p in trial_plan:
        assert windows["T0"][0] <= p.days[0] <= windows["T0"][1]
        assert windows["T2"][0] - 10 <= p.days[2]
        low, high = protocol.irecist.confirm_window_days
        assert low <= p.days[2] - p.days[1] <= high  # T2 can confirm an iUPD seen at T1
        late += not windows["T1"][0] <= p.days[1] <= windows["T1"][1]
    assert 0 < late < 0.06 * len(trial_plan)  # a few protocol deviations for the QC to flag


def test_survival_truth_is_consistent(trial_plan: list) -> None:
    for p in trial_plan:
        assert p.pfs_days <= p.os_days
        assert not (p.os_event and not p.pfs_event)
    median_pfs = np.median([p.pfs_days for p in trial_plan])
    assert 90 < median_pfs < 400  # chemo-immunotherapy in NSCLC: months, not days or years
    assert 0.05 < np.mean([not p.pfs_event for p in trial_plan]) < 0.6  # some censoring


def test_quotas_sum_to_the_registered_total() -> None:
    assert sum(quotas([167, 167, 166], 0.5)) == 250
    assert sum(quotas([12, 12, 12], 0.5)) == 18


@pytest.mark.parametrize(("ady", "offset"), [(1, 0), (2, 1), (-1, -1), (-28, -28), (64, 63)])
def test_cdisc_study_days_have_no_day_zero(ady: int, offset: int) -> None:
    assert ady_to_offset(ady) == offset
