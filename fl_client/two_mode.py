"""Both study modes in one network, so a federated round trains them under one DP-SGD run.

The study reads two predictions per patient (DOMAIN.md): ``early`` from T0 + T1 and ``full`` from
T0–T2. Training them as two separate DP-SGD runs would spend the site's privacy budget twice per
round (each run looks at every patient). :class:`EarlyFullNet` holds an early and a full
:class:`models.fusion.FusionNet`; one Poisson-sampled batch carries each patient's tensors of both
modes (:func:`two_mode_dataset`), the loss is the sum of both modes' multitask losses
(:func:`two_mode_loss`; a NaN full-mode label drops out of the full responder term), and Opacus clips
the patient's joint gradient over both networks once: one mechanism, one ledger entry per round.

Per-sample gradients stay exact: neither network mixes samples (no BatchNorm), and each is used
once per forward pass (tested against one-at-a-time gradients in ``tests/fl_client/test_two_mode.py``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from fl_client.train import FIELDS, N_INPUTS, PatientRecord, Standardizer, multitask_loss, to_dataset
from models.config import LossWeightSettings

log = logging.getLogger(__name__)

MODES: tuple[str, str] = ("early", "full")
#: tensors per mode in a batch (inputs then labels, :data:`fl_client.train.FIELDS` order)
PER_MODE = len(FIELDS)
#: leading input tensors of a two-mode batch: the early inputs, then (after the early labels) the full ones
TWO_MODE_INPUTS = PER_MODE + N_INPUTS


class EarlyFullNet(nn.Module):
    """An early-mode and a full-mode network trained together.

    Parameters
    ----------
    early, full : nn.Module
        Networks with the :class:`models.fusion.FusionNet` forward signature, for 2 and 3 time points.

    Notes
    -----
    ``forward`` takes a two-mode batch's first :data:`TWO_MODE_INPUTS` tensors: the early inputs
    ``x (B, 2, V, F), adjacency, node_valid, days, globals_ (B, 2, G), clinical (B, C)``, the early labels
    (ignored), then the same six inputs for T0–T2. It returns ``(early_outputs, full_outputs)``.
    """

    def __init__(self, early: nn.Module, full: nn.Module) -> None:
        super().__init__()
        self.early = early
        self.full = full

    def forward(self, *tensors: Tensor) -> tuple[Any, Any]:
        if len(tensors) != TWO_MODE_INPUTS:
            raise ValueError(f"EarlyFullNet takes {TWO_MODE_INPUTS} tensors (early fields, then the full inputs), "
                             f"but got {len(tensors)}")
        return self.early(*tensors[:N_INPUTS]), self.full(*tensors[PER_MODE:PER_MODE + N_INPUTS])


def two_mode_dataset(records: list[PatientRecord], v_max: int, scalers: dict[str, Standardizer]) -> TensorDataset:
    """One row per patient holding both modes' tensors: the early fields, then the full fields.

    Parameters
    ----------
    records : list of PatientRecord
        Patients; the full-mode label may be NaN. A patient without a T2 scan (``n_scans == 2``) trains
        the early network only: its full-mode PFS event and pseudoprogression terms are masked as well.
    v_max : int
        Node padding of the graphs.
    scalers : dict
        ``early`` / ``full`` → :class:`fl_client.train.Standardizer` fitted on the training patients.

    Returns
    -------
    TensorDataset
        ``2 × len(FIELDS)`` tensors with first dimension ``len(records)``.
    """
    early = to_dataset(records, "early", v_max, scalers["early"])
    full = list(to_dataset(records, "full", v_max, scalers["full"]).tensors)
    no_t2 = torch.tensor([r.n_scans < 3 for r in records])
    if no_t2.any():  # no T2 scan: nothing for the full network to learn from this patient (its label is NaN)
        full[FIELDS.index("pfs_event")] = full[FIELDS.index("pfs_event")].masked_fill(no_t2, 0.0)
        full[FIELDS.index("pseudo_mask")] = full[FIELDS.index("pseudo_mask")] & ~no_t2
    return TensorDataset(*early.tensors, *full)


def two_mode_loss(outputs: tuple[Any, Any], batch: list[Tensor], weights: LossWeightSettings) -> Tensor:
    """Early multitask loss + full multitask loss (full responder term masked where its label is NaN)."""
    early_out, full_out = outputs
    return (multitask_loss(early_out, batch[:PER_MODE], weights)
            + multitask_loss(full_out, batch[PER_MODE:2 * PER_MODE], weights))


def mode_dataset(dataset: TensorDataset, mode: str) -> TensorDataset:
    """The single-mode part of a two-mode dataset (for :func:`fl_client.train.predict` on one network)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, but was {mode!r}")
    start = 0 if mode == "early" else PER_MODE
    return TensorDataset(*dataset.tensors[start:start + PER_MODE])


def unlabelled_full(records: list[PatientRecord]) -> int:
    """How many records have no full-mode label (they train the early model and the full PFS/pseudo heads)."""
    count = sum(1 for r in records if math.isnan(float(r.responder["full"])))
    if count:
        log.info("%d of %d training patients have no full-mode label: full responder term masked", count,
                 len(records))
    return count
