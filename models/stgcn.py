"""Spatio-temporal graph convolution network over tumour sub-region graphs at T0/T1(/T2).

Adapted from Yan, Xiong & Lin, "Spatial Temporal Graph Convolutional Networks for Skeleton-Based
Action Recognition", AAAI 2018:

- spatial graph convolution with the partitioned adjacency (root / centripetal / centrifugal,
  :func:`models.batching.partition_adjacency`): ``Σ_k A_k X W_k``, implemented as one ``Linear`` over
  the K aggregated copies of the features;
- a temporal convolution over the time axis after each spatial step, and residual ST blocks.

What changed for three time points and tens of sub-regions (DOMAIN.md §9):

- temporal kernel 3 (not 9) with zero padding and **no temporal stride** (T is 2 or 3), written as one
  ``Linear`` over each node's time-shifted states (:class:`TemporalConv`, the same function as a
  ``Conv2d`` with kernel (3, 1)): Opacus' per-sample rule for a ``Linear`` is one ``einsum``, where a
  ``Conv2d`` needs an unfold of a permuted copy — the cheaper DP-SGD step (docs/models.md, DP cost);
- scans are irregular in time, so the time since baseline (days / 100) is appended to every node's
  features, letting the net weigh a change by the interval it happened in;
- LayerNorm over channels instead of BatchNorm (Opacus DP-SGD; also independent of padding);
- no learnable edge-importance mask: graphs differ per patient (different sub-region counts), so a
  mask over a fixed node set has no meaning here;
- invalid or padding nodes are zeroed after every block and excluded from the pooled read-out.

Shapes: ``x`` (B, T, V, F), ``adjacency`` (B, K, V, V), ``node_valid`` (B, T, V), ``days`` (B, T);
output embedding (B, D).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional

from models.batching import N_PARTITIONS
from models.exceptions import ModelConfigError

DAYS_SCALE = 100.0


class TemporalConv(nn.Module):
    """A zero-padded temporal convolution over channel-last node states, as one ``Linear`` over shifted copies.

    ``y[t] = b + Σ_k W_k h[t + k - k//2]`` for ``k < kernel_t`` (zero outside ``[0, T)``), exactly what
    ``nn.Conv2d(c, c, (kernel_t, 1), padding=(kernel_t // 2, 0))`` computes on ``(B, C, T, V)``, with
    ``W = conv.weight[:, :, :, 0]`` laid out as ``(C_out, kernel_t · C_in)`` (offset-major). Parameters are
    initialised as ``Conv2d`` initialises them (same fan-in, same draws in the same order), so a seeded model
    starts from the same function as the former ``Conv2d`` block.

    Parameters
    ----------
    c_in, c_out : int
    kernel_t : int
        Odd temporal kernel size.
    """

    def __init__(self, c_in: int, c_out: int, kernel_t: int = 3) -> None:
        super().__init__()
        if kernel_t % 2 != 1:
            raise ModelConfigError(f"kernel_t must be odd so that T is preserved, but was {kernel_t}")
        self.kernel_t = kernel_t
        self.linear = nn.utils.skip_init(nn.Linear, kernel_t * c_in, c_out)  # initialised below, as Conv2d
        weight = torch.empty(c_out, c_in, kernel_t)  # Conv2d's layout (without the width-1 axis) and init
        nn.init.kaiming_uniform_(weight, a=5**0.5)
        bound = 1.0 / (c_in * kernel_t) ** 0.5
        with torch.no_grad():
            self.linear.weight.copy_(weight.permute(0, 2, 1).reshape(c_out, kernel_t * c_in))
            self.linear.bias.uniform_(-bound, bound)

    def forward(self, h: Tensor) -> Tensor:
        """``h`` (B, T, V, C_in) → (B, T, V, C_out)."""
        t, half = h.shape[1], self.kernel_t // 2
        padded = functional.pad(h, (0, 0, 0, 0, half, half))  # zeros before the first and after the last scan
        return self.linear(torch.cat([padded[:, k : k + t] for k in range(self.kernel_t)], dim=-1))


class STBlock(nn.Module):
    """One residual spatial-temporal block on channel-last tensors ``(B, T, V, C)``.

    Parameters
    ----------
    c_in, c_out : int
        Channels in and out.
    kernel_t : int
        Temporal kernel size (odd).
    dropout : float
        Dropout after the temporal convolution.
    """

    def __init__(self, c_in: int, c_out: int, kernel_t: int = 3, dropout: float = 0.1) -> None:
        super().__init__()
        if kernel_t % 2 != 1:
            raise ModelConfigError(f"kernel_t must be odd so that T is preserved, but was {kernel_t}")
        self.spatial = nn.Linear(N_PARTITIONS * c_in, c_out)
        self.norm_s = nn.LayerNorm(c_out)
        self.temporal = TemporalConv(c_out, c_out, kernel_t)
        self.norm_t = nn.LayerNorm(c_out)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.residual: nn.Module = nn.Identity() if c_in == c_out else nn.Linear(c_in, c_out)

    def forward(self, h: Tensor, adjacency: Tensor, mask: Tensor) -> Tensor:
        """``h`` (B, T, V, C_in), ``adjacency`` (B, K, V, V), ``mask`` (B, T, V, 1) → (B, T, V, C_out)."""
        b, t, v, c = h.shape
        aggregated = torch.einsum("bkvw,btwc->btvkc", adjacency, h).reshape(b, t, v, N_PARTITIONS * c)
        y = self.act(self.norm_s(self.spatial(aggregated)))
        y = self.drop(self.norm_t(self.temporal(y)))
        return self.act(y + self.residual(h)) * mask


class STGCN(nn.Module):
    """ST-GCN branch: node features over time → patient embedding.

    Parameters
    ----------
    node_features : int
        F, radiomics features per sub-region and time point.
    n_timepoints : int
        T (2 in early mode, 3 in full mode); the read-out keeps one slot per time point.
    channels : sequence of int
        Output channels of the ST blocks (default 4 blocks 32, 32, 64, 64).
    embed_dim : int
        D, size of the returned embedding.
    dropout : float
    """

    def __init__(
        self,
        node_features: int,
        n_timepoints: int,
        channels: tuple[int, ...] = (32, 32, 64, 64),
        embed_dim: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if node_features < 1 or n_timepoints < 1 or not channels:
            raise ModelConfigError(
                f"STGCN needs node_features ≥ 1, n_timepoints ≥ 1 and ≥ 1 block, but got "
                f"{node_features}, {n_timepoints}, {channels}"
            )
        self.n_timepoints = n_timepoints
        self.input = nn.Linear(node_features + 1, channels[0])
        widths = zip((channels[0], *channels[:-1]), channels, strict=True)
        self.blocks = nn.ModuleList(STBlock(c_in, c_out, dropout=dropout) for c_in, c_out in widths)
        self.readout = nn.Linear(n_timepoints * channels[-1], embed_dim)
        self.embed_dim = embed_dim

    def node_states(self, x: Tensor, adjacency: Tensor, node_valid: Tensor, days: Tensor) -> Tensor:
        """Last block's node states ``(B, T, V, C)`` (zero at invalid nodes)."""
        mask = node_valid.unsqueeze(-1).to(x.dtype)
        elapsed = ((days - days[:, :1]) / DAYS_SCALE)[:, :, None, None].expand(-1, -1, x.shape[2], 1)
        h = self.input(torch.cat([x, elapsed.to(x.dtype)], dim=-1)) * mask
        for block in self.blocks:
            h = block(h, adjacency, mask)
        return h

    def forward(self, x: Tensor, adjacency: Tensor, node_valid: Tensor, days: Tensor) -> Tensor:
        """Embedding (B, D) from ``x`` (B, T, V, F), ``adjacency`` (B, K, V, V), ``node_valid`` (B, T, V),
        ``days`` (B, T)."""
        h = self.node_states(x, adjacency, node_valid, days)
        weight = node_valid.unsqueeze(-1).to(h.dtype)
        pooled = (h * weight).sum(2) / weight.sum(2).clamp(min=1.0)  # (B, T, C): mean over valid nodes
        return torch.nn.functional.gelu(self.readout(pooled.flatten(1)))
