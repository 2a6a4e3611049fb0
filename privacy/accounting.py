"""Patient-level (ε, δ) accounting per site and the privacy ledger persisted with every run.

Each site trains with Opacus DP-SGD: every local optimizer step is a subsampled Gaussian mechanism
with sampling rate ``q = batch_size / n_patients`` and noise multiplier ``σ``. The cumulative privacy
loss over all rounds is computed by one of Opacus's maintained accountants (``rdp``: Mironov 2017 with
the conversion of Balle et al. 2020; ``prv``: Gopi et al. 2021, Opacus's default; ``gdp``: Dong et al.
2019, an asymptotic approximation), from the full history of ``(σ, q, steps)`` per round.

The ledger (``privacy_ledger.csv``) has one row per site and round with the columns of
:data:`LEDGER_COLUMNS`; ``epsilon`` is cumulative at ``delta``. Everything needed to recompute ε is on
the row, so anyone can check it with another implementation (the tests use Google's ``dp_accounting``).
A site refuses a round whose *projected* ε would exceed its budget (:class:`PrivacyBudgetExhausted`)
before it touches the data.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

from privacy.exceptions import PrivacyBudgetExhausted, PrivacyError

log = logging.getLogger(__name__)

ACCOUNTANTS = ("rdp", "prv", "gdp")
LEDGER_COLUMNS = ("site", "round", "steps", "sample_rate", "noise_multiplier", "delta", "epsilon", "accountant")


@dataclass(frozen=True)
class LedgerRow:
    """One site's privacy spend in one round; ``epsilon`` is cumulative over rounds ``1..round``."""

    site: str
    round: int
    steps: int
    sample_rate: float
    noise_multiplier: float
    delta: float
    epsilon: float
    accountant: str


def _check_mechanism(steps: int, sample_rate: float, noise_multiplier: float) -> None:
    if steps < 0:
        raise PrivacyError(f"steps must be >= 0, but was {steps!r}.")
    if not 0.0 < sample_rate <= 1.0:
        raise PrivacyError(f"sample_rate must be in (0, 1], but was {sample_rate!r} (batch size / patients).")
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise PrivacyError(f"noise_multiplier must be a positive finite number, but was {noise_multiplier!r}.")


def epsilon_of(history: Iterable[tuple[float, float, int]], delta: float, accountant: str) -> float:
    """Cumulative ε at ``delta`` of a history of ``(noise_multiplier, sample_rate, steps)`` entries.

    Parameters
    ----------
    history : iterable of (float, float, int)
        One entry per round, in Opacus's history format.
    delta : float
        Target δ (per patient), e.g. ``1e-5``.
    accountant : {"rdp", "prv", "gdp"}
        Which Opacus accountant composes the history.
    """
    from opacus.accountants import create_accountant

    if accountant not in ACCOUNTANTS:
        raise PrivacyError(f"accountant must be one of {ACCOUNTANTS}, but was {accountant!r}.")
    entries = [(float(s), float(q), int(n)) for s, q, n in history if int(n) > 0]
    if not entries:
        return 0.0
    entries = _merge_constant(entries) if accountant == "gdp" else _merge_repeats(entries)
    acc = create_accountant(mechanism=accountant)
    acc.history = entries
    with warnings.catch_warnings():
        # Opacus warns when the optimal RDP order is at the edge of its grid; the value is still an upper bound.
        warnings.simplefilter("ignore", UserWarning)
        # PRV at q = 1 (one batch per epoch) takes log(0) on a masked branch of np.where: harmless
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(acc.get_epsilon(delta=delta))


def _merge_repeats(entries: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """Merge rounds with the same (σ, q): composing k then m steps is composing k + m steps (exact, faster)."""
    merged: dict[tuple[float, float], int] = {}
    for sigma, q, n in entries:
        merged[(sigma, q)] = merged.get((sigma, q), 0) + n
    return [(sigma, q, n) for (sigma, q), n in merged.items()]


def _merge_constant(entries: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """GDP composes in closed form only at a constant (σ, q): merge the rounds into one entry."""
    if len({(s, q) for s, q, _ in entries}) > 1:
        raise PrivacyError(
            "the gdp accountant needs the same noise multiplier and sample rate in every round, but saw "
            f"{sorted({(s, q) for s, q, _ in entries})}; use accountant 'rdp' or 'prv' instead."
        )
    sigma, q, _ = entries[0]
    return [(sigma, q, sum(n for _, _, n in entries))]


class SiteAccountant:
    """A site's running privacy account over the rounds of one run.

    Parameters
    ----------
    site : str
        Site id (``S01``).
    budget : float
        Largest cumulative ε the site agreed to spend in this run.
    delta : float
        δ per patient; should be well below ``1 / n_patients``.
    accountant : {"rdp", "prv", "gdp"}
        Opacus accountant used for every figure in the ledger.
    """

    def __init__(self, site: str, budget: float, delta: float = 1e-5, accountant: str = "prv") -> None:
        if accountant not in ACCOUNTANTS:
            raise PrivacyError(f"accountant must be one of {ACCOUNTANTS}, but was {accountant!r}.")
        if not (math.isfinite(budget) and budget > 0):
            raise PrivacyError(f"privacy budget must be a positive finite epsilon, but was {budget!r}.")
        if not 0.0 < delta < 1.0:
            raise PrivacyError(f"delta must be in (0, 1), but was {delta!r}.")
        self.site, self.budget, self.delta, self.accountant = site, budget, delta, accountant
        self.history: list[tuple[float, float, int]] = []
        self.rows: list[LedgerRow] = []
        self._memo: dict[tuple[tuple[float, float, int], ...], float] = {}

    @classmethod
    def from_ledger(cls, rows: Iterable[LedgerRow], site: str, budget: float, delta: float = 1e-5,
                    accountant: str = "prv") -> SiteAccountant:
        """Rebuild the account from the site's earlier ledger rows (after a restart)."""
        acc = cls(site, budget, delta, accountant)
        for row in sorted((r for r in rows if r.site == site), key=lambda r: r.round):
            if row.accountant != accountant or row.delta != delta:
                raise PrivacyError(
                    f"ledger row of round {row.round} for {site} used accountant={row.accountant!r}, delta={row.delta}"
                    f" but this run is configured with {accountant!r}, {delta}; resume with the original settings."
                )
            acc.history.append((row.noise_multiplier, row.sample_rate, row.steps))
            acc.rows.append(row)
        return acc

    @property
    def epsilon(self) -> float:
        """ε spent so far."""
        return self.rows[-1].epsilon if self.rows else 0.0

    def projected_epsilon(self, steps: int, sample_rate: float, noise_multiplier: float) -> float:
        """ε after one more round of ``steps`` steps at ``(sample_rate, noise_multiplier)``."""
        _check_mechanism(steps, sample_rate, noise_multiplier)
        key = (*self.history, (noise_multiplier, sample_rate, steps))
        if key not in self._memo:  # check_round then record_round ask the same question: compute once
            self._memo[key] = epsilon_of(key, self.delta, self.accountant)
        return self._memo[key]

    def check_round(self, steps: int, sample_rate: float, noise_multiplier: float) -> float:
        """Return the projected ε, or raise :class:`PrivacyBudgetExhausted` if it exceeds the budget."""
        projected = self.projected_epsilon(steps, sample_rate, noise_multiplier)
        if projected > self.budget:
            raise PrivacyBudgetExhausted(self.site, projected, self.budget, self.delta)
        return projected

    def record_round(self, round_: int, steps: int, sample_rate: float, noise_multiplier: float) -> LedgerRow:
        """Add a finished round to the account and return its ledger row (ε cumulative).

        A round run again after a crash (``round_`` equal to the last recorded round) spent budget twice:
        its row is replaced by one whose ``steps`` add both attempts (same σ and q required), so the
        ledger still lets anyone recompute ε from its rows.
        """
        rerun = bool(self.rows) and round_ == self.rows[-1].round
        if self.rows and round_ < self.rows[-1].round:
            raise PrivacyError(f"round {round_} for {self.site} is before the last recorded {self.rows[-1].round}.")
        if rerun:
            last = self.rows[-1]
            if (last.noise_multiplier, last.sample_rate) != (noise_multiplier, sample_rate):
                raise PrivacyError(f"round {round_} for {self.site} was re-run with sigma={noise_multiplier}, "
                                   f"q={sample_rate} after a first attempt at sigma={last.noise_multiplier}, "
                                   f"q={last.sample_rate}; keep the mechanism fixed when resuming a run.")
        epsilon = self.projected_epsilon(steps, sample_rate, noise_multiplier)
        self.history.append((noise_multiplier, sample_rate, steps))
        if rerun:
            steps += self.rows.pop().steps
            log.warning("site %s: round %d was run again after an interruption; both attempts are charged",
                        self.site, round_)
        row = LedgerRow(self.site, round_, steps, sample_rate, noise_multiplier, self.delta, epsilon, self.accountant)
        self.rows.append(row)
        log.info("site %s round %d: epsilon=%.3f of budget %.3f (delta=%g, %s)",
                 self.site, round_, epsilon, self.budget, self.delta, self.accountant)
        return row


@dataclass(frozen=True)
class AccountingInputs:
    """What a site tells the server in the handshake so that the run can be planned within its budget.

    Nothing here is patient-level: the DP mechanism of one round (``steps`` Poisson-subsampled Gaussian steps at
    ``sample_rate`` and ``noise_multiplier``), the accounting convention (``delta``, ``accountant``), the site's
    budget and what it already spent (``history``: ``(σ, q, steps)`` of its earlier ledger rows, ``spent``: ε of
    the last one). The sample rate reveals the site's training-set size to within a batch, which FedAvg learns
    anyway from the example counts.
    """

    site: str
    steps: int
    sample_rate: float
    noise_multiplier: float
    delta: float
    budget: float
    accountant: str
    history: tuple[tuple[float, float, int], ...] = ()
    spent: float = 0.0

    def __post_init__(self) -> None:
        """Refuse inputs no accountant can compose (the server plans with them, so a bad one must name its field)."""
        if not (isinstance(self.site, str) and self.site):
            raise PrivacyError(f"site must be a non-empty site id, but was {self.site!r}.")
        _check_mechanism(self.steps, self.sample_rate, self.noise_multiplier)
        if not 0.0 < self.delta < 1.0:
            raise PrivacyError(f"delta must be in (0, 1), but was {self.delta!r}.")
        if not (math.isfinite(self.budget) and self.budget > 0):
            raise PrivacyError(f"budget must be a positive finite epsilon, but was {self.budget!r}.")
        if self.accountant not in ACCOUNTANTS:
            raise PrivacyError(f"accountant must be one of {ACCOUNTANTS}, but was {self.accountant!r}.")
        for i, (sigma, rate, steps) in enumerate(self.history):
            try:
                _check_mechanism(steps, rate, sigma)
            except PrivacyError as exc:
                raise PrivacyError(f"history entry {i + 1} (round {i + 1} of the site's ledger): {exc}") from None
        if not (math.isfinite(self.spent) and self.spent >= 0):
            raise PrivacyError(f"spent must be a finite epsilon >= 0, but was {self.spent!r}.")

    def to_record(self) -> dict[str, Any]:
        """Flat, Flower-``ConfigRecord``-ready mapping (the history as three lists)."""
        return {"site": self.site, "steps": self.steps, "sample_rate": self.sample_rate,
                "noise_multiplier": self.noise_multiplier, "delta": self.delta, "budget": self.budget,
                "accountant": self.accountant, "spent": self.spent,
                "history_sigma": [float(s) for s, _, _ in self.history],
                "history_rate": [float(q) for _, q, _ in self.history],
                "history_steps": [int(n) for _, _, n in self.history]}

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> AccountingInputs:
        """Inverse of :meth:`to_record`; raises :class:`PrivacyError` naming the missing or malformed field.

        Types are checked, not coerced: an int field must hold an int, a float field an int or a float (a Flower
        ``ConfigRecord`` keeps them apart), then :meth:`__post_init__` checks the values.
        """
        sigmas, rates, steps = (_numbers(record, name, kind) for name, kind in
                                (("history_sigma", float), ("history_rate", float), ("history_steps", int)))
        if not len(sigmas) == len(rates) == len(steps):
            raise _malformed("history", f"lists of unequal length {len(sigmas)}, {len(rates)}, {len(steps)}")
        fields_ = {"site": _text(record, "site"), "steps": int(_number(record, "steps", int)),
                   "sample_rate": _number(record, "sample_rate", float),
                   "noise_multiplier": _number(record, "noise_multiplier", float),
                   "delta": _number(record, "delta", float), "budget": _number(record, "budget", float),
                   "accountant": _text(record, "accountant"),
                   "spent": _number(record, "spent", float) if "spent" in record else 0.0}
        history = tuple((float(s), float(q), int(n)) for s, q, n in zip(sigmas, rates, steps, strict=True))
        try:
            return cls(**fields_, history=history)  # type: ignore[arg-type]
        except PrivacyError as exc:
            raise PrivacyError(f"malformed accounting inputs: {exc}") from None


def _malformed(name: str, problem: str) -> PrivacyError:
    return PrivacyError(f"malformed accounting inputs: {name} {problem}; the site runs another fedresponse version.")


def _typed(name: str, value: object, kind: type) -> float:
    """``value`` as an int (``kind`` int) or a float; bool, text and other types are refused, not coerced."""
    allowed = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise _malformed(name, f"must be {'an int' if kind is int else 'a number'}, but was {value!r}")
    return float(value) if kind is float else value  # type: ignore[return-value]


def _number(record: Mapping[str, object], name: str, kind: type) -> float:
    if name not in record:
        raise _malformed(name, "is missing")
    return _typed(name, record[name], kind)


def _numbers(record: Mapping[str, object], name: str, kind: type) -> list[float]:
    """A list field of :meth:`AccountingInputs.to_record` (absent: empty), each element checked by :func:`_typed`."""
    value = record.get(name, [])
    if not isinstance(value, list | tuple):
        raise _malformed(name, f"must be a list, but was {value!r}")
    return [_typed(f"{name}[{i}]", v, kind) for i, v in enumerate(value)]


def _text(record: Mapping[str, object], name: str) -> str:
    if name not in record:
        raise _malformed(name, "is missing")
    value = record[name]
    if not isinstance(value, str):
        raise _malformed(name, f"must be text, but was {value!r}")
    return value


def affordable_rounds(inputs: AccountingInputs, limit: int) -> int:
    """How many more rounds (at most ``limit``) the site can train without passing its budget.

    The largest ``k`` with ``ε(history + k rounds) <= budget``, composed by the site's own accountant
    (:func:`epsilon_of`, the computation behind :meth:`SiteAccountant.check_round`), found by bisection
    (ε grows with ``k``). A plan of ``k`` rounds is therefore never refused by the sites' own check.
    """
    if limit < 0:
        raise PrivacyError(f"limit must be >= 0 rounds, but was {limit!r}.")
    _check_mechanism(inputs.steps, inputs.sample_rate, inputs.noise_multiplier)
    history = list(inputs.history)

    def fits(k: int) -> bool:
        planned = history + [(inputs.noise_multiplier, inputs.sample_rate, inputs.steps)] * k
        return epsilon_of(planned, inputs.delta, inputs.accountant) <= inputs.budget

    if inputs.steps == 0:
        return limit
    low, high = 0, limit  # invariant: fits(low); the answer is in [low, high]
    if fits(high):
        return high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def read_ledger(path: Path) -> list[LedgerRow]:
    """Read a ledger CSV; a missing file is an empty ledger."""
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != LEDGER_COLUMNS:
            raise PrivacyError(f"{path} has columns {reader.fieldnames}, expected {list(LEDGER_COLUMNS)}.")
        types = {f.name: f.type for f in fields(LedgerRow)}
        casts = {"str": str, "int": int, "float": float}
        return [LedgerRow(**{k: casts[str(types[k])](v) for k, v in rec.items()}) for rec in reader]


def write_ledger(path: Path, rows: Iterable[LedgerRow]) -> None:
    """Write the whole ledger atomically (temp file + rename), sorted by round then site."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LEDGER_COLUMNS)
    for row in sorted(rows, key=lambda r: (r.round, r.site)):
        writer.writerow(astuple(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_ledger(path: Path, new_rows: Iterable[LedgerRow]) -> list[LedgerRow]:
    """Add rows to a ledger file, replacing any earlier row of the same (site, round); returns all rows."""
    merged = {(r.site, r.round): r for r in read_ledger(path)}
    merged.update({(r.site, r.round): r for r in new_rows})
    rows = list(merged.values())
    write_ledger(path, rows)
    return rows
