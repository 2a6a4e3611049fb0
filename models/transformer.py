"""A small pre-LayerNorm Transformer encoder whose attention is safe for per-sample gradients.

``nn.MultiheadAttention`` keeps its input projection as a bare parameter that Opacus has no
per-sample rule for (DOMAIN.md §9). Here the query/key/value and output projections are plain
``nn.Linear`` layers (Opacus computes their per-sample gradients exactly for inputs of any rank), and
the attention itself (:func:`torch.nn.functional.scaled_dot_product_attention`) has no parameters.
Every operation mixes tokens of one sample only, so per-sample gradients stay per patient.

Shapes: tokens ``(B, L, d_model)``; continuous times ``(B, L)`` in days.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional

from models.exceptions import ModelConfigError


def time_encoding(days: Tensor, d_model: int, max_period_days: float = 1000.0) -> Tensor:
    """Sinusoidal encoding of a continuous time (Vaswani et al. 2017, with real days as positions).

    Parameters
    ----------
    days : Tensor, shape (B, L)
        Time of each token in days (e.g. relative to baseline); fractional values allowed.
    d_model : int
        Even encoding size.
    max_period_days : float
        Longest wavelength; 1000 days covers the study's 2-year horizon without aliasing.

    Returns
    -------
    Tensor, shape (B, L, d_model)
    """
    half = d_model // 2
    freqs = torch.exp(-math.log(max_period_days) * torch.arange(half, device=days.device, dtype=days.dtype) / half)
    angles = days.unsqueeze(-1) * freqs
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class SelfAttention(nn.Module):
    """Multi-head self-attention built from ``nn.Linear`` (Opacus-compatible).

    Parameters
    ----------
    d_model : int
    n_heads : int
        Must divide ``d_model``.
    dropout : float
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ModelConfigError(f"n_heads={n_heads} must divide d_model={d_model}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens`` (B, L, d) → (B, L, d)."""
        b, length, d = tokens.shape
        q, k, v = self.qkv(tokens).view(b, length, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        attended = functional.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(attended.transpose(1, 2).reshape(b, length, d))


class EncoderBlock(nn.Module):
    """Pre-LN Transformer block: ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(),
            nn.Linear(mlp_ratio * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, tokens: Tensor) -> Tensor:
        tokens = tokens + self.attn(self.norm1(tokens))
        return tokens + self.mlp(self.norm2(tokens))


class Encoder(nn.Module):
    """A stack of :class:`EncoderBlock` with time encodings added to the input tokens.

    Parameters
    ----------
    d_model, n_heads, n_layers : int
    dropout : float
    """

    def __init__(self, d_model: int, n_heads: int, n_layers: int, dropout: float = 0.1) -> None:
        super().__init__()
        if d_model % 2 != 0:
            raise ModelConfigError(f"d_model must be even for the sinusoidal time encoding, but was {d_model}")
        self.d_model = d_model
        self.blocks = nn.ModuleList(EncoderBlock(d_model, n_heads, dropout=dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tokens: Tensor, days: Tensor) -> Tensor:
        """``tokens`` (B, L, d), ``days`` (B, L) → mean-pooled encoding (B, d)."""
        h = tokens + time_encoding(days, self.d_model).to(tokens.dtype)
        for block in self.blocks:
            h = block(h)
        return torch.mean(self.norm(h), dim=1)
