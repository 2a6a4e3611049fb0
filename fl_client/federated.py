"""What a site does in a federated round, as plain functions (the ClientApp only unpacks and packs).

One round at a site (:func:`site_round`):

1. build the model (same seeded initialisation at every site) and, from round 2 on, load the global
   model: decrypt ``Σ n_i θ_i`` with the site's secret context and divide by ``Σ n_i``;
2. check the site's privacy budget for the round's planned DP-SGD steps *before* touching the data
   (:class:`privacy.exceptions.PrivacyBudgetExhausted`);
3. train locally through ``train_fn`` with a fresh Opacus ``PrivacyEngine`` (DP modes);
4. record the round in the site's ledger (ε cumulative, from the engine's own history);
5. scale the parameters by the example count, encrypt, and append what was sent to the site's audit log.

The data path is injected: ``SiteData`` holds one site's in-memory training set (any torch ``Dataset``);
``train_fn`` is the models helper's :func:`fl_client.train.fit` through :func:`fit_adapter`, or any
function with the :data:`TrainFn` signature.

After the last round a task's ``evaluate_fn`` scores the site's patients (rows kept at the site) and its
``split`` drives the encrypted pooled evaluation (:mod:`fl_client.pooled_evaluation`). The product task,
:func:`fusion_task`, trains the early and full networks in one DP-SGD run (:mod:`fl_client.two_mode`).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from privacy.accounting import AccountingInputs, SiteAccountant, append_ledger, read_ledger
from privacy.audit import AuditLog
from privacy.ckks import CkksParameters, KeyInfo, ParameterLayout
from privacy.exceptions import ContextMismatchError, PrivacyBudgetExhausted
from privacy.update import GlobalModel, ModelUpdate, UpdateMeta, decode_vector, encode_vector

if TYPE_CHECKING:
    import tenseal as ts

log = logging.getLogger(__name__)

MODES = ("plain", "dp", "he", "dp-he")
#: where the pooled evaluation's cut-offs come from: ``protocol`` (a fixed score, no patient data: nothing is
#: released for it) or ``training-histograms`` (Youden on the sites' summed training-patient score histograms,
#: which every site decrypts: a release outside the DP accountant, for the non-DP baselines)
CUTOFF_SOURCES = ("protocol", "training-histograms")
#: ``train_fn(model, dataset, privacy_engine_or_None, generator) -> (trained_model, mean_loss)``.
TrainFn = Callable[[nn.Module, Any, Any, torch.Generator], tuple[nn.Module, float]]


@dataclass(frozen=True)
class ClientSettings:
    """Run-wide knobs a site needs (from the run config; see ``configs/federation.yaml``)."""

    mode: str = "dp-he"
    local_epochs: int = 2
    batch_size: int = 16
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    epsilon_budget: float = 8.0
    accountant: str = "prv"
    seed: int = 7
    secure_noise: bool = True
    cutoff_source: str = "protocol"
    heldout_share: float = 0.25

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, but was {self.mode!r}.")
        if self.cutoff_source not in CUTOFF_SOURCES:
            raise ValueError(f"cutoff-source must be one of {CUTOFF_SOURCES}, but was {self.cutoff_source!r}.")
        if not 0.0 < self.heldout_share < 1.0:
            raise ValueError(f"heldout-share must be in (0, 1), but was {self.heldout_share!r}; e.g. 0.25.")

    @property
    def dp(self) -> bool:
        return self.mode in ("dp", "dp-he")

    @property
    def encoding(self) -> str:
        return "ckks" if self.mode in ("he", "dp-he") else "plain"

    def planned_steps(self, n_examples: int) -> tuple[int, float]:
        """DP-SGD steps and Poisson sample rate of one round (Opacus: ``q = 1 / len(loader)``)."""
        batches = max(1, math.ceil(n_examples / self.batch_size))
        return self.local_epochs * batches, 1.0 / batches


@dataclass
class SiteKeys:
    """A site's key material: the secret context (CKKS modes) and the ceremony's public facts."""

    info: KeyInfo
    context: ts.Context | None = None

    @property
    def params(self) -> CkksParameters:
        return self.info.params


@dataclass
class SiteData:
    """One site's training data, in memory, never leaving the site."""

    site: str
    train: Any
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_examples(self) -> int:
        return len(self.train)


def seeded_generator(seed: int, site: str, purpose: str, round_: int) -> torch.Generator:
    """A torch generator seeded from ``(seed, site, purpose, round)`` (STYLE: injected randomness)."""
    digest = hashlib.sha256(f"{seed}:{site}:{purpose}:{round_}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def model_vector(model: nn.Module) -> tuple[ParameterLayout, np.ndarray]:
    """Layout and flat float64 vector of a module's trainable parameters (in ``named_parameters`` order)."""
    arrays = {name: p.detach().cpu().double().numpy() for name, p in model.named_parameters() if p.requires_grad}
    layout = ParameterLayout.from_arrays(arrays)
    return layout, layout.flatten(arrays)


def load_vector(model: nn.Module, layout: ParameterLayout, vector: np.ndarray) -> None:
    """Copy a flat vector into the module's trainable parameters (inverse of :func:`model_vector`)."""
    arrays = layout.unflatten(vector)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in arrays:
                param.copy_(torch.as_tensor(arrays[name], dtype=param.dtype, device=param.device))


def apply_global_model(model: nn.Module, global_model: GlobalModel, keys: SiteKeys | None) -> None:
    """Decrypt (or decode) ``Σ n_i θ_i``, divide by ``Σ n_i`` and load the weighted mean into ``model``."""
    layout, _ = model_vector(model)
    if global_model.layout_digest != layout.digest or global_model.length != layout.size:
        raise ContextMismatchError(
            f"the global model's layout {global_model.layout_digest[:12]}… ({global_model.length} parameters) does "
            f"not match this site's model {layout.digest[:12]}… ({layout.size}); all sites must run the same model.")
    if keys is not None and global_model.key_id != keys.info.key_id:
        raise ContextMismatchError(f"the global model was made under key {global_model.key_id[:12]}…, this site holds "
                                   f"{keys.info.key_id[:12]}…; install the current KEYDIR/site/ from the PI.")
    if global_model.total_examples <= 0:
        raise ContextMismatchError(f"global model reports {global_model.total_examples} examples; refusing it.")
    context = keys.context if keys is not None else None
    summed = decode_vector(global_model.chunks, global_model.encoding, context, global_model.length)
    load_vector(model, layout, summed / global_model.total_examples)


def fit_adapter(train_config: Any, device: torch.device, loss_fn: Any = None, n_inputs: int | None = None) -> TrainFn:
    """Wrap :func:`fl_client.train.fit` (models helper) into a :data:`TrainFn` (optionally another loss/inputs)."""
    from fl_client.train import N_INPUTS, fit

    def train_fn(model: nn.Module, dataset: Any, engine: Any, generator: torch.Generator) -> tuple[nn.Module, float]:
        noise = engine.noise_multiplier if engine is not None else 1.0
        clip = engine.max_grad_norm if engine is not None else 1.0
        trained, losses = fit(model, dataset, train_config, device, generator, engine.engine if engine else None,
                              noise_multiplier=noise, max_grad_norm=clip, loss_fn=loss_fn,
                              n_inputs=n_inputs or N_INPUTS)
        return trained, float(losses[-1]) if losses else math.nan

    return train_fn


@dataclass
class SiteTask:
    """A site's model factory, data, local training and (optional) local evaluation.

    ``evaluate_fn(model, data, site_dir)`` scores the site's patients with the final model, writes
    ``site_dir/predictions.csv`` and returns site-level scalars. ``split`` — the USUBJIDs of the site's
    training and held-out test patients in that file — enables the encrypted pooled evaluation
    (:mod:`fl_client.pooled_evaluation`); without it the site only reports its scalars.
    """

    model_fn: Callable[[], nn.Module]
    data: SiteData
    train_fn: TrainFn
    evaluate_fn: Callable[[nn.Module, SiteData, Path], dict[str, float]] | None = None
    split: tuple[tuple[str, ...], tuple[str, ...]] | None = None


@dataclass
class DPRun:
    """A fresh Opacus engine for one round plus the DP knobs ``train_fn`` must pass to ``make_private``."""

    engine: Any
    noise_multiplier: float
    max_grad_norm: float


def _unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "_module", None)
    return inner if isinstance(inner, nn.Module) else model


def accounting_inputs(settings: ClientSettings, site_dir: Path, site: str, n: int) -> AccountingInputs:
    """What this site reports in the handshake for the server's budget plan (:mod:`fl_server.planning`).

    The mechanism of one round (:meth:`ClientSettings.planned_steps` on the site's ``n`` training patients), the
    site's budget, δ and accountant, and its ledger so far (``site_dir/privacy_ledger.csv``) — the same figures
    its own :meth:`privacy.accounting.SiteAccountant.check_round` composes before every round.
    """
    account = SiteAccountant.from_ledger(read_ledger(site_dir / "privacy_ledger.csv"), site, settings.epsilon_budget,
                                         settings.delta, settings.accountant)
    steps, rate = settings.planned_steps(n)
    return AccountingInputs(site=site, steps=steps, sample_rate=rate, noise_multiplier=settings.noise_multiplier,
                            delta=settings.delta, budget=settings.epsilon_budget, accountant=settings.accountant,
                            history=tuple(account.history), spent=account.epsilon)


def csprng_privacy_engine(accountant: str) -> Any:
    """An Opacus ``PrivacyEngine`` in secure mode whose noise and Poisson sampling are seeded from the OS CSPRNG.

    Opacus' own ``secure_mode=True`` needs ``torchcsprng``, which is not built for the pinned torch 2.13 (its
    last release targets torch 1.x). This engine keeps everything else secure mode does — the
    floating-point-attack-resistant Gaussian sampler (``_generate_noise(secure_mode=True)``: 2·n draws,
    Holohan & Braghin 2021), and no caller-supplied seed (a ``noise_generator`` passed to ``make_private`` is
    dropped) — and draws from generators seeded with 64 bits of ``secrets`` (``/dev/urandom``) at every
    ``make_private`` (once per round): one on the parameters' device for the noise, one on the CPU for the
    Poisson sampler. The generators themselves are torch's (MT19937 on CPU, Philox on CUDA), so this is a
    CSPRNG-*seeded* source, documented as such in docs/federation.md; runs are not reproducible by design.
    Tied to Opacus 1.6's ``PrivacyEngine`` internals (``secure_rng``, ``_prepare_data_loader``), which the
    pinned version fixes.
    """
    import secrets
    import warnings

    from opacus import PrivacyEngine

    class CsprngSeededPrivacyEngine(PrivacyEngine):  # type: ignore[misc]
        def __init__(self) -> None:
            with warnings.catch_warnings():  # "Secure RNG turned off": it is turned on just below
                warnings.simplefilter("ignore", UserWarning)
                super().__init__(accountant=accountant, secure_mode=False)
            self.secure_mode = True
            self._sampler_rng: torch.Generator | None = None

        def make_private(self, *, module: nn.Module, noise_generator: Any = None, **kwargs: Any) -> Any:
            device = next(module.parameters()).device
            self.secure_rng = torch.Generator(device=device).manual_seed(secrets.randbits(63))
            self._sampler_rng = torch.Generator().manual_seed(secrets.randbits(63))
            return super().make_private(module=module, **kwargs)

        def _prepare_data_loader(self, data_loader: Any, **kwargs: Any) -> Any:
            noise_rng, self.secure_rng = self.secure_rng, self._sampler_rng or self.secure_rng  # sampler: CPU
            try:
                return super()._prepare_data_loader(data_loader, **kwargs)
            finally:
                self.secure_rng = noise_rng

    return CsprngSeededPrivacyEngine()


def _round_privacy(settings: ClientSettings, site_dir: Path, site: str, n: int) -> tuple[SiteAccountant, DPRun]:
    from opacus import PrivacyEngine

    ledger = read_ledger(site_dir / "privacy_ledger.csv")
    account = SiteAccountant.from_ledger(ledger, site, settings.epsilon_budget, settings.delta, settings.accountant)
    steps, rate = settings.planned_steps(n)
    account.check_round(steps, rate, settings.noise_multiplier)
    engine = csprng_privacy_engine(settings.accountant) if settings.secure_noise else \
        PrivacyEngine(accountant=settings.accountant)  # seeded noise: reproducible benchmarks and tests only
    return account, DPRun(engine, settings.noise_multiplier, settings.max_grad_norm)


def site_round(
    round_: int,
    model_fn: Callable[[], nn.Module],
    data: SiteData,
    global_model: GlobalModel | None,
    settings: ClientSettings,
    keys: SiteKeys | None,
    site_dir: Path,
    train_fn: TrainFn,
) -> ModelUpdate:
    """Run one federated round at a site and return the (encrypted) update to send.

    Parameters
    ----------
    round_ : int
        Round number (1-based); the global model, when given, is the aggregate of ``round_ - 1``.
    model_fn : callable
        Builds the network; must be deterministic (same initial weights at every site).
    data : SiteData
        The site's training data.
    global_model : GlobalModel or None
        The server's aggregate of the previous round (``None`` in round 1).
    settings : ClientSettings
    keys : SiteKeys or None
        Required for the ``he``/``dp-he`` modes.
    site_dir : Path
        Site-local state: ``privacy_ledger.csv``, ``federation_audit.jsonl``.
    train_fn : TrainFn
        Local training.
    """
    if settings.encoding == "ckks" and (keys is None or keys.context is None):  # before any privacy is spent
        raise ContextMismatchError(f"mode {settings.mode!r} needs the site's secret context; pass --keys KEYDIR.")
    with torch.random.fork_rng(devices=[]):  # identical initial weights at every site, global RNG untouched
        torch.manual_seed(settings.seed)
        model = model_fn()
    if global_model is not None:
        apply_global_model(model, global_model, keys)
    account, dp_run = _round_privacy(settings, site_dir, data.site, data.n_examples) if settings.dp else (None, None)
    generator = seeded_generator(settings.seed, data.site, "train", round_)
    trained, loss = train_fn(model, data.train, dp_run, generator)
    layout, vector = model_vector(_unwrap(trained))
    meta_privacy: dict[str, Any] = {}
    if account is not None and dp_run is not None:
        history = dp_run.engine.accountant.history
        sigma, rate = history[-1][0], history[-1][1]
        steps = sum(int(entry[2]) for entry in history)
        row = account.record_round(round_, steps, rate, sigma)
        append_ledger(site_dir / "privacy_ledger.csv", [row])
        if row.epsilon > settings.epsilon_budget:  # train_fn ran more steps than planned: spent, but never sent
            raise PrivacyBudgetExhausted(data.site, row.epsilon, settings.epsilon_budget, settings.delta)
        meta_privacy = {"steps": row.steps, "sample_rate": row.sample_rate, "noise_multiplier": row.noise_multiplier,
                        "delta": row.delta, "epsilon": row.epsilon, "accountant": row.accountant}
    params = keys.params if keys is not None else CkksParameters()
    chunks = encode_vector(vector * data.n_examples, settings.encoding, keys.context if keys else None, params)
    meta = UpdateMeta(site=data.site, round=round_, num_examples=data.n_examples, layout_digest=layout.digest,
                      length=layout.size, key_id=keys.info.key_id if keys else "none", encoding=settings.encoding,
                      **meta_privacy)  # the training loss is computed on private data without noise: it stays here
    update = ModelUpdate(meta, chunks)
    _audit_sent(site_dir, update, global_model, loss)
    return update


def _audit_sent(site_dir: Path, update: ModelUpdate, received: GlobalModel | None, loss: float) -> None:
    digest = hashlib.sha256(b"".join(update.chunks)).hexdigest()
    details: dict[str, Any] = {"round": update.meta.round, "bytes_sent": update.nbytes, "sha256_sent": digest,
                               "num_examples": update.meta.num_examples, "epsilon": update.meta.epsilon,
                               "encoding": update.meta.encoding,
                               "local_train_loss": loss if math.isfinite(loss) else None}
    if received is not None:
        details.update(bytes_received=received.nbytes,
                       sha256_received=hashlib.sha256(b"".join(received.chunks)).hexdigest())
    AuditLog(site_dir / "federation_audit.jsonl").append(
        "fl.round.update_sent", why="federated training round (only encrypted, DP-noised parameters leave the site)",
        who=f"site:{update.meta.site}", details=details)


def write_site_predictions(path: Path, rows: list[str], split: bool = False) -> None:
    """Write ``predictions.csv`` rows (``USUBJID,MODE,SCORE,LABEL,PFS_DAYS,PFS_EVENT``) atomically at the site.

    ``split``: the rows end with a ``SPLIT`` field (``train``/``test``, :mod:`evaluation.metrics`), so the
    report judges the model on the held-out patients only.
    """
    from evaluation.atomic import write_text_atomic

    header = "USUBJID,MODE,SCORE,LABEL,PFS_DAYS,PFS_EVENT" + (",SPLIT" if split else "")
    text = header + "\n" + "\n".join(rows) + "\n"
    write_text_atomic(path, lambda stream: stream.write(text))


def per_sample_two_mode_loss(outputs: tuple[Any, Any], batch: list[torch.Tensor], weights: Any) -> torch.Tensor:
    """The DP runs' loss: ``Σ_i ℓ_i / B`` over the batch's patients, each ``ℓ_i`` depending on patient ``i`` only.

    Opacus' per-sample clipping bounds a patient's influence only when the loss decomposes over patients (its
    ``loss_reduction="mean"`` undoes the ``1 / B``). :func:`fl_client.two_mode.two_mode_loss` does not: its Cox
    partial likelihood couples every patient of the batch through the risk sets, and its masked BCE divides by the
    number of labelled patients in the batch. Here, per mode: responder BCE where labelled (a NaN label adds 0)
    plus pseudoprogression BCE where known, weighted as in ``loss_weights``; the survival (Cox) term has weight 0
    (no per-sample survival surrogate is trained: the risk head stays at its initialisation in DP runs and its
    output is not used by the evaluation). ``B`` is the batch's length (a Poisson batch may be empty: loss 0).
    """
    from fl_client.train import N_INPUTS
    from fl_client.two_mode import PER_MODE

    total = torch.zeros((), device=batch[0].device)
    size = max(1, int(batch[0].shape[0]))
    for out, part in zip(outputs, (batch[:PER_MODE], batch[PER_MODE:2 * PER_MODE]), strict=True):
        responder, _, _, pseudo, pseudo_mask = part[N_INPUTS:]
        labelled = ~torch.isnan(responder)
        response = nn.functional.binary_cross_entropy_with_logits(
            out.response.float(), torch.where(labelled, responder, torch.zeros_like(responder)), reduction="none")
        pseudo_term = nn.functional.binary_cross_entropy_with_logits(
            out.pseudo.float(), torch.nan_to_num(pseudo.float()), reduction="none")
        total = total + (weights.response * (response * labelled).sum()
                         + weights.pseudo * (pseudo_term * pseudo_mask.bool()).sum()) / size
    return total


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fusion_task(site: str, site_input: Path | None, settings: ClientSettings) -> SiteTask:
    """The product task: early (T0 + T1) and full (T0–T2) fusion networks on the site's ``model_inputs.pt``.

    Both modes train together in one DP-SGD run per round (:class:`fl_client.two_mode.EarlyFullNet`: the
    privacy budget is spent once per round). Standardisation is fitted per mode on the site's own training
    patients (nothing pooled); a seeded patient split keeps a local test set (``heldout-share``, default 25 %).
    After the last round every patient of the site is scored in both modes and the rows stay at the site
    (``site_dir/predictions.csv``, the :mod:`evaluation.metrics` layout: a mode's rows for the patients with
    that mode's scans, ``LABEL`` each row's own task label, empty where undefined, ``SPLIT`` train/test);
    only ``n``/``n_test`` and the encrypted pooled-evaluation vectors (:mod:`fl_client.pooled_evaluation`)
    go back.
    """
    from evaluation.protocol import configs_dir
    from fl_client.train import Standardizer, assert_no_label_leakage, load_site_inputs, predict, to_dataset
    from fl_client.two_mode import MODES as TWO_MODES
    from fl_client.two_mode import TWO_MODE_INPUTS, EarlyFullNet, two_mode_dataset, two_mode_loss, unlabelled_full
    from models.config import InputDims, build_model, load_model_config

    if site_input is None:
        raise FileNotFoundError(f"site {site}: no site-input given; point it at the site's model_inputs.pt.")
    path = site_input / "model_inputs.pt" if site_input.is_dir() else site_input
    inputs = load_site_inputs(path)
    config = load_model_config(configs_dir() / "model.yaml")
    order = torch.randperm(len(inputs.records), generator=seeded_generator(settings.seed, site, "split", 0)).tolist()
    cut = max(1, round((1.0 - settings.heldout_share) * len(order)))
    train_records = [inputs.records[i] for i in order[:cut]]
    test_records = [inputs.records[i] for i in order[cut:]] or train_records
    assert_no_label_leakage(inputs.records, "early")
    assert_no_label_leakage([r for r in inputs.records if math.isfinite(r.responder["full"])], "full")
    unlabelled_full(train_records)
    scalers = {mode: Standardizer.fit(train_records, mode) for mode in TWO_MODES}
    v_max = config.model.v_max
    first = inputs.records[0]
    dims = InputDims.from_group_names(int(first.graph.x.shape[-1]), inputs.global_groups, int(first.clinical.shape[0]))
    train_settings = config.train.model_copy(update={"epochs": settings.local_epochs,
                                                     "batch_size": settings.batch_size})
    loss = per_sample_two_mode_loss if settings.dp else two_mode_loss  # DP: decomposable over patients
    device = _device()

    def evaluate(model: nn.Module, data: SiteData, site_dir: Path) -> dict[str, float]:
        from fl_client.train import MODE_TIMEPOINTS

        net = model.to(device)
        scores = {mode: predict(getattr(net, mode), to_dataset(inputs.records, mode, v_max, scalers[mode]), device)
                  ["response"] for mode in TWO_MODES}
        # every patient of the site scored by the final global model in each mode that can score it (the
        # evaluation layout, as the centralized run writes it): a mode's row only where the patient has that
        # mode's scans (no T2 scan: no full-mode row), LABEL the row's own task label (early: response; full:
        # durable benefit; empty where undefined). The rows stay at the site. SPLIT marks the patients that
        # trained the model, so the report judges it on the held-out ones only
        trained = {r.usubjid for r in train_records}
        label = {mode: [str(int(r.responder[mode])) if math.isfinite(r.responder[mode]) else ""
                        for r in inputs.records] for mode in TWO_MODES}
        rows = [f"{r.usubjid},{mode},{float(scores[mode][i]):.6f},{label[mode][i]},{r.pfs_days:g},"
                f"{int(r.pfs_event)},{'train' if r.usubjid in trained else 'test'}"
                for mode in TWO_MODES for i, r in enumerate(inputs.records) if r.n_scans >= MODE_TIMEPOINTS[mode]]
        write_site_predictions(site_dir / "predictions.csv", rows, split=True)
        return {"n_test": float(len(test_records))}

    def model_fn() -> nn.Module:
        kind = config.model.kind  # the product model (configs/model.yaml model.kind)
        return EarlyFullNet(build_model(kind, 2, dims, config.model), build_model(kind, 3, dims, config.model))

    split = (tuple(r.usubjid for r in train_records), tuple(r.usubjid for r in test_records))
    return SiteTask(model_fn, SiteData(site, two_mode_dataset(train_records, v_max, scalers)),
                    fit_adapter(train_settings, device, loss, TWO_MODE_INPUTS), evaluate, split)
