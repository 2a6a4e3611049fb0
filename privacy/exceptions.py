"""Typed errors of the privacy layer (CKKS keys and packing, DP accounting).

Every message says what is wrong, the value seen and what to do about it.
"""

from __future__ import annotations


class PrivacyError(RuntimeError):
    """Base class of the errors raised by :mod:`privacy`."""


class KeyFileError(PrivacyError):
    """A CKKS key file is missing, unreadable, too widely readable, or holds the wrong kind of key."""


class SecretKeyPresentError(KeyFileError):
    """A context meant for the coordinating centre carries the secret key (it must never)."""


class InsecureParametersError(PrivacyError):
    """CKKS parameters below 128-bit security per the HE standard tables, or otherwise unusable."""


class PackingError(PrivacyError):
    """A parameter vector does not fit the agreed layout or the encodable range of the context."""


class ContextMismatchError(PrivacyError):
    """Ciphertexts or metadata were produced under a different key ceremony or parameter layout."""


class PrivacyBudgetExhausted(PrivacyError):  # noqa: N818 (name fixed by the project API, STYLE.md)
    """Training one more round would take a site past its configured (ε, δ) budget."""

    def __init__(self, site: str, epsilon_next: float, budget: float, delta: float) -> None:
        self.site = site
        self.epsilon_next = epsilon_next
        self.budget = budget
        self.delta = delta
        super().__init__(
            f"site {site}: the next round would spend epsilon={epsilon_next:.3f} at delta={delta:g}, "
            f"over the configured budget epsilon={budget:.3f}. Training stops here; to continue, the PI must "
            "raise the budget in the federation config (a documented protocol decision), or train with a "
            "larger noise multiplier / fewer local steps per round."
        )
