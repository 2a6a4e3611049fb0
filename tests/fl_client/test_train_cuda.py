"""A training step on CUDA (fp32 and bf16 autocast, plain and DP-SGD) against the same step on the CPU in fp32.

Skipped without a CUDA device. The DP steps run without noise (σ = 0) so that the clipped, averaged gradient
is deterministic and comparable; per-sample clipping must come out in fp32 under autocast too.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from opacus import PrivacyEngine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))  # the shared synthetic records
from model_records import GLOBAL_GROUPS, N_CLINICAL, make_records

from fl_client.dp_sgd import Fp32ClippingDPOptimizer, make_private
from fl_client.train import N_INPUTS, Standardizer, multitask_loss, to_dataset, train_epoch
from models.config import InputDims, NetworkSettings, TrainSettings, build_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SMALL = NetworkSettings(v_max=12, stgcn_channels=(8, 8), d_model=8, embed_dim=8, hidden=8, dropout=0.0)
DIMS = InputDims.from_group_names(6, GLOBAL_GROUPS, N_CLINICAL)
CPU, CUDA = torch.device("cpu"), torch.device("cuda")
WEIGHTS = TrainSettings().loss_weights


def _setup(device: torch.device, private: bool) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer,
                                                          list[torch.Tensor]]:
    """(network, what to call, optimizer, one batch of 16) on ``device``; SGD with lr 0 keeps the weights."""
    records = make_records(16, seed=9)
    data = to_dataset(records, "full", 12, Standardizer.fit(records, "full"))
    torch.manual_seed(0)
    net = build_model("fusion", 3, DIMS, SMALL)
    for head in (net.head_response, net.head_risk, net.head_pseudo):  # zero-initialised: give them gradients
        if head is not None:
            torch.nn.init.normal_(head.weight, std=0.5)
    net = net.to(device)
    optimizer: torch.optim.Optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    called: torch.nn.Module = net
    if private:
        loader = torch.utils.data.DataLoader(data, batch_size=16)
        called, optimizer, _ = make_private(PrivacyEngine(accountant="prv"), net, optimizer, loader, device,
                                            noise_multiplier=0.0, max_grad_norm=0.5)
    return net, called, optimizer, [t.to(device) for t in data.tensors]


def _step(called: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: list[torch.Tensor], device: torch.device,
          bf16: bool) -> None:
    if bf16:  # the production loop: bf16 autocast on CUDA
        train_epoch(called, [batch], optimizer, device, WEIGHTS)
        return
    optimizer.zero_grad(set_to_none=True)
    multitask_loss(called(*batch[:N_INPUTS]), batch, WEIGHTS).backward()
    optimizer.step()


@pytest.mark.parametrize("private", [False, True], ids=["plain", "dp"])
@pytest.mark.parametrize(("bf16", "rtol"), [(False, 1e-4), (True, 5e-2)], ids=["fp32", "bf16"])
def test_cuda_step_matches_the_cpu_fp32_step(private: bool, bf16: bool, rtol: float) -> None:
    cpu_net, cpu_called, cpu_opt, cpu_batch = _setup(CPU, private)
    _step(cpu_called, cpu_opt, cpu_batch, CPU, bf16=False)
    net, called, opt, batch = _setup(CUDA, private)
    _step(called, opt, batch, CUDA, bf16)
    if private:
        assert isinstance(opt, Fp32ClippingDPOptimizer)
    scale = max(float(p.grad.abs().max()) for p in cpu_net.parameters())
    for (name, p), ref in zip(net.named_parameters(), cpu_net.parameters(), strict=True):
        assert p.grad is not None and p.grad.dtype == torch.float32, name
        assert torch.isfinite(p.grad).all(), name
        torch.testing.assert_close(p.grad.cpu(), ref.grad, rtol=rtol, atol=rtol * scale, msg=name)


def test_cuda_dp_step_trains_under_autocast_with_fp32_clipping() -> None:
    """A real step (σ = 1, Adam) under autocast: weights move, stay fp32, and the accountant counts the step."""
    net, called, _, batch = _setup(CUDA, False)
    engine = PrivacyEngine(accountant="prv")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*[t.cpu() for t in batch]), batch_size=8)
    before = copy.deepcopy(net.state_dict())
    called, optimizer, loader = make_private(engine, net, torch.optim.AdamW(net.parameters(), lr=1e-2), loader, CUDA,
                                             noise_multiplier=1.0, max_grad_norm=1.0)
    loss = train_epoch(called, loader, optimizer, CUDA, WEIGHTS)
    assert torch.isfinite(torch.tensor(loss))
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert sum(n for _, _, n in engine.accountant.history) == len(loader)
