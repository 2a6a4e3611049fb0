"""Decomposition-ensemble Transformer over the per-time-point global feature trajectory.

Why not the usual decompositions: with three scans a moving average has a single lag, a Fourier
series a single non-constant mode and EMD cannot find one intrinsic mode function (it needs several
extrema). What *is* exact at T points on irregular scan days is the Newton divided-difference
expansion of the trajectory ``g(t)`` (features at study days ``t_0 < t_1 < t_2``):

- **level**: ``g(t_0)`` — the baseline state;
- **slope**: ``(g(t_{i+1}) − g(t_i)) / (t_{i+1} − t_i)`` for each interval — change per unit time on the
  real scan dates (one token set per interval, timed at the interval midpoint);
- **curvature** (full mode only): ``2 (s_1 − s_0) / (t_2 − t_0)`` — acceleration of the change.

These three components reconstruct the trajectory exactly (the interpolating polynomial), so nothing is
lost and nothing is invented. Within each component the features are split into groups (e.g. shape,
intensity, texture, volumetrics, DHI): each group becomes one token via its own linear tokenizer, so a
component's encoder attends across feature groups and time slots. Each component has its own small
Transformer encoder (:class:`models.transformer.Encoder`) with sinusoidal encodings of the real days;
the component embeddings are combined by a learned, input-dependent softmax ensemble inside the same
network, so one DP-SGD run spends the privacy budget once.

Shapes: ``globals_`` (B, T, G) standardized features, ``days`` (B, T) study days; output (B, D).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.exceptions import ModelConfigError
from models.transformer import Encoder

UNIT_DAYS = 30.0  # slopes per 30 days, curvature per (30 days)²: keeps standardized inputs O(1)


def divided_differences(values: Tensor, days: Tensor) -> list[tuple[str, Tensor, Tensor]]:
    """Level, slope and curvature components of a short trajectory.

    Parameters
    ----------
    values : Tensor, shape (B, T, G)
    days : Tensor, shape (B, T)
        Strictly increasing study days.

    Returns
    -------
    list of (name, component, times)
        ``component`` (B, S, G) with S slots and ``times`` (B, S) in days since baseline. ``level`` always;
        ``slope`` when T ≥ 2 (S = T − 1); ``curvature`` when T ≥ 3 (S = T − 2).
    """
    rel = days - days[:, :1]
    parts: list[tuple[str, Tensor, Tensor]] = [("level", values[:, :1], rel[:, :1])]
    if values.shape[1] >= 2:
        gaps = (days[:, 1:] - days[:, :-1]) / UNIT_DAYS
        slope = (values[:, 1:] - values[:, :-1]) / gaps.unsqueeze(-1)
        parts.append(("slope", slope, (rel[:, 1:] + rel[:, :-1]) / 2))
        if values.shape[1] >= 3:
            spans = (days[:, 2:] - days[:, :-2]) / UNIT_DAYS
            curvature = 2 * (slope[:, 1:] - slope[:, :-1]) / spans.unsqueeze(-1)
            parts.append(("curvature", curvature, rel[:, 1:-1]))
    return parts


class _ComponentEncoder(nn.Module):
    """Tokenizes one component per feature group and encodes it."""

    def __init__(self, groups: Sequence[Sequence[int]], d_model: int, n_heads: int, n_layers: int, dropout: float):
        super().__init__()
        self.groups = [list(g) for g in groups]
        self.tokenizers = nn.ModuleList(nn.Linear(len(g), d_model) for g in self.groups)
        self.encoder = Encoder(d_model, n_heads, n_layers, dropout)

    def forward(self, component: Tensor, times: Tensor) -> Tensor:
        """``component`` (B, S, G), ``times`` (B, S) → (B, d_model)."""
        pairs = zip(self.tokenizers, self.groups, strict=True)
        tokens = [tok(component[..., cols]) for tok, cols in pairs]  # each (B, S, d)
        stacked = torch.stack(tokens, dim=2).flatten(1, 2)  # (B, S * n_groups, d)
        token_days = times.repeat_interleave(len(self.groups), dim=1)
        encoded: Tensor = self.encoder(stacked, token_days)
        return encoded


class DecompositionTransformer(nn.Module):
    """Level/slope/curvature components, one small Transformer each, learned softmax ensemble.

    Parameters
    ----------
    global_features : int
        G, features per time point (global radiomics, volumetrics, DHI).
    n_timepoints : int
        T: 2 (early: level + slope) or 3 (full: level + two slopes + curvature).
    groups : sequence of sequence of int, optional
        Column indices of each feature group; default one group with every column.
    d_model, n_heads, n_layers : int
        Size of each component encoder.
    embed_dim : int
        D, size of the returned embedding.
    dropout : float
    """

    def __init__(
        self,
        global_features: int,
        n_timepoints: int,
        groups: Sequence[Sequence[int]] | None = None,
        d_model: int = 32,
        n_heads: int = 2,
        n_layers: int = 1,
        embed_dim: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        groups = [list(range(global_features))] if groups is None else [list(g) for g in groups]
        covered = sorted(i for g in groups for i in g)
        if not groups or any(not g for g in groups) or any(i < 0 or i >= global_features for i in covered):
            raise ModelConfigError(f"groups must be non-empty lists of column indices < {global_features}: {groups}")
        if n_timepoints < 1:
            raise ModelConfigError(f"n_timepoints must be ≥ 1, but was {n_timepoints}")
        self.n_timepoints = n_timepoints
        self.component_names = [name for name, _, _ in divided_differences(torch.zeros(1, n_timepoints, 1),
                                                                             torch.arange(n_timepoints)[None].float())]
        self.components = nn.ModuleList(
            _ComponentEncoder(groups, d_model, n_heads, n_layers, dropout) for _ in self.component_names
        )
        self.gate = nn.Linear(len(self.component_names) * d_model, len(self.component_names))
        self.project = nn.Linear(d_model, embed_dim)
        self.embed_dim = embed_dim

    def forward_with_weights(self, globals_: Tensor, days: Tensor) -> tuple[Tensor, Tensor]:
        """Embedding (B, D) and ensemble weights (B, n_components) from ``globals_`` (B, T, G), ``days`` (B, T)."""
        parts = divided_differences(globals_, days)
        encoded = [enc(component, times) for enc, (_, component, times) in zip(self.components, parts, strict=True)]
        stacked = torch.stack(encoded, dim=1)  # (B, n_components, d)
        weights = torch.softmax(self.gate(stacked.flatten(1)), dim=-1)
        mixed = (weights.unsqueeze(-1) * stacked).sum(1)
        return torch.nn.functional.gelu(self.project(mixed)), weights

    def forward(self, globals_: Tensor, days: Tensor) -> Tensor:
        """Embedding (B, D)."""
        return self.forward_with_weights(globals_, days)[0]
