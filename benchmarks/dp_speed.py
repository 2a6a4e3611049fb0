"""The speed part of ``bench_models.py``: a plain step vs a DP-SGD step of the full-mode fusion net, same run.

The fusion net is timed whatever the product model (``model.kind``) is: it is the costly network, the one
the DP ≤ 2× goal is about. When the product kind is another one (default ``wide``, the fusion net's linear
path alone), its plain and DP steps are timed beside it (``plain, product (wide)`` / ``DP, product (wide)``).

Variants, timed step by step in turn (plain, DP, plain, DP, …) so that a load change on the shared machine
hits them alike; each number is the median of ``--speed-steps`` steps after 3 warm-up steps:

- ``plain``: the network as trained (``fl_client.train.train_epoch`` on one batch of 32);
- ``DP``: the production DP step (:func:`fl_client.dp_sgd.make_private`: Poisson sampling, expanded-weights
  per-sample gradients in fp32 / Opacus hooks under autocast, fp32 flat clipping, noise);
- ``DP, Opacus defaults``: the same network under ``PrivacyEngine.make_private`` as it comes (hooks, stock
  ``DPOptimizer``);
- ``… Conv2d`` (before): the network with its temporal convolution as the ``nn.Conv2d`` it was before
  :class:`models.stgcn.TemporalConv` (same weights), plain and under Opacus defaults — the former DP step.

Process CPU time is the figure to read on a loaded machine (wall time measures the neighbours as much as
us); the load average is printed with it. The graphs have the real size: the cohort's own with ``--cohort``,
else the tests' synthetic records widened to the sub-region layout's 48 nodes × 15 node features.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from fl_client.centralized import PooledCohort, node_padding
from fl_client.train import PatientRecord, Standardizer, to_dataset, train_epoch
from models.config import ModelSettings, build_model
from models.stgcn import TemporalConv

WARMUP = 3


class _Conv2dTemporal(nn.Module):
    """The former temporal step: ``nn.Conv2d`` with kernel (k, 1) on a permuted, contiguous copy (same weights)."""

    def __init__(self, temporal: TemporalConv) -> None:
        super().__init__()
        k, c_out = temporal.kernel_t, temporal.linear.out_features
        c_in = temporal.linear.in_features // k
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=(k, 1), padding=(k // 2, 0))
        with torch.no_grad():
            self.conv.weight.copy_(temporal.linear.weight.reshape(c_out, k, c_in).permute(0, 2, 1)[..., None])
            self.conv.bias.copy_(temporal.linear.bias)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv(h.permute(0, 3, 1, 2).contiguous()).permute(0, 2, 3, 1)


def with_conv2d(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ST-GCN blocks use the former ``Conv2d`` temporal step (same function)."""
    model = copy.deepcopy(model)
    for block in [m for m in model.modules() if isinstance(getattr(m, "temporal", None), TemporalConv)]:
        block.temporal = _Conv2dTemporal(block.temporal)
    return model


def real_size(records: list[PatientRecord], n_nodes: int = 48, n_features: int = 15) -> list[PatientRecord]:
    """``records`` with graphs widened to ``n_nodes`` × ``n_features`` (random features, a ring of edges):
    the shapes the radiomics pipeline writes (SubregionSpec: 6 zones × 8 sectors; NODE_FEATURES)."""
    g = torch.Generator().manual_seed(0)
    ring = torch.arange(n_nodes)
    edges = torch.cat([torch.stack([ring, (ring + 1) % n_nodes]), torch.stack([(ring + 1) % n_nodes, ring])], 1)
    out = []
    for r in records:
        t = r.graph.x.shape[0]
        graph = Data(x=torch.randn(t, n_nodes, n_features, generator=g), edge_index=edges,
                     node_valid=torch.rand(t, n_nodes, generator=g) > 0.1, days=r.graph.days, num_nodes=n_nodes)
        out.append(copy.copy(r))
        out[-1].graph = graph
    return out


def _private(model: nn.Module, optimizer: Any, loader: Any, device: torch.device, production: bool) -> Any:
    from opacus import PrivacyEngine

    from fl_client.dp_sgd import make_private

    engine = PrivacyEngine(accountant="prv")
    if production:
        return make_private(engine, model, optimizer, loader, device, 1.0, 1.0)
    return engine.make_private(module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=1.0,
                               max_grad_norm=1.0)


def _variant(base: nn.Module, data: Any, device: torch.device, settings: ModelSettings, n_steps: int,
             private: str | None) -> Callable[[int], None]:
    """A function running step ``i`` of one variant (batches drawn up front, cycling over epochs)."""
    model = copy.deepcopy(base).to(device)
    optimizer: Any = torch.optim.AdamW(model.parameters(), lr=settings.train.lr)
    loader: Any = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True,
                                              generator=torch.Generator().manual_seed(1))
    if private is not None:
        model, optimizer, loader = _private(model, optimizer, loader, device, private == "production")
    batches: list[Any] = []
    while len(batches) < n_steps:
        batches += [b for b in loader if len(b[0])]
    weights = settings.train.loss_weights

    def step(i: int) -> None:
        train_epoch(model, [batches[i]], optimizer, device, weights)

    return step


def step_times(cohort: PooledCohort, settings: ModelSettings, device: torch.device, n_patients: int,
               n_steps: int) -> dict[str, tuple[float, float]]:
    """Variant → (median wall s, median process-CPU s) per step, over ``n_steps`` steps taken in turn."""
    records = cohort.records[:n_patients]
    data = to_dataset(records, "full", node_padding(records, settings), Standardizer.fit(records, "full"))
    torch.manual_seed(0)
    net = build_model("fusion", 3, cohort.dims, settings.model)
    legacy = with_conv2d(net)
    product: dict[str, Callable[[int], None]] = {}
    if settings.model.kind != "fusion":
        torch.manual_seed(0)
        own = build_model(settings.model.kind, 3, cohort.dims, settings.model)
        product = {f"plain, product ({settings.model.kind})": _variant(own, data, device, settings, WARMUP + n_steps,
                                                                        None),
                   f"DP, product ({settings.model.kind})": _variant(own, data, device, settings, WARMUP + n_steps,
                                                                     "production")}
    steps = {
        "plain": _variant(net, data, device, settings, WARMUP + n_steps, None),
        "DP": _variant(net, data, device, settings, WARMUP + n_steps, "production"),
        "DP, Opacus defaults": _variant(net, data, device, settings, WARMUP + n_steps, "opacus"),
        "plain, Conv2d (before)": _variant(legacy, data, device, settings, WARMUP + n_steps, None),
        "DP, Opacus defaults, Conv2d (before)": _variant(legacy, data, device, settings, WARMUP + n_steps, "opacus"),
        **product,
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    for i in range(WARMUP + n_steps):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter(), time.process_time()
            step(i)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= WARMUP:
                times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: (statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts))
            for name, ts in times.items()}


def _plain_of(variant: str) -> str:
    """The plain step a variant's ratio is taken against (its own network's)."""
    if "Conv2d" in variant:
        return "plain, Conv2d (before)"
    if "product (" in variant:
        return "plain, " + variant[variant.index("product ("):]
    return "plain"


def speed(cohort: PooledCohort, settings: ModelSettings, n_patients: int, n_steps: int) -> None:
    """Print the step-time table per device (CPU, and CUDA with bf16 autocast when present)."""
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    n = min(n_patients, len(cohort.records))
    v = max(int(r.graph.x.shape[1]) for r in cohort.records[:n])
    print(f"\nSpeed: full-mode fusion, {n} patients of {v} sub-regions × {cohort.records[0].graph.x.shape[2]} node "
          f"features, batch 32 (DP: Poisson, expected 32), median of {n_steps} steps taken in turn, "
          f"{sum(p.numel() for p in build_model('fusion', 3, cohort.dims, settings.model).parameters())} parameters, "
          f"{torch.get_num_threads()} torch thread(s), load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    print(f"{'device':7s} {'variant':38s} {'wall ms':>8s} {'CPU ms':>8s} {'wall ×plain':>12s} {'CPU ×plain':>11s}")
    for device in devices:
        medians = step_times(cohort, settings, device, n_patients, n_steps)
        for name, (wall, cpu) in medians.items():
            plain_wall, plain_cpu = medians[_plain_of(name)]
            print(f"{device.type:7s} {name:38s} {wall * 1e3:8.1f} {cpu * 1e3:8.1f} {wall / plain_wall:12.2f} "
                  f"{cpu / plain_cpu:11.2f}")
