"""DP-SGD for the local training step: Opacus' ``make_private`` with a cheaper per-sample-gradient engine.

What a DP step costs beyond a plain one is computing, clipping and noising per-sample gradients. Three
choices keep it under 2× a plain step at the real graph size (48 sub-regions; ``benchmarks/bench_models.py``,
docs/models.md "DP cost"):

- **per-sample gradients by expanded weights** (``grad_sample_mode="ew"``, PyTorch's
  ``call_for_per_sample_grads``) where the step runs in fp32 (CPU): they are computed inside the one
  backward pass, without Opacus' forward/backward hooks on each of the ~70 layers. Under bf16 autocast
  (CUDA) expanded weights fail (their backward multiplies the bf16 gradient by the fp32 weight, torch 2.13),
  so there Opacus' hooks compute them;
- **clipping in fp32**: per-sample norms, clip factors and the clipped sum are computed from fp32 copies of
  the per-sample gradients, which are bf16 under autocast (:class:`Fp32ClippingDPOptimizer`);
- Opacus' ``scale_grad`` re-derives ``accumulated_iterations`` (a pass over every parameter) once per
  parameter; it is computed once per step here. Noise (``add_noise``, secure mode included) is Opacus' own.

The networks do their part: the ST-GCN's temporal convolution is a ``Linear`` (:class:`models.stgcn.TemporalConv`),
whose per-sample rule is one ``einsum`` instead of an unfold.
"""

from __future__ import annotations

from typing import Any

import torch
from opacus.grad_sample.gsm_exp_weights import GradSampleModuleExpandedWeights
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from torch import nn
from torch.utils.data import DataLoader


def grad_sample_mode(device: torch.device) -> str:
    """Opacus' per-sample-gradient engine for a step on ``device``: ``"ew"`` in fp32, ``"hooks"`` under autocast.

    :func:`fl_client.train.autocast` enables bf16 autocast exactly on CUDA.
    """
    return "hooks" if device.type == "cuda" else "ew"


class ExpandedWeightsModule(GradSampleModuleExpandedWeights):  # type: ignore[misc]
    """Opacus' expanded-weights wrapper that also takes an empty Poisson batch.

    Poisson sampling can draw no patient; PyTorch's expanded weights refuse a batch of 0. The step must still
    happen (noise only, and the accountant counts it, as under Opacus' hooks), so an empty batch runs the
    plain network and leaves zero-row per-sample gradients.
    """

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if x.shape[0] > 0:
            return super().forward(x, *args, **kwargs)
        for p in self._module.parameters():
            if p.requires_grad:
                p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        return self._module(x, *args, **kwargs)


class Fp32ClippingDPOptimizer(DPOptimizer):  # type: ignore[misc]
    """Opacus' flat-clipping ``DPOptimizer`` with clipping in fp32 and a ``scale_grad`` linear in the parameters.

    Same mathematics as Opacus 1.6 (per-sample norm over all parameters, factor ``min(1, C / (‖g‖ + 1e-6))``,
    clipped sum; ``mean`` reduction divides by expected batch size × accumulated iterations).
    """

    def clip_and_accumulate(self) -> None:
        if not all(isinstance(p.grad_sample, torch.Tensor) for p in self.params):
            super().clip_and_accumulate()  # gradients accumulated over several backward passes: Opacus' path
            return
        samples = [p.grad_sample.float() for p in self.params]
        norms = torch.stack([g.flatten(1).norm(2, dim=1) for g in samples], dim=1).norm(2, dim=1)
        factor = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for p, g in zip(self.params, samples, strict=True):
            _check_processed_flag(p.grad_sample)
            grad = torch.einsum("i,i...", factor, g).to(p.dtype)
            p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad
            _mark_as_processed(p.grad_sample)

    def scale_grad(self) -> None:
        if self.loss_reduction == "mean":
            divisor = self.expected_batch_size * self.accumulated_iterations
            for p in self.params:
                p.grad /= divisor


def make_private(
    engine: Any,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    device: torch.device,
    noise_multiplier: float,
    max_grad_norm: float,
    noise_generator: torch.Generator | None = None,
) -> tuple[nn.Module, DPOptimizer, DataLoader]:
    """``engine.make_private`` (Poisson sampling, flat clipping at ``max_grad_norm``, noise σ) for a step on ``device``.

    ``engine`` is an Opacus ``PrivacyEngine`` (or :func:`fl_client.federated.csprng_privacy_engine`'s); its
    accountant records every step. The returned wrapper and optimizer are Opacus' own classes with the
    overrides above (same state; only methods change).
    """
    model, optimizer, loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm, noise_generator=noise_generator, grad_sample_mode=grad_sample_mode(device),
    )
    if type(model) is GradSampleModuleExpandedWeights:
        model.__class__ = ExpandedWeightsModule
    if type(optimizer) is DPOptimizer:
        optimizer.__class__ = Fp32ClippingDPOptimizer
    return model, optimizer, loader
