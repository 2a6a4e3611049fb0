"""Fusion of the ST-GCN branch, the decomposition-ensemble Transformer branch and clinical covariates,
with the three heads of the study.

Heads (all return one value per patient):

- ``response``: logit of responder vs non-responder (primary endpoint; early mode: confirmed
  objective response by the dynamic-iRECIST reference; full mode: durable benefit);
- ``risk``: log relative hazard for progression-free survival (trained with the Cox partial
  likelihood, :func:`models.losses.cox_partial_nll`);
- ``pseudo``: logit of the probability that an unconfirmed iUPD is pseudoprogression (trained only on
  patients with an unconfirmed iUPD, :func:`models.losses.masked_bce`).

The same class builds the single-branch baselines (``branches=("stgcn",)`` or ``("transformer",)``),
so "each branch alone" differs from the fused model by nothing but the missing inputs.

Mode: ``n_timepoints = 2`` is early mode (T0 + T1), ``3`` full mode (T0–T2). The caller slices its
inputs with :func:`models.batching.densify` so later scans never reach the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from models.decomposition import DecompositionTransformer
from models.exceptions import ModelConfigError
from models.stgcn import STGCN

BRANCHES = ("stgcn", "transformer", "clinical")


class HeadOutputs(NamedTuple):
    """Per-patient outputs, each of shape (B,)."""

    response: Tensor
    risk: Tensor
    pseudo: Tensor


class FusionNet(nn.Module):
    """Multi-branch, multi-task network.

    Parameters
    ----------
    node_features, global_features, clinical_features : int
        F (per sub-region), G (per time point), C (per patient).
    n_timepoints : int
        2 (early mode) or 3 (full mode).
    branches : sequence of str
        Subset of :data:`BRANCHES`; default all three.
    groups : sequence of sequence of int, optional
        Feature groups of the global features (see :class:`DecompositionTransformer`).
    stgcn_channels : tuple of int
    d_model, embed_dim, hidden : int
    dropout : float
    """

    def __init__(
        self,
        node_features: int,
        global_features: int,
        clinical_features: int,
        n_timepoints: int,
        branches: Sequence[str] = BRANCHES,
        groups: Sequence[Sequence[int]] | None = None,
        stgcn_channels: tuple[int, ...] = (32, 32, 64, 64),
        d_model: int = 32,
        embed_dim: int = 64,
        hidden: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        unknown = set(branches) - set(BRANCHES)
        if unknown or not branches:
            raise ModelConfigError(f"branches must be a non-empty subset of {BRANCHES}, but was {tuple(branches)}")
        self.branches = tuple(b for b in BRANCHES if b in branches)
        self.n_timepoints = n_timepoints
        self.stgcn: STGCN | None = None
        self.transformer: DecompositionTransformer | None = None
        self.clinical: nn.Module | None = None
        width = 0
        if "stgcn" in branches:
            self.stgcn = STGCN(node_features, n_timepoints, stgcn_channels, embed_dim, dropout)
            width += embed_dim
        if "transformer" in branches:
            self.transformer = DecompositionTransformer(
                global_features, n_timepoints, groups, d_model, embed_dim=embed_dim, dropout=dropout
            )
            width += embed_dim
        if "clinical" in branches:
            self.clinical = nn.Sequential(nn.Linear(clinical_features, embed_dim // 2), nn.GELU())
            width += embed_dim // 2
        self.trunk = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout))
        self.head_response = nn.Linear(hidden, 1)
        self.head_risk = nn.Linear(hidden, 1)
        self.head_pseudo = nn.Linear(hidden, 1)

    def embed(
        self, x: Tensor, adjacency: Tensor, node_valid: Tensor, days: Tensor, globals_: Tensor, clinical: Tensor
    ) -> Tensor:
        """Concatenated branch embeddings (B, width)."""
        parts = []
        if self.stgcn is not None:
            parts.append(self.stgcn(x, adjacency, node_valid, days))
        if self.transformer is not None:
            parts.append(self.transformer(globals_, days))
        if self.clinical is not None:
            parts.append(self.clinical(clinical))
        return torch.cat(parts, dim=-1)

    def forward(
        self, x: Tensor, adjacency: Tensor, node_valid: Tensor, days: Tensor, globals_: Tensor, clinical: Tensor
    ) -> HeadOutputs:
        """Heads from ``x`` (B, T, V, F), ``adjacency`` (B, K, V, V), ``node_valid`` (B, T, V), ``days`` (B, T),
        ``globals_`` (B, T, G) and ``clinical`` (B, C)."""
        h = self.trunk(self.embed(x, adjacency, node_valid, days, globals_, clinical))
        return HeadOutputs(
            response=self.head_response(h).squeeze(-1),
            risk=self.head_risk(h).squeeze(-1),
            pseudo=self.head_pseudo(h).squeeze(-1),
        )
