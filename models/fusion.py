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

Wide & deep (Cheng et al., DLRS 2016): the ``wide`` branch is a linear map of the decomposition's
components — level ``g(t0)``, the slope per interval (per 30 days) and, in full mode, the curvature
(:func:`models.decomposition.divided_differences`) of the global features and of the sub-region-pooled
node features — and of the clinical covariates, straight to the three heads, *added* to the deep heads'
outputs. Its response output alone is a logistic regression on level, change per day and covariates (the
baseline family the deep model has to beat); the deep heads start at zero (their weights and biases are
initialised to 0), so training starts from that linear model and the deep branches add to it only what
lowers the loss — under weight decay, a deep contribution that does not pay for itself decays back
towards zero. Everything stays per sample (linear layers, no batch statistics), so Opacus per-sample
gradients remain exact.

Mode: ``n_timepoints = 2`` is early mode (T0 + T1), ``3`` full mode (T0–T2). The caller slices its
inputs with :func:`models.batching.densify` so later scans never reach the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from models.decomposition import DecompositionTransformer, divided_differences
from models.exceptions import ModelConfigError, ModelInputError
from models.stgcn import STGCN

BRANCHES = ("stgcn", "transformer", "clinical", "wide")
DEEP_BRANCHES = ("stgcn", "transformer", "clinical")


class HeadOutputs(NamedTuple):
    """Per-patient outputs, each of shape (B,)."""

    response: Tensor
    risk: Tensor
    pseudo: Tensor


class WidePath(nn.Module):
    """Linear (response, risk, pseudo) outputs from the trajectory's components and the clinical covariates.

    The trajectory is the global features (B, T, G) beside the node features pooled over each time
    point's valid sub-regions (B, T, F) — the plain mean read-out of the graph, so the linear model also
    sees every sub-region (the global features weight them by volume and summarise fewer columns).

    Parameters
    ----------
    global_features, clinical_features : int
        G and C.
    n_timepoints : int
        T; the input width is ``S · (G + F) + C`` with ``S = 1 + (T − 1) + max(T − 2, 0)`` slots (level,
        slopes, curvature) and C clinical columns.
    node_features : int
        F; 0 leaves the pooled node features out.
    columns : sequence of int, optional
        The global columns the wide path reads (default all G); the input width then counts these only.
    gain : float
        Constant factor on the linear outputs. Adam's step is invariant to the gradient's scale, so the
        gain multiplies the wide path's effective learning rate by ``gain`` without a second optimizer —
        Cheng et al. train the wide part with its own, faster optimizer for the same reason: a linear
        model over many weak inputs converges slowly at the deep part's learning rate. The weights start
        at 0 (the model starts at the base rate; AdamW's decay pulls unused weights back to 0).
    """

    def __init__(
        self, global_features: int, clinical_features: int, n_timepoints: int, gain: float = 1.0,
        node_features: int = 0, columns: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        slots = 1 + max(n_timepoints - 1, 0) + max(n_timepoints - 2, 0)
        self.columns = list(range(global_features)) if columns is None else [int(c) for c in columns]
        if any(c < 0 or c >= global_features for c in self.columns):
            raise ModelConfigError(f"wide columns must lie in [0, {global_features}), but were {self.columns}")
        self.node_features = node_features
        self.linear = nn.Linear(slots * (len(self.columns) + node_features) + clinical_features, 3)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.gain = float(gain)

    def forward(
        self, globals_: Tensor, days: Tensor, clinical: Tensor, x: Tensor | None = None,
        node_valid: Tensor | None = None,
    ) -> Tensor:
        """``globals_`` (B, T, G), ``days`` (B, T), ``clinical`` (B, C), and with ``node_features`` > 0 ``x``
        (B, T, V, F) and ``node_valid`` (B, T, V) → (B, 3) linear head outputs."""
        trajectory = globals_[..., self.columns]
        if self.node_features:
            if x is None or node_valid is None:
                raise ModelInputError("this wide path pools node features: pass x and node_valid")
            valid = node_valid.unsqueeze(-1)
            pooled = (x * valid).sum(2) / valid.sum(2).clamp(min=1.0)  # (B, T, F): mean over valid sub-regions
            trajectory = torch.cat([trajectory, pooled], dim=-1)  # the chosen global columns, then the pool
        components = [component.flatten(1) for _, component, _ in divided_differences(trajectory, days)]
        out: Tensor = self.linear(torch.cat([*components, clinical], dim=-1)) * self.gain
        return out


class FusionNet(nn.Module):
    """Multi-branch, multi-task network.

    Parameters
    ----------
    node_features, global_features, clinical_features : int
        F (per sub-region), G (per time point), C (per patient).
    n_timepoints : int
        2 (early mode) or 3 (full mode).
    branches : sequence of str
        Subset of :data:`BRANCHES`; default all four (three deep branches and the linear ``wide`` path).
    groups : sequence of sequence of int, optional
        Feature groups of the global features (see :class:`DecompositionTransformer`).
    stgcn_channels : tuple of int
    d_model, embed_dim, hidden : int
    dropout : float
    wide_gain : float
        See :class:`WidePath`.
    deep_gain : float
        Constant factor on the deep heads' outputs when the wide path is present (ignored without it, so
        the single-branch baselines train as before); below 1 it slows what the deep part can add per Adam
        step (the counterpart of ``wide_gain``), a brake against the deep branches fitting the residual noise.
    wide_columns : sequence of int, optional
        Global columns of the wide path (default all).
    wide_nodes : bool
        Whether the wide path also reads the node features pooled over the valid sub-regions.
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
        wide_gain: float = 1.0,
        deep_gain: float = 1.0,
        wide_columns: Sequence[int] | None = None,
        wide_nodes: bool = True,
    ) -> None:
        super().__init__()
        unknown = set(branches) - set(BRANCHES)
        if unknown or not branches:
            raise ModelConfigError(f"branches must be a non-empty subset of {BRANCHES}, but was {tuple(branches)}")
        self.branches = tuple(b for b in BRANCHES if b in branches)
        self.n_timepoints = n_timepoints
        self.deep_gain = float(deep_gain) if "wide" in branches else 1.0  # a brake only beside the wide path
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
        self.wide: WidePath | None = None
        if "wide" in branches:
            self.wide = WidePath(global_features, clinical_features, n_timepoints, wide_gain,
                                 node_features if wide_nodes else 0, wide_columns)
        self.trunk: nn.Module | None = None
        self.head_response: nn.Linear | None = None
        self.head_risk: nn.Linear | None = None
        self.head_pseudo: nn.Linear | None = None
        if width:
            self.trunk = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout))
            self.head_response, self.head_risk, self.head_pseudo = (nn.Linear(hidden, 1) for _ in range(3))
            if self.wide is not None:  # wide & deep: start from the linear model, the deep part must earn its keep
                for head in (self.head_response, self.head_risk, self.head_pseudo):
                    nn.init.zeros_(head.weight)
                    nn.init.zeros_(head.bias)

    def embed(
        self, x: Tensor, adjacency: Tensor, node_valid: Tensor, days: Tensor, globals_: Tensor, clinical: Tensor
    ) -> Tensor:
        """Concatenated deep-branch embeddings (B, width); width 0 for a wide-only model."""
        parts = []
        if self.stgcn is not None:
            parts.append(self.stgcn(x, adjacency, node_valid, days))
        if self.transformer is not None:
            parts.append(self.transformer(globals_, days))
        if self.clinical is not None:
            parts.append(self.clinical(clinical))
        return torch.cat(parts, dim=-1) if parts else globals_.new_zeros(globals_.shape[0], 0)

    def forward(
        self, x: Tensor, adjacency: Tensor, node_valid: Tensor, days: Tensor, globals_: Tensor, clinical: Tensor
    ) -> HeadOutputs:
        """Heads from ``x`` (B, T, V, F), ``adjacency`` (B, K, V, V), ``node_valid`` (B, T, V), ``days`` (B, T),
        ``globals_`` (B, T, G) and ``clinical`` (B, C): deep heads plus the wide path, each (B,)."""
        outputs = globals_.new_zeros(globals_.shape[0], 3)
        if self.trunk is not None:
            h = self.trunk(self.embed(x, adjacency, node_valid, days, globals_, clinical))
            heads = (self.head_response, self.head_risk, self.head_pseudo)
            outputs = torch.cat([head(h) for head in heads if head is not None], dim=-1) * self.deep_gain
        if self.wide is not None:
            outputs = outputs + self.wide(globals_, days, clinical, x, node_valid)
        return HeadOutputs(response=outputs[:, 0], risk=outputs[:, 1], pseudo=outputs[:, 2])
