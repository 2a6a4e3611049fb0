"""DHI association statistics: a size proxy must not pass the volume-adjusted tests; a real signal must."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dhi_cohort import dhi_cohort, outcomes
from scipy import stats

from evaluation.dhi_stats import dhi_association, partial_spearman
from evaluation.exceptions import EvaluationInputError
from evaluation.protocol import load_protocol
from radiomics.dhi import COMPONENTS, DhiDefinition


def _pearson_partial(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    """Textbook first-order partial correlation on ranks: (r_xy − r_xz r_yz) / √((1 − r_xz²)(1 − r_yz²))."""
    rx, ry, rz = (stats.rankdata(v) for v in (x, y, z))
    r = np.corrcoef([rx, ry, rz])
    return float((r[0, 1] - r[0, 2] * r[1, 2]) / np.sqrt((1 - r[0, 2] ** 2) * (1 - r[1, 2] ** 2)))


def test_partial_spearman_matches_the_textbook_formula():
    rng = np.random.default_rng(0)
    z = rng.normal(size=80)
    x, y = z + rng.normal(size=80), z + rng.normal(size=80)
    rho, p = partial_spearman(x, y, z)
    assert rho == pytest.approx(_pearson_partial(x, y, z), abs=1e-12)
    assert stats.spearmanr(x, y).statistic > 0.3 and abs(rho) < 0.3 and 0 < p <= 1


def _cohort(n: int = 120, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Responders shrink (DLOGVOL); PROXY restates the shrinkage, SIGNAL carries information beyond it."""
    cohort = dhi_cohort(n, seed)
    dhi = pd.DataFrame({"USUBJID": [f"P{i}" for i in range(n)], "FROM": "T0", "TO": "T1", "DLOGVOL": cohort.dlogvol,
                        "PROXY": cohort.proxy, "SIGNAL": cohort.latent})
    return dhi, outcomes(cohort, dhi["USUBJID"])


def test_a_size_proxy_fails_the_adjusted_association_and_a_signal_passes():
    dhi, outcomes = _cohort()
    table = dhi_association(dhi, outcomes, quantities=("PROXY", "SIGNAL", "DLOGVOL")).set_index("quantity")
    proxy, signal = table.loc["PROXY"], table.loc["SIGNAL"]
    assert proxy["auc"] > 0.7 and proxy["rho_vol"] < -0.95  # looks good crude ...
    assert proxy["partial_p"] > 0.01 and proxy["hr_p"] > 0.01  # ... but says nothing beyond the volume change
    assert signal["partial_rho"] > 0.2 and signal["partial_p"] < 0.01
    assert abs(signal["rho_vol"]) < 0.3 and signal["hr"] < 1.0
    assert np.isnan(table.loc["DLOGVOL", "partial_rho"]) and table.loc["DLOGVOL", "n"] == 120


def test_missing_columns_are_reported():
    dhi, outcomes = _cohort(10)
    with pytest.raises(EvaluationInputError, match="lacks"):
        dhi_association(dhi.drop(columns="DLOGVOL"), outcomes, quantities=("SIGNAL",))
    with pytest.raises(EvaluationInputError, match="RESPONDER"):
        dhi_association(dhi, outcomes.drop(columns="RESPONDER"), quantities=("SIGNAL",))


def test_the_protocol_block_defines_the_dhi():
    block = load_protocol().heterogeneity.dhi_components
    definition = DhiDefinition.from_mapping({k: v.model_dump() for k, v in block.items()})
    assert set(definition.components) == set(COMPONENTS)
    weights = [c.weight for c in definition.components.values()]
    assert definition.combine(dict.fromkeys(COMPONENTS, 1.0)) == pytest.approx(sum(weights) / sum(map(abs, weights)))
