"""Tumour kinetics under chemo-immunotherapy: the latent model behind every synthetic patient.

The tumour burden follows a tumour-growth-inhibition model (Stein et al., Clin Cancer Res 2011;
Claret et al., J Clin Oncol 2009): a treatment-sensitive part that decays at rate ``d`` and a resistant
part that grows at rate ``g``,

    R(t) = A(t) + exp(g t) - 1,      A(t) = exp(-d t)                       (t <= t1)
                                     A(t) = exp(-d t1 - d exp(eta) (t - t1)) (t > t1)

with ``t`` in days since the first dose and ``R(0) = 1``. ``eta`` changes the decay rate after the
T1 scan (late response or acquired resistance) and is *not* visible at T1: it is what keeps the
early prediction problem from being deterministic. Pseudoprogression adds a transient inflammatory
enlargement at T1 that is gone by T2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Standard deviation of the post-T1 change of the log decay rate (tuned so that the Bayes-optimal
#: early predictor of the quick and trial cohorts reaches an AUC inside 0.80-0.92).
SIGMA_ETA = 2.2
#: Per-lesion heterogeneity of the response: log size drift per 100 days.
SIGMA_LESION = 0.12
#: Relative target-lesion burden at or below which a patient responds (RECIST PR: -30 %).
PR_FACTOR = 0.70


@dataclass(frozen=True)
class Kinetics:
    """Latent kinetic parameters of one patient (rates per day)."""

    decay: float
    growth: float
    eta: float
    pseudo: bool
    pseudo_factor: float
    new_lesion_rate: float

    def burden(self, t: np.ndarray | float, t1: float, eta: np.ndarray | float | None = None) -> np.ndarray:
        """Relative tumour burden ``R(t)`` (1 at the first dose), without the pseudoprogression flare.

        Parameters
        ----------
        t : array of days since first dose (negative days mean before treatment: ``R = 1``).
        t1 : day of the T1 scan, after which ``eta`` modifies the decay.
        eta : overrides the patient's ``eta`` (used by the oracle's Monte Carlo).
        """
        eta_value = self.eta if eta is None else eta
        t_arr = np.maximum(np.asarray(t, dtype=float), 0.0)
        before = np.minimum(t_arr, t1)
        after = np.maximum(t_arr - t1, 0.0)
        sensitive = np.exp(-self.decay * before - self.decay * np.exp(eta_value) * after)
        resistant = np.expm1(self.growth * t_arr)
        return np.asarray(sensitive + resistant)

    def sensitive_fraction(self, t: float, t1: float) -> float:
        """Fraction of the baseline burden still made of treatment-sensitive cells at day ``t``."""
        t = max(t, 0.0)
        return float(np.exp(-self.decay * min(t, t1) - self.decay * np.exp(self.eta) * max(t - t1, 0.0)))


def draw_kinetics(rng: np.random.Generator, log_decay_mean: float, pseudo: bool) -> Kinetics:
    """Draw one patient's kinetics given the covariate-driven mean of the log decay rate."""
    log_decay = rng.normal(log_decay_mean, 0.8)
    if pseudo:
        # Pseudoprogression occurs in patients whose tumour is in fact responding to immunotherapy.
        log_decay = max(log_decay, np.log(0.007)) + 0.3
    growth = float(np.exp(rng.normal(np.log(0.0022), 0.55)))
    return Kinetics(
        decay=float(np.exp(log_decay)),
        growth=growth,
        eta=float(rng.normal(0.0, SIGMA_ETA)),
        pseudo=pseudo,
        pseudo_factor=float(rng.uniform(1.35, 1.70)) if pseudo else 1.0,
        new_lesion_rate=float(0.0016 * (growth / 0.0022) ** 2),
    )


def responder_from_burden(r_t2: np.ndarray, new_lesion_by_t2: np.ndarray) -> np.ndarray:
    """Truth of the primary label: target burden at T2 at least 30 % below baseline, no new lesion."""
    return np.asarray((r_t2 <= PR_FACTOR) & ~new_lesion_by_t2)


def oracle_probability(
    kin: Kinetics,
    t1: float,
    t2_mean: float,
    lesion_drifts: np.ndarray,
    lesion_sizes: np.ndarray,
    new_lesion_by_t1: bool,
    rng: np.random.Generator,
    draws: int = 400,
) -> float:
    """Bayes-optimal probability of response given everything the generator has fixed by T1.

    What is fixed by T1: covariates (through ``kin.decay``), ``decay``, ``growth``, per-lesion drifts,
    the pseudoprogression flare and any new lesion seen at T1. What is not: ``eta``, a new lesion
    between T1 and T2, and the exact T2 day. Those are integrated out by Monte Carlo.
    """
    if new_lesion_by_t1 and not kin.pseudo:
        return 0.0
    eta = rng.normal(0.0, SIGMA_ETA, size=draws)
    t2 = t2_mean + rng.integers(-5, 6, size=draws)
    burden = kin.burden(t2, t1, eta=eta)
    drift = np.exp(np.outer(t2 / 100.0, lesion_drifts))  # (draws, lesions)
    relative_sld = burden * (drift @ lesion_sizes) / lesion_sizes.sum()
    new_after_t1 = rng.random(draws) < -np.expm1(-kin.new_lesion_rate * (t2 - t1))
    return float(responder_from_burden(relative_sld, new_after_t1).mean())
