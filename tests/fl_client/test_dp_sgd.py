"""The DP-SGD step (fl_client.dp_sgd): engine choice, fp32 clipping against a float64 reference, empty batches."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from opacus import PrivacyEngine
from opacus.optimizers import DPOptimizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))  # the shared synthetic records
from model_records import GLOBAL_GROUPS, N_CLINICAL, make_records

from fl_client.dp_sgd import ExpandedWeightsModule, Fp32ClippingDPOptimizer, grad_sample_mode, make_private
from fl_client.train import Standardizer, fit, multitask_loss, to_dataset, train_epoch
from models.config import InputDims, NetworkSettings, TrainSettings, build_model

SMALL = NetworkSettings(v_max=12, stgcn_channels=(8, 8), d_model=8, embed_dim=8, hidden=8, dropout=0.0)
DIMS = InputDims.from_group_names(6, GLOBAL_GROUPS, N_CLINICAL)
CPU = torch.device("cpu")
CLIP = 0.05  # small enough that every patient's gradient is clipped


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n: int = 12, seed: int = 4) -> torch.utils.data.TensorDataset:
    records = make_records(n, seed=seed)
    return to_dataset(records, "full", 12, Standardizer.fit(records, "full"))


def _model(kind: str = "fusion") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(kind, 3, DIMS, SMALL)


@pytest.mark.parametrize(("device", "mode"), [("cpu", "ew"), ("cuda", "hooks")])
def test_engine_is_expanded_weights_in_fp32_and_hooks_under_autocast(device: str, mode: str) -> None:
    assert grad_sample_mode(torch.device(device)) == mode


@pytest.mark.parametrize("kind", ["fusion", "wide"])  # the fusion net and the default product model
def test_make_private_wraps_with_the_fast_classes_and_fit_spends_budget(kind: str) -> None:
    data = _data()
    engine = PrivacyEngine(accountant="prv")
    start = {name: p.detach().clone() for name, p in _model(kind).named_parameters()}
    model, losses = fit(_model(kind), data, TrainSettings(epochs=2, batch_size=6), CPU,
                        torch.Generator().manual_seed(0), privacy_engine=engine, noise_multiplier=1.1,
                        max_grad_norm=1.0)
    assert isinstance(model, ExpandedWeightsModule)
    assert all(torch.isfinite(torch.tensor(losses)))
    steps = sum(n for _, _, n in engine.accountant.history)  # (σ, q, steps) per mechanism
    assert steps == 2 * 2  # 12 patients, expected batch 6: two Poisson batches per epoch, all counted
    assert 0 < engine.get_epsilon(1e-5) < 100
    trained = {name.removeprefix("_module."): p for name, p in model.named_parameters()}
    assert trained.keys() == start.keys()
    assert all(not torch.equal(trained[name], start[name]) for name in start if ".wide." in f".{name}")  # it learnt


def _clipped_reference(params: list[torch.nn.Parameter], expected_batch: int) -> list[torch.Tensor]:
    """Flat clipping in float64 from the per-sample gradients as they are (bf16 under autocast)."""
    samples = [p.grad_sample.double() for p in params]
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in samples], dim=1).norm(dim=1)
    factor = (CLIP / (norms + 1e-6)).clamp(max=1.0)
    return [torch.einsum("i,i...", factor, g) / expected_batch for g in samples]


@pytest.mark.parametrize(("optimizer_class", "tolerance", "within"), [
    (Fp32ClippingDPOptimizer, 1e-5, True),
    (DPOptimizer, 1e-5, False),  # Opacus' own computes the norms in bf16: the test can tell the difference
])
def test_clipping_is_fp32_under_bf16_autocast(optimizer_class: type, tolerance: float, within: bool) -> None:
    """Under autocast Opacus' hooks leave bf16 per-sample gradients; clipping must not inherit that precision."""
    data = _data(8)
    model = _model()
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    wrapped, optimizer, _ = PrivacyEngine(accountant="prv").make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.0), data_loader=loader, noise_multiplier=0.0,
        max_grad_norm=CLIP, grad_sample_mode="hooks")
    optimizer.__class__ = optimizer_class
    batch = list(data.tensors)
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = wrapped(*batch[:6])
    multitask_loss(outputs, batch, TrainSettings().loss_weights).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert {p.grad_sample.dtype for p in params} == {torch.bfloat16}
    expected = _clipped_reference(params, optimizer.expected_batch_size)
    optimizer.step()
    worst = max(float((p.grad.double() - e).abs().max() / e.abs().max().clamp(min=1e-30)) for p, e in
                zip(params, expected, strict=True))
    assert (worst < tolerance) is within, worst


def test_an_empty_poisson_batch_is_a_noise_only_step_that_counts() -> None:
    data = _data(8)
    model = _model()
    engine = PrivacyEngine(accountant="prv")
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    wrapped, optimizer, _ = make_private(engine, model, torch.optim.SGD(model.parameters(), lr=1.0), loader, CPU,
                                         noise_multiplier=1.0, max_grad_norm=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    empty = [t[:0] for t in data.tensors]
    train_epoch(wrapped, [empty], optimizer, CPU, TrainSettings().loss_weights)
    assert sum(n for _, _, n in engine.accountant.history) == 1
    moved = [float((p.detach() - b).abs().max()) for p, b in zip(model.parameters(), before, strict=True)]
    assert all(m > 0 for m in moved)  # noise (σ · C / expected batch) reached every parameter
    assert all(torch.isfinite(p).all() for p in model.parameters())
