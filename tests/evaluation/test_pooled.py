"""Pooled statistics from site aggregates equal the statistics of the union of patient rows (within binning)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test
from lifelines.utils import median_survival_times
from sklearn.metrics import brier_score_loss, roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from evaluation.exceptions import PooledStatisticsError
from evaluation.pooled import (
    MODES,
    AggregateLayout,
    CkksCodec,
    PlainCodec,
    SiteInputs,
    binned_auc,
    pool,
    pooled_metrics,
    site_aggregate,
)
from evaluation.stats import delong_auc_ci

CUTOFFS = {"early": 0.45, "full": 0.55}


def _site(seed: int, n: int) -> SiteInputs:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    scores = {m: 1 / (1 + np.exp(-(rng.normal(0, 1.0, n) + (1.0 + k) * (y - 0.5)))) for k, m in enumerate(MODES)}
    t_event = rng.exponential(np.where(y == 1, 400.0, 150.0))
    censor = rng.uniform(50, 700, n)
    days = np.ceil(np.minimum(t_event, censor))
    return SiteInputs(y, days, (t_event <= censor).astype(int), scores, CUTOFFS)


SITES = [_site(1, 40), _site(2, 25), _site(3, 60)]


def _union() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    y = np.concatenate([s.labels for s in SITES])
    t = np.concatenate([s.pfs_days for s in SITES])
    e = np.concatenate([s.pfs_event for s in SITES])
    sc = {m: np.concatenate([s.scores[m] for s in SITES]) for m in MODES}
    return y, t, e, sc


def _pooled(layout: AggregateLayout) -> dict:
    summed = pool([site_aggregate(s, layout) for s in SITES], PlainCodec(), layout)
    return pooled_metrics(summed, CUTOFFS, layout)


@pytest.mark.parametrize("bins", [50, 200, 2000])
def test_pooled_auc_within_stated_binning_bound(bins: int) -> None:
    layout = AggregateLayout(score_bins=bins)
    pooled = _pooled(layout)
    y, _, _, sc = _union()
    for mode in MODES:
        exact = roc_auc_score(y, sc[mode])
        assert abs(pooled[mode]["auc"] - exact) <= pooled[mode]["auc_binning_bound"] + 1e-12
        if bins >= 2000:
            assert pooled[mode]["auc"] == pytest.approx(exact, abs=2e-3)
            _, (low, high) = delong_auc_ci(y, sc[mode])
            assert pooled[mode]["auc_ci"] == pytest.approx([low, high], abs=5e-3)


def test_pooled_dhi_auc_within_bound_and_absent_without_dhi() -> None:
    rng = np.random.default_rng(9)
    sites = [SiteInputs(s.labels, s.pfs_days, s.pfs_event, s.scores, CUTOFFS,
                        dhi=rng.uniform(0.0, 1.2, s.labels.size) + 0.4 * s.labels) for s in SITES]
    layout = AggregateLayout()
    pooled = pooled_metrics(pool([site_aggregate(s, layout) for s in sites], PlainCodec(), layout), CUTOFFS, layout)
    y = np.concatenate([s.labels for s in sites])
    exact = roc_auc_score(y, np.concatenate([s.dhi for s in sites]))
    assert abs(pooled["dhi_auc"] - exact) <= pooled["dhi_auc_binning_bound"] + 1e-12
    assert pooled["dhi_auc_binning_bound"] < 0.02
    assert _pooled(layout)["dhi_auc"] is None


def test_binned_auc_is_exact_when_every_score_has_its_own_bin() -> None:
    # Scores 0.05, 0.15, ... land in distinct bins of 10: binning loses nothing, DeLong variance identical.
    y = np.array([0, 1, 0, 1, 1, 0, 1, 0, 1, 1])
    s = np.arange(10) / 10 + 0.05
    hp = np.bincount((s[y == 1] * 10).astype(int), minlength=10).astype(float)
    hn = np.bincount((s[y == 0] * 10).astype(int), minlength=10).astype(float)
    auc, var = binned_auc(hp, hn)
    ref_auc, (low, _) = delong_auc_ci(y, s)
    assert auc == pytest.approx(ref_auc)
    assert auc - 1.959963984540054 * np.sqrt(var) == pytest.approx(low)


def test_pooled_confusion_brier_and_orr_are_exact() -> None:
    pooled = _pooled(AggregateLayout())
    y, _, _, sc = _union()
    for mode in MODES:
        called = sc[mode] >= CUTOFFS[mode]
        assert pooled[mode]["sensitivity"] == pytest.approx(np.mean(called[y == 1]))
        assert pooled[mode]["specificity"] == pytest.approx(np.mean(~called[y == 0]))
        assert pooled[mode]["brier"] == pytest.approx(brier_score_loss(y, sc[mode]))
    assert pooled["orr"] == pytest.approx(y.mean())
    assert pooled["orr_ci"] == pytest.approx(list(proportion_confint(y.sum(), y.size, method="beta")))


def test_pooled_km_median_and_logrank_exact_on_a_one_day_grid() -> None:
    layout = AggregateLayout(score_bins=100, pfs_grid_days=tuple(float(d) for d in range(0, 763)))
    pooled = _pooled(layout)
    _, t, e, sc = _union()
    ref = KaplanMeierFitter().fit(t, e)
    times = np.asarray(pooled["km"]["times"])
    on_data = np.isin(times, ref.survival_function_.index.to_numpy())
    np.testing.assert_allclose(
        np.asarray(pooled["km"]["survival"])[on_data], ref.survival_function_["KM_estimate"].loc[times[on_data]]
    )
    ci = median_survival_times(ref.confidence_interval_)
    assert pooled["median_pfs_days"] == ref.median_survival_time_
    assert pooled["median_pfs_ci"] == [ci.iloc[0, 0], ci.iloc[0, 1]]
    called = sc["early"] >= CUTOFFS["early"]
    lr = logrank_test(t[called], t[~called], e[called], e[~called])
    assert pooled["early"]["logrank_called_chi2"] == pytest.approx(lr.test_statistic, rel=1e-9)


def test_pooled_km_on_weekly_bins_stays_within_stated_error() -> None:
    pooled = _pooled(AggregateLayout())  # 7-day grid
    _, t, e, _ = _union()
    ref = KaplanMeierFitter().fit(t, e)
    times = np.asarray(pooled["km"]["times"])
    # Compare at the end of each week (all events of the week counted on both sides).
    exact = ref.survival_function_at_times(times[1:] - 1e-9).to_numpy()
    assert np.max(np.abs(np.asarray(pooled["km"]["survival"])[:-1] - exact)) <= 0.02
    assert abs(pooled["median_pfs_days"] - ref.median_survival_time_) <= 7


def test_ckks_codec_pools_like_plain_and_server_holds_no_secret(tmp_path: Path) -> None:
    ckks = pytest.importorskip("privacy.ckks", reason="privacy.ckks (CKKS packing) is not in this checkout")
    info = ckks.write_key_files(tmp_path)
    site_ctx = ckks.load_site_context(tmp_path / ckks.SECRET_CONTEXT)
    public_ctx = ckks.load_public_context(tmp_path / ckks.PUBLIC_CONTEXT)
    assert not public_ctx.has_secret_key()
    params = info.params
    layout = AggregateLayout(score_bins=100)
    vectors = [site_aggregate(s, layout) for s in SITES]
    enc = pool(vectors, CkksCodec(site_ctx, public_ctx, params), layout)
    plain = pool(vectors, PlainCodec(), layout)
    np.testing.assert_allclose(enc, plain, atol=1e-5)
    assert pooled_metrics(enc, CUTOFFS, layout)["full"]["auc"] == pytest.approx(
        pooled_metrics(plain, CUTOFFS, layout)["full"]["auc"], abs=1e-9
    )


def test_layout_mismatch_and_bad_scores_are_refused() -> None:
    with pytest.raises(PooledStatisticsError, match="layout expects"):
        pooled_metrics(site_aggregate(SITES[0], AggregateLayout(score_bins=10)), CUTOFFS, AggregateLayout())
    bad = SiteInputs(SITES[0].labels, SITES[0].pfs_days, SITES[0].pfs_event,
                     {"early": SITES[0].scores["early"] * 3, "full": SITES[0].scores["full"]}, CUTOFFS)
    with pytest.raises(PooledStatisticsError, match=r"probabilities in \[0, 1\]"):
        site_aggregate(bad)
    with pytest.raises(PooledStatisticsError, match="no site aggregates"):
        pool([], PlainCodec(), AggregateLayout())


# --- pooled Cox (evaluation.pooled_cox): site-stratified model from site sums = lifelines on the union ---------


def _cox_sites(seed: int, ties: bool) -> tuple[list, pd.DataFrame]:
    from evaluation.pooled_cox import SiteSurvival

    rng = np.random.default_rng(seed)
    sites, frames = [], []
    for k, n in enumerate((40, 25, 60)):
        x = np.c_[rng.gamma(2.0, 0.3, n), rng.integers(0, 2, n)]
        t = rng.exponential(200.0 * np.exp(-0.8 * x[:, 0] + 0.3 * x[:, 1]) * (1 + 0.5 * k))  # site baselines differ
        c = rng.uniform(50, 700, n)
        t, e = np.minimum(t, c), (t <= c).astype(int)
        t = np.ceil(t) if ties else t  # whole days: tied event times (Efron)
        sites.append(SiteSurvival.of(t, e, x))
        frames.append(pd.DataFrame({"T": t, "E": e, "DHI": x[:, 0], "G": x[:, 1], "site": k}))
    return sites, pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("columns", [["DHI"], ["DHI", "G"]])
def test_pooled_cox_equals_lifelines_stratified_on_the_union(ties: bool, columns: list[str]) -> None:
    from lifelines import CoxPHFitter

    from evaluation.pooled_cox import SiteSurvival, fit_pooled_cox

    sites, union = _cox_sites(7, ties)
    index = [["DHI", "G"].index(c) for c in columns]
    sites = [SiteSurvival.of(s.durations, s.events, s.covariates[:, index]) for s in sites]
    fit = fit_pooled_cox(sites, PlainCodec())
    # lifelines stops ~1e-5 from the optimum at its default precision; ask for a converged reference
    ref = CoxPHFitter().fit(union[["T", "E", "site", *columns]], "T", "E", strata=["site"],
                            fit_options={"precision": 1e-12})
    np.testing.assert_allclose(fit.beta, ref.params_[columns].to_numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fit.se, ref.standard_errors_[columns].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(fit.p, ref.summary.loc[columns, "p"].to_numpy(), rtol=1e-5)
    assert fit.loglik == pytest.approx(ref.log_likelihood_, rel=1e-9)
    assert (fit.n, fit.events) == (len(union), int(union["E"].sum()))


def test_pooled_cox_is_not_the_unstratified_model() -> None:
    """Sites are strata: ignoring them (one baseline hazard) gives a different HR on these data."""
    from lifelines import CoxPHFitter

    from evaluation.pooled_cox import SiteSurvival, fit_pooled_cox

    sites, union = _cox_sites(7, True)
    fit = fit_pooled_cox([SiteSurvival.of(s.durations, s.events, s.covariates[:, 0]) for s in sites], PlainCodec())
    plain = CoxPHFitter().fit(union[["T", "E", "DHI"]], "T", "E", fit_options={"precision": 1e-12})
    assert abs(fit.beta[0] - plain.params_["DHI"]) > 1e-3


def test_pooled_cox_through_ckks_matches_plain(tmp_path: Path) -> None:
    ckks = pytest.importorskip("privacy.ckks", reason="privacy.ckks (CKKS packing) is not in this checkout")
    from evaluation.pooled_cox import SiteSurvival, fit_pooled_cox

    info = ckks.write_key_files(tmp_path)
    codec = CkksCodec(ckks.load_site_context(tmp_path / ckks.SECRET_CONTEXT),
                      ckks.load_public_context(tmp_path / ckks.PUBLIC_CONTEXT), info.params)
    sites, _ = _cox_sites(7, True)
    sites = [SiteSurvival.of(s.durations, s.events, s.covariates[:, 0]) for s in sites]
    enc, plain = fit_pooled_cox(sites, codec, tol=1e-6), fit_pooled_cox(sites, PlainCodec())
    # CKKS noise (~1e-7 on each summed score) moves the Newton optimum by noise / information
    np.testing.assert_allclose(enc.hr, plain.hr, rtol=1e-5)
    np.testing.assert_allclose(enc.se, plain.se, rtol=1e-5)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda S: [], "no site"),
        (lambda S: [S.of([5.0, 6.0], [0, 0], [0.1, 0.2])], "no events"),
        (lambda S: [S.of([5.0, 6.0], [1, 0], [0.1, 0.2]), S.of([5.0], [1], [[0.1, 1.0]])], "different numbers"),
        (lambda S: [S.of([5.0, 6.0, 7.0], [1, 1, 0], [0.3, 0.3, 0.3])], "singular"),
        (lambda S: [S.of([5.0, 6.0], [1, 2], [0.1, 0.2])], "events 0/1"),
        (lambda S: [S.of([5.0, 6.0], [1, 0], [0.1])], "one time, event and covariate"),
    ],
)
def test_pooled_cox_refuses_unusable_input_with_the_reason(make: object, match: str) -> None:
    from evaluation.pooled_cox import SiteSurvival, fit_pooled_cox

    with pytest.raises(PooledStatisticsError, match=match):
        fit_pooled_cox(make(SiteSurvival), PlainCodec())  # type: ignore[operator]


def test_each_mode_block_counts_its_own_labelled_subjects_and_the_reference_blocks_theirs() -> None:
    """``mode_labels`` (NaN: not scored in that mode) and ``reference_included`` pick each block's subjects: the
    mode blocks equal the aggregate of that mode's own subjects and labels alone, the reference blocks that of
    the reference subjects alone; the layout version (in the digest) keeps them from summing with older ones."""
    site = SITES[0]
    n = site.labels.size
    rng = np.random.default_rng(4)
    full_label = rng.integers(0, 2, n).astype(float)
    full_label[:5] = np.nan  # early-only patients (no T2 scan): no full-mode row
    reference = np.isfinite(full_label)
    scores = {"early": site.scores["early"], "full": np.where(reference, site.scores["full"], np.nan)}
    masked = SiteInputs(site.labels, site.pfs_days, site.pfs_event, scores, CUTOFFS, pfs_included=reference,
                        mode_labels={"early": site.labels.astype(float), "full": full_label},
                        reference_included=reference)
    layout = AggregateLayout()
    blocks = layout.unpack(site_aggregate(masked, layout))
    early = layout.unpack(site_aggregate(SiteInputs(site.labels, site.pfs_days, site.pfs_event, site.scores, CUTOFFS,
                                                    pfs_included=reference), layout))
    keep = reference

    def alone(labels: np.ndarray) -> dict[str, np.ndarray]:  # the reference subjects only, with these labels
        return layout.unpack(site_aggregate(SiteInputs(labels[keep].astype(int), site.pfs_days[keep],
                                                       site.pfs_event[keep], {m: site.scores[m][keep] for m in MODES},
                                                       CUTOFFS), layout))

    full, ref = alone(full_label), alone(site.labels)
    for name in blocks:
        expected = early if name.startswith("early.") else full if name.startswith("full.") else ref
        np.testing.assert_array_equal(blocks[name], expected[name], err_msg=name)
    assert not np.array_equal(full["full.hist_pos"], ref["full.hist_pos"])  # the two labels do differ
    pooled = pooled_metrics(blocks_vector := site_aggregate(masked, layout), CUTOFFS, layout)
    assert pooled["full"]["auc"] == pytest.approx(binned_auc(full["full.hist_pos"], full["full.hist_neg"])[0])
    assert pooled["early"]["n"] == n and pooled["full"]["n"] == int(keep.sum()) == pooled["n"]
    assert blocks_vector.size == layout.size
    assert AggregateLayout(version=1).digest != layout.digest
