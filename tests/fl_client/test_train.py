"""The local training loop: leakage guard, standardization, plain and DP-SGD fits, model-input files."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))  # the shared synthetic records
from model_records import GLOBAL_GROUPS, N_CLINICAL, make_records, with_deep_heads

from fl_client.train import (
    FIELDS,
    LabelLeakageError,
    SiteInputs,
    Standardizer,
    assert_no_label_leakage,
    fit,
    load_site_inputs,
    multitask_loss,
    predict,
    save_site_inputs,
    to_dataset,
)
from models.config import InputDims, NetworkSettings, TrainSettings, build_model
from models.exceptions import ModelInputError

SMALL = NetworkSettings(v_max=12, stgcn_channels=(8, 8), d_model=8, embed_dim=8, hidden=8, dropout=0.0)
DIMS = InputDims.from_group_names(6, GLOBAL_GROUPS, N_CLINICAL)
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    ("mode", "label_day", "leaks"),
    [("early", 62.0, True), ("early", 63.0, False), ("early", 104.0, False), ("full", 104.0, True),
     ("full", 105.0, False), ("full", 183.0, False)],
)
def test_leakage_guard_compares_label_day_with_last_input_scan(mode: str, label_day: float, leaks: bool) -> None:
    record = make_records(1, seed=0)[0]
    record.graph.days = torch.tensor([-7.0, 62.0, 104.0])
    record.label_day = {mode: label_day}
    if leaks:
        with pytest.raises(LabelLeakageError, match=f"day {label_day:g}"):
            assert_no_label_leakage([record], mode)
    else:
        assert_no_label_leakage([record], mode)


def test_early_mode_predictions_ignore_everything_at_t2() -> None:
    """No early-mode input carries T2: rewriting T2 images/features/days leaves early predictions unchanged."""
    records = make_records(12, seed=1)
    scaler = Standardizer.fit(records, "early")
    torch.manual_seed(0)
    model = with_deep_heads(build_model("fusion", 2, DIMS, SMALL))
    before = predict(model, to_dataset(records, "early", 12, scaler), CPU)
    for r in records:
        r.graph.x[2] = torch.randn_like(r.graph.x[2]) * 50
        r.graph.node_valid[2] = ~r.graph.node_valid[2]
        r.graph.days[2] = 400.0
        r.globals_[2] = -r.globals_[2] * 9
    after = predict(model, to_dataset(records, "early", 12, scaler), CPU)
    for head in before:
        np.testing.assert_array_equal(before[head], after[head])
    # …whereas full mode does see the change
    full_scaler = Standardizer.fit(records, "full")
    assert to_dataset(records, "full", 12, full_scaler).tensors[0].shape[1] == 3


def test_standardizer_uses_training_records_only() -> None:
    records = make_records(20, seed=2)
    train, test = records[:10], records[10:]
    for r in test:
        r.globals_ = r.globals_ + 100.0
    scaler = Standardizer.fit(train, "early")
    expected = torch.cat([r.globals_[:2] for r in train]).mean(0)
    torch.testing.assert_close(scaler.globals_[0], expected)
    data = to_dataset(test, "early", 12, scaler)
    assert data.tensors[FIELDS.index("globals_")].mean() > 10  # test shift is visible, not re-centred away


@pytest.mark.slow
def test_fit_learns_the_synthetic_signal() -> None:
    records = make_records(64, seed=3)
    data = to_dataset(records, "early", 12, Standardizer.fit(records, "early"))
    torch.manual_seed(0)
    settings = TrainSettings(epochs=10, batch_size=16, lr=1e-2)
    model, losses = fit(build_model("fusion", 2, DIMS, SMALL), data, settings, CPU, torch.Generator().manual_seed(0))
    assert losses[-1] < losses[0]
    labels = [r.responder["early"] for r in records]
    assert roc_auc_score(labels, predict(model, data, CPU)["response"]) > 0.8


def test_fit_under_dp_sgd_uses_poisson_batches_and_spends_budget() -> None:
    records = make_records(16, seed=4)
    data = to_dataset(records, "full", 12, Standardizer.fit(records, "full"))
    torch.manual_seed(0)
    model = build_model("fusion", 3, DIMS, SMALL)
    start = [p.detach().clone() for p in model.parameters()]
    engine = PrivacyEngine(accountant="prv")
    private, losses = fit(model, data, TrainSettings(epochs=2, batch_size=8), CPU, torch.Generator().manual_seed(0),
                          privacy_engine=engine, noise_multiplier=1.1, max_grad_norm=1.0)
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert any(not torch.equal(a, b) for a, b in zip(start, private._module.parameters(), strict=True))
    assert 0 < engine.get_epsilon(1e-5) < 100
    assert isinstance(engine.dataset, torch.utils.data.TensorDataset)


def test_dp_loader_is_poisson() -> None:
    records = make_records(10, seed=5)
    data = to_dataset(records, "early", 12, Standardizer.fit(records, "early"))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    assert isinstance(DPDataLoader.from_data_loader(loader), DPDataLoader)


def test_multitask_loss_of_an_empty_batch_is_zero() -> None:
    records = make_records(4, seed=6)
    data = to_dataset(records, "early", 12, Standardizer.fit(records, "early"))
    empty = [t[:0] for t in data.tensors]
    model = build_model("fusion", 2, DIMS, SMALL)
    loss = multitask_loss(model(*empty[:6]), empty, TrainSettings().loss_weights)
    loss.backward()
    assert float(loss.detach()) == 0.0


def test_model_inputs_round_trip(tmp_path: Path) -> None:
    records = make_records(5, seed=7)
    names = [f"g{i}" for i in range(9)]
    save_site_inputs(SiteInputs("S01", records, names, GLOBAL_GROUPS, ["age"] * N_CLINICAL), tmp_path / "m.pt")
    loaded = load_site_inputs(tmp_path / "m.pt")
    assert [r.usubjid for r in loaded.records] == [r.usubjid for r in records]
    assert loaded.global_names == names and loaded.site == "S01"
    for a, b in zip(records, loaded.records, strict=True):
        torch.testing.assert_close(a.graph.x, b.graph.x)
        torch.testing.assert_close(a.graph.pos, b.graph.pos)
        assert (a.pfs_days, a.responder, a.recist_t1) == (b.pfs_days, b.responder, b.recist_t1)
        assert np.isnan(a.pseudo) == np.isnan(b.pseudo)
    assert not list(tmp_path.glob(".m.pt.*"))  # no temp file left behind


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    torch.save({"format": "something-else"}, tmp_path / "x.pt")
    with pytest.raises(ModelInputError, match="not a model-input file"):
        load_site_inputs(tmp_path / "x.pt")
