"""The seeded DHI cohort of the DHI statistics and report tests: responders shrink (``dlogvol``), ``proxy``
restates the shrinkage, ``latent`` carries information beyond it (a responder is also anyone with latent > 1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class DhiCohort:
    rng: np.random.Generator  # further draws continue this cohort's stream
    responder: np.ndarray
    latent: np.ndarray
    dlogvol: np.ndarray
    proxy: np.ndarray


def dhi_cohort(n: int, seed: int) -> DhiCohort:
    rng = np.random.default_rng(seed)
    responder = rng.random(n) < 0.5
    latent = rng.normal(size=n)
    dlogvol = -0.8 * responder + rng.normal(0, 0.4, n)
    responder = responder | (latent > 1.0)
    return DhiCohort(rng, responder, latent, dlogvol, -dlogvol + rng.normal(0, 0.05, n))


def outcomes(cohort: DhiCohort, ids: list[str] | pd.Series) -> pd.DataFrame:
    """Reference response and PFS (responders live ~3x longer; 80 % events), drawn from the cohort's stream."""
    n = len(cohort.responder)
    pfs = np.where(cohort.responder, 300.0, 100.0) * cohort.rng.exponential(1.0, n)
    return pd.DataFrame({"USUBJID": ids, "RESPONDER": cohort.responder.astype(int), "PFS_DAYS": pfs,
                         "PFS_EVENT": (cohort.rng.random(n) < 0.8).astype(int)})
