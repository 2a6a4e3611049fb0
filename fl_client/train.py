"""The local training step and loop, shared by centralized and federated training.

Plain functions with explicit arguments (model, data, optimizer, device, generator): no Flower, no
files. Privacy is layered on from outside: :func:`fit` accepts an Opacus ``PrivacyEngine`` and wraps the
model, optimizer and loader it builds (:func:`fl_client.dp_sgd.make_private`: per-sample-gradient engine,
fp32 clipping); :func:`train_epoch` works unchanged on the private objects. On CUDA the forward pass runs
under bf16 autocast; losses, and under DP the per-sample clipping, are computed in fp32.

Data contract: a :class:`PatientRecord` per patient (graph from :mod:`radiomics.graphs`, global
trajectory, clinical covariates, reference labels). :func:`to_dataset` turns records into a
``TensorDataset`` of fixed-shape tensors (graphs padded to ``v_max``), which both the plain
``DataLoader`` and Opacus' Poisson ``DPDataLoader`` batch without a custom collate.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from torch_geometric.data import Data

from models.batching import densify
from models.config import LossWeightSettings, TrainSettings
from models.exceptions import ModelInputError
from models.losses import cox_partial_nll, masked_bce

log = logging.getLogger(__name__)

Mode = Literal["early", "full"]
MODE_TIMEPOINTS: dict[str, int] = {"early": 2, "full": 3}
FIELDS = ("x", "adjacency", "node_valid", "days", "globals_", "clinical", "responder", "pfs_days", "pfs_event",
          "pseudo", "pseudo_mask")
N_INPUTS = 6  # the first six FIELDS are model inputs, the rest are labels
#: ``loss_fn(outputs, batch, weights) -> scalar loss`` (see :func:`multitask_loss`).
LossFn = Callable[[Any, list[Tensor], LossWeightSettings], Tensor]


class LabelLeakageError(ModelInputError):
    """A label was decided on or before the last scan its mode's inputs contain."""


@dataclass
class PatientRecord:
    """Everything the model sees or learns from for one patient (stays inside its site).

    Attributes
    ----------
    usubjid, site : str
    graph : Data
        ``x`` (T, V, F), ``edge_index`` (2, E), ``node_valid`` (T, V), ``days`` (T,), optional ``pos`` (V, 3).
    globals_ : Tensor, shape (T, G)
        Global radiomics, volumetrics and DHI per time point.
    clinical : Tensor, shape (C,)
        Encoded clinical covariates.
    responder : dict
        Mode → 0/1 label (``early``: confirmed objective response; ``full``: durable benefit).
    label_day : dict
        Mode → study day on which that label was decided (confirming assessment, or the durable-benefit
        landmark); used by :func:`assert_no_label_leakage`.
    pfs_days : float
    pfs_event : bool
    pseudo : float
        1/0 when the patient had an unconfirmed iUPD (pseudoprogression or not), NaN otherwise.
    recist_t1, recist_t2 : str or None
        RECIST 1.1 overall response at T1 and T2 (``CR``, ``PR``, ``SD``, ``PD``, ``NE``), for the baselines.
    n_scans : int
        Protocol scans present (3: T0–T2; 2: no T2 scan, the patient is in early mode only).
    """

    usubjid: str
    site: str
    graph: Data
    globals_: Tensor
    clinical: Tensor
    responder: dict[str, float]
    label_day: dict[str, float]
    pfs_days: float
    pfs_event: bool
    pseudo: float = math.nan
    recist_t1: str | None = None
    recist_t2: str | None = None
    n_scans: int = 3


@dataclass(frozen=True)
class Standardizer:
    """Per-feature mean and standard deviation fitted on training records only (no test-fold leakage)."""

    node: tuple[Tensor, Tensor]
    globals_: tuple[Tensor, Tensor]
    clinical: tuple[Tensor, Tensor]

    @staticmethod
    def fit(records: list[PatientRecord], mode: str) -> Standardizer:
        t = MODE_TIMEPOINTS[mode]
        nodes = torch.cat([r.graph.x[:t][r.graph.node_valid[:t].bool()] for r in records]).float()
        globals_ = torch.cat([r.globals_[:t] for r in records]).float()
        clinical = torch.stack([r.clinical for r in records]).float()

        def stats(values: Tensor) -> tuple[Tensor, Tensor]:
            return values.mean(0), values.std(0, unbiased=False).clamp(min=1e-6)

        return Standardizer(stats(nodes), stats(globals_), stats(clinical))


def assert_no_label_leakage(records: list[PatientRecord], mode: str) -> None:
    """Raise :class:`LabelLeakageError` when a label was decided at or before its mode's last input scan.

    Early mode sees T0 and T1, so its responder label must have been decided later (a response needs a
    confirming scan ≥ 28 days on; at this schedule that is T2 or a follow-up visit).
    """
    t = MODE_TIMEPOINTS[mode]
    for record in records:
        last_input = float(record.graph.days[t - 1])
        decided = record.label_day[mode]
        if not decided > last_input:
            raise LabelLeakageError(
                f"{record.usubjid}: the {mode}-mode label was decided on day {decided:g}, but the {mode} inputs "
                f"include a scan on day {last_input:g}; the label must come from a later assessment"
            )


def to_dataset(records: list[PatientRecord], mode: str, v_max: int, scaler: Standardizer) -> TensorDataset:
    """Fixed-shape tensors for ``records`` in ``mode`` (fields in :data:`FIELDS` order)."""
    if mode not in MODE_TIMEPOINTS:
        raise ModelInputError(f"mode must be one of {sorted(MODE_TIMEPOINTS)}, but was {mode!r}")
    if not records:
        raise ModelInputError("to_dataset needs at least one patient record, but got none")
    t = MODE_TIMEPOINTS[mode]
    dense = densify([r.graph for r in records], t, v_max)
    mean, std = scaler.node
    x = (dense.x - mean) / std * dense.node_valid.unsqueeze(-1)
    globals_ = (torch.stack([r.globals_[:t] for r in records]).float() - scaler.globals_[0]) / scaler.globals_[1]
    clinical = (torch.stack([r.clinical for r in records]).float() - scaler.clinical[0]) / scaler.clinical[1]
    pseudo = torch.tensor([r.pseudo for r in records], dtype=torch.float32)
    return TensorDataset(
        x,
        dense.adjacency,
        dense.node_valid,
        dense.days,
        globals_,
        clinical,
        torch.tensor([r.responder[mode] for r in records], dtype=torch.float32),
        torch.tensor([r.pfs_days for r in records], dtype=torch.float32),
        torch.tensor([float(r.pfs_event) for r in records], dtype=torch.float32),
        torch.nan_to_num(pseudo, nan=0.0),
        ~torch.isnan(pseudo),
    )


def multitask_loss(outputs: Any, batch: list[Tensor], weights: LossWeightSettings) -> Tensor:
    """Weighted sum of responder BCE, Cox partial NLL and masked pseudoprogression BCE (fp32).

    A NaN responder label (full mode: durable benefit unknown or decided by T2, see
    :mod:`fl_client.featurize`) drops out of the responder term; the patient still counts for PFS.
    """
    responder, pfs_days, pfs_event, pseudo, pseudo_mask = batch[N_INPUTS:]
    labelled = ~torch.isnan(responder)
    return (
        weights.response * masked_bce(outputs.response.float(), responder, labelled)
        + weights.risk * cox_partial_nll(outputs.risk.float(), pfs_days, pfs_event)
        + weights.pseudo * masked_bce(outputs.pseudo.float(), pseudo, pseudo_mask)
    )


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA, a no-op context elsewhere."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    weights: LossWeightSettings,
    loss_fn: LossFn | None = None,
    n_inputs: int = N_INPUTS,
) -> float:
    """One pass over ``loader``; returns the mean batch loss. Works on Opacus-wrapped objects unchanged.

    ``loss_fn(outputs, batch, weights)`` defaults to :func:`multitask_loss`; the first ``n_inputs`` tensors
    of a batch are the model's inputs (a two-mode model takes both modes' inputs, see :mod:`fl_client.two_mode`).
    """
    loss_fn = loss_fn or multitask_loss
    model.train()
    total, batches = 0.0, 0
    for raw in loader:
        batch = [tensor.to(device, non_blocking=True) for tensor in raw]
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            outputs = model(*batch[:n_inputs])
        loss = loss_fn(outputs, batch, weights)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
        batches += 1
    return total / max(batches, 1)


@torch.no_grad()
def predict(
    model: nn.Module, dataset: TensorDataset, device: torch.device, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Head outputs for every patient of ``dataset``, in order: ``response`` (probability), ``risk``, ``pseudo``."""
    model.eval()
    out: dict[str, list[Tensor]] = {"response": [], "risk": [], "pseudo": []}
    for raw in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        with autocast(device):
            outputs = model(*[tensor.to(device) for tensor in raw[:N_INPUTS]])
        out["response"].append(torch.sigmoid(outputs.response.float()).cpu())
        out["risk"].append(outputs.risk.float().cpu())
        out["pseudo"].append(torch.sigmoid(outputs.pseudo.float()).cpu())
    return {name: torch.cat(values).numpy() for name, values in out.items()}


def fit(
    model: nn.Module,
    dataset: TensorDataset,
    config: TrainSettings,
    device: torch.device,
    generator: torch.Generator,
    privacy_engine: Any | None = None,
    noise_multiplier: float = 1.0,
    max_grad_norm: float = 1.0,
    loss_fn: LossFn | None = None,
    n_inputs: int = N_INPUTS,
) -> tuple[nn.Module, list[float]]:
    """Train ``model`` on ``dataset``; optionally under DP-SGD with the given Opacus ``PrivacyEngine``.

    Parameters
    ----------
    model : nn.Module
        A :class:`models.fusion.FusionNet` (or any module with the same forward signature).
    dataset : TensorDataset
        From :func:`to_dataset`.
    config : TrainSettings
        ``configs/model.yaml`` section ``train``.
    device : torch.device
    generator : torch.Generator
        Drives shuffling (or Poisson sampling under DP); seeded by the caller.
    privacy_engine : opacus.PrivacyEngine, optional
        When given, ``make_private`` wraps model, optimizer and loader (Poisson sampling); the engine's
        accountant then holds the spent budget.
    noise_multiplier, max_grad_norm : float
        DP-SGD noise σ and per-sample clipping norm (used only with ``privacy_engine``).
    loss_fn, n_inputs : optional
        Loss over ``(outputs, batch, weights)`` and the number of leading input tensors per batch
        (defaults: :func:`multitask_loss`, :data:`N_INPUTS`); see :func:`train_epoch`.

    Returns
    -------
    (model, losses)
        The trained module (the Opacus wrapper when private; ``._module`` is the plain network) and
        the mean loss per epoch.
    """
    model.to(device)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, generator=generator, drop_last=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if privacy_engine is not None:
        from fl_client.dp_sgd import make_private  # Opacus loads only for a private fit

        # Opacus draws the noise on the parameters' device; derive a generator there from the caller's.
        noise_generator = torch.Generator(device=device).manual_seed(
            int(torch.randint(0, 2**62, (1,), generator=generator))
        )
        model, optimizer, loader = make_private(privacy_engine, model, optimizer, loader, device, noise_multiplier,
                                                max_grad_norm, noise_generator)
    losses = []
    for epoch in range(config.epochs):
        losses.append(train_epoch(model, loader, optimizer, device, config.loss_weights, loss_fn, n_inputs))
        log.debug("epoch %d: loss %.4f", epoch + 1, losses[-1])
    return model, losses


MODEL_INPUTS_FORMAT = "fedresponse.model-inputs/1"
_RECORD_TENSORS = ("x", "edge_index", "node_valid", "days")


@dataclass(frozen=True)
class SiteInputs:
    """One site's model inputs: records plus the names of the global and clinical columns."""

    site: str
    records: list[PatientRecord]
    global_names: list[str]
    global_groups: list[str]
    clinical_names: list[str]


def save_site_inputs(inputs: SiteInputs, path: Path) -> None:
    """Write ``model_inputs.pt`` (format :data:`MODEL_INPUTS_FORMAT`) atomically (temp file + rename)."""
    patients = []
    for r in inputs.records:
        item: dict[str, Any] = {key: getattr(r.graph, key) for key in _RECORD_TENSORS}
        if getattr(r.graph, "pos", None) is not None:
            item["pos"] = r.graph.pos
        item.update(usubjid=r.usubjid, globals=r.globals_, clinical=r.clinical, responder=r.responder,
                    label_day=r.label_day, pfs_days=float(r.pfs_days), pfs_event=bool(r.pfs_event),
                    pseudo=float(r.pseudo), recist_t1=r.recist_t1, recist_t2=r.recist_t2, n_scans=int(r.n_scans))
        patients.append(item)
    payload = {"format": MODEL_INPUTS_FORMAT, "site": inputs.site, "global_names": inputs.global_names,
               "global_groups": inputs.global_groups, "clinical_names": inputs.clinical_names, "patients": patients}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        torch.save(payload, handle)
        tmp = Path(handle.name)
    os.replace(tmp, path)


def load_site_inputs(path: Path) -> SiteInputs:
    """Read a ``model_inputs.pt`` written by :func:`save_site_inputs` (tensors and plain types only)."""
    try:
        payload = torch.load(path, weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise ModelInputError(f"cannot read model inputs {path}: {exc}; re-run the featurize stage") from exc
    if not isinstance(payload, dict) or payload.get("format") != MODEL_INPUTS_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ModelInputError(f"{path} is not a model-input file (format {found!r}, expected {MODEL_INPUTS_FORMAT!r})")
    records = []
    for item in payload["patients"]:
        graph = Data(**{key: item[key] for key in _RECORD_TENSORS}, num_nodes=int(item["x"].shape[1]))
        if "pos" in item:
            graph.pos = item["pos"]
        records.append(PatientRecord(
            usubjid=item["usubjid"], site=payload["site"], graph=graph, globals_=item["globals"],
            clinical=item["clinical"], responder=dict(item["responder"]), label_day=dict(item["label_day"]),
            pfs_days=item["pfs_days"], pfs_event=item["pfs_event"], pseudo=item["pseudo"], recist_t1=item["recist_t1"],
            recist_t2=item.get("recist_t2"), n_scans=int(item.get("n_scans", 3)),
        ))
    return SiteInputs(payload["site"], records, list(payload["global_names"]), list(payload["global_groups"]),
                      list(payload["clinical_names"]))
