"""Agreement statistics checked against published values and independent implementations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from sklearn.metrics import cohen_kappa_score

from evaluation.agreement import bland_altman, cohen_kappa, icc_a1

# Shrout & Fleiss 1979, Table 2: 6 targets rated by 4 judges; the paper reports ICC(2,1) = 0.29.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])


def test_icc_matches_shrout_fleiss_table_2() -> None:
    result = icc_a1(SHROUT_FLEISS)
    assert round(result.icc, 2) == 0.29
    # psych::ICC and pingouin.intraclass_corr report ICC2 95 % CI [0.02, 0.76] on these data.
    assert (round(result.ci_low, 2), round(result.ci_high, 2)) == (0.02, 0.76)


def test_mean_squares_match_statsmodels_two_way_anova() -> None:
    rng = np.random.default_rng(3)
    ratings = rng.normal(50, 10, size=(15, 1)) + rng.normal(0, 3, size=(15, 3)) + np.array([0.0, 1.5, -1.0])
    n, k = ratings.shape
    long = pd.DataFrame({"y": ratings.ravel(), "s": np.repeat(np.arange(n), k), "r": np.tile(np.arange(k), n)})
    anova = sm.stats.anova_lm(smf.ols("y ~ C(s) + C(r)", data=long).fit())
    msr, msc, mse = anova["mean_sq"].to_numpy()
    result = icc_a1(ratings)
    assert (result.ms_rows, result.ms_cols, result.ms_error) == pytest.approx((msr, msc, mse), rel=1e-9)
    expected = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
    assert result.icc == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("rater_var", [0.0, 0.2])
def test_icc_interval_covers_the_true_value_about_95_percent_of_the_time(rater_var: float) -> None:
    """Two readers, 30 subject-visits, true ICC(2,1) = 8 / (8 + rater_var + 1).

    The McGraw–Wong interval is approximate; with few raters and a large rater variance it
    under-covers (Cappelleri & Ting 2003), which is why the rater variance here stays small.
    """
    rng = np.random.default_rng(11)
    n, k, reps = 30, 2, 500
    true_icc = 8 / (8 + rater_var + 1)
    covered = 0
    for _ in range(reps):
        y = rng.normal(0, np.sqrt(8), (n, 1)) + rng.normal(0, np.sqrt(rater_var), (1, k)) + rng.normal(0, 1, (n, k))
        result = icc_a1(y)
        covered += result.ci_low <= true_icc <= result.ci_high
    assert 0.92 <= covered / reps <= 0.985


def test_identical_raters_and_bad_input() -> None:
    perfect = icc_a1(np.array([[1.0, 1.0], [2.0, 2.0], [5.0, 5.0]]))
    assert perfect.icc == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        icc_a1(np.ones((1, 2)))
    with pytest.raises(ValueError, match="missing"):
        icc_a1(np.array([[1.0, np.nan], [2.0, 2.0]]))


def test_systematic_rater_offset_lowers_absolute_agreement() -> None:
    base = np.linspace(20, 80, 12)
    assert icc_a1(np.c_[base, base + 10]).icc < icc_a1(np.c_[base, base + 1]).icc < 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kappa_matches_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = ["CR", "PR", "SD", "PD", "NE"]
    a = rng.choice(labels, 80).tolist()
    b = [x if rng.random() < 0.7 else rng.choice(labels) for x in a]
    result = cohen_kappa(a, b)
    assert result.kappa == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    assert result.ci_low < result.kappa < result.ci_high


def test_kappa_edge_cases() -> None:
    assert cohen_kappa(["PR", "SD", "PD"], ["PR", "SD", "PD"]).kappa == pytest.approx(1.0)
    assert np.isnan(cohen_kappa(["SD", "SD"], ["SD", "SD"]).kappa)
    with pytest.raises(ValueError, match="differ in length"):
        cohen_kappa(["SD"], ["SD", "PD"])


def test_bland_altman_limits() -> None:
    a = np.array([10.0, 20.0, 30.0, 40.0])
    b = a - np.array([1.0, 2.0, 3.0, 2.0])  # differences 1, 2, 3, 2: mean 2, sd sqrt(2/3)
    result = bland_altman(a, b)
    assert result.bias == pytest.approx(2.0)
    assert result.sd == pytest.approx(np.sqrt(2 / 3))
    assert (result.loa_low, result.loa_high) == pytest.approx((2 - 1.96 * np.sqrt(2 / 3), 2 + 1.96 * np.sqrt(2 / 3)))


def test_icc_requirement_is_protocol_data_and_validated(tmp_path: Path) -> None:
    import yaml

    from evaluation.adjudication import icc_required
    from evaluation.protocol import configs_dir, load_protocol

    assert load_protocol().agreement.icc_min == icc_required() == 0.85  # registration protocol, DOMAIN §1
    data = yaml.safe_load((configs_dir() / "study.yaml").read_text(encoding="utf-8"))
    data["agreement"]["icc_min"] = 0.9
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load_protocol(tmp_path / "study.yaml").agreement.icc_min == 0.9
    for bad in (1.2, 0, "high"):
        data["agreement"]["icc_min"] = bad
        (tmp_path / "study.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
        with pytest.raises(ValueError, match="icc_min"):
            load_protocol(tmp_path / "study.yaml")
