"""A site's federated round: DP-SGD, ledger, encryption, and the decrypted aggregate equal to plain FedAvg."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from federated_toy import ToyNet, toy_dataset, toy_train_fn

from fl_client.federated import (
    ClientSettings,
    SiteData,
    SiteKeys,
    apply_global_model,
    csprng_privacy_engine,
    model_vector,
    site_round,
)
from fl_server.strategy import aggregate_round
from fl_server.validation import Expectation
from privacy.accounting import read_ledger
from privacy.audit import verify_chain
from privacy.ckks import (
    PUBLIC_CONTEXT,
    SECRET_CONTEXT,
    KeyInfo,
    load_public_context,
    load_site_context,
    write_key_files,
)
from privacy.exceptions import ContextMismatchError, PrivacyBudgetExhausted

SITES = {"S01": 40, "S02": 25, "S03": 61}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[SiteKeys, Any]:
    out = tmp_path_factory.mktemp("keys")
    info = write_key_files(out)
    site = SiteKeys(KeyInfo.read(out / "site" / "keyinfo.json"), load_site_context(out / SECRET_CONTEXT))
    assert site.info.key_id == info.key_id
    return site, load_public_context(out / PUBLIC_CONTEXT)


def _data() -> dict[str, SiteData]:
    return {s: SiteData(s, toy_dataset(n, seed=i, shift=0.3 * i)) for i, (s, n) in enumerate(SITES.items())}


def _expectation(update_meta: Any, keys: SiteKeys, round_: int, encoding: str) -> Expectation:
    return Expectation(round=round_, layout_digest=update_meta.layout_digest, length=update_meta.length,
                       key_id=keys.info.key_id, encoding=encoding, params=keys.params)


@pytest.mark.parametrize("mode", ["he", "plain"])
def test_decrypted_aggregate_equals_plaintext_fedavg(tmp_path: Path, keys: tuple[SiteKeys, Any], mode: str) -> None:
    site_keys, public = keys
    settings = ClientSettings(mode=mode, local_epochs=2)
    trained: dict[str, np.ndarray] = {}

    def capturing(site: str) -> Any:
        inner = toy_train_fn(epochs=2)

        def fn(model: torch.nn.Module, data: Any, dp: Any, g: torch.Generator) -> tuple[torch.nn.Module, float]:
            out, loss = inner(model, data, dp, g)
            trained[site] = model_vector(out)[1]
            return out, loss

        return fn

    updates = {s: site_round(1, ToyNet, d, None, settings, site_keys, tmp_path / s, capturing(s))
               for s, d in _data().items()}
    first = next(iter(updates.values())).meta
    report = aggregate_round([u.to_record() for u in updates.values()], [], 3,
                             _expectation(first, site_keys, 1, settings.encoding), public, min_updates=3)
    assert report.accepted == sorted(SITES) and report.global_model is not None
    expected = sum(SITES[s] * trained[s] for s in SITES) / sum(SITES.values())
    model = ToyNet()
    apply_global_model(model, report.global_model, site_keys)
    got = model_vector(model)[1]
    # CKKS at scale 2^40 is far better than 1e-4; float32 (plain) payloads set the floor of the plain path
    rel = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    assert rel < (1e-4 if mode == "he" else 1e-6), rel
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    # the sites' models differ: the aggregate is not just one of them
    assert all(np.linalg.norm(trained[s] - expected) > 1e-3 for s in SITES)


@pytest.mark.slow
def test_dp_he_rounds_keep_ledger_and_audit(tmp_path: Path, keys: tuple[SiteKeys, Any]) -> None:
    site_keys, public = keys
    settings = ClientSettings(mode="dp-he", local_epochs=1, batch_size=8, noise_multiplier=1.1, epsilon_budget=50.0,
                              accountant="rdp")
    data = _data()
    global_model = None
    for round_ in (1, 2):
        updates = [site_round(round_, ToyNet, d, global_model, settings, site_keys, tmp_path / s,
                              toy_train_fn(batch_size=settings.batch_size))
                   for s, d in data.items()]
        report = aggregate_round([u.to_record() for u in updates], [], 3,
                                 _expectation(updates[0].meta, site_keys, round_, "ckks"), public, min_updates=2)
        global_model = report.global_model
        assert {r.site for r in report.ledger} == set(SITES)
        assert all(np.isnan(u.meta.train_loss) for u in updates)  # a non-DP statistic never leaves the site
    for site, n in SITES.items():
        rows = read_ledger(tmp_path / site / "privacy_ledger.csv")
        assert [r.round for r in rows] == [1, 2]
        batches = -(-n // settings.batch_size)
        assert rows[0].steps == batches and rows[0].sample_rate == pytest.approx(1 / batches)
        assert 0 < rows[0].epsilon < rows[1].epsilon < settings.epsilon_budget
        assert verify_chain(tmp_path / site / "federation_audit.jsonl") == []


def test_budget_refused_before_training(tmp_path: Path, keys: tuple[SiteKeys, Any]) -> None:
    site_keys, _ = keys
    settings = ClientSettings(mode="dp-he", local_epochs=5, batch_size=8, noise_multiplier=0.7, epsilon_budget=1.0,
                              accountant="rdp")
    touched = []

    def spy(*args: Any) -> Any:
        touched.append(1)
        return toy_train_fn()(*args)

    with pytest.raises(PrivacyBudgetExhausted, match="S01"):
        site_round(1, ToyNet, _data()["S01"], None, settings, site_keys, tmp_path / "S01", spy)
    assert not touched
    assert read_ledger(tmp_path / "S01" / "privacy_ledger.csv") == []


def test_global_model_of_another_model_refused(tmp_path: Path, keys: tuple[SiteKeys, Any]) -> None:
    site_keys, public = keys
    settings = ClientSettings(mode="he")
    update = site_round(1, ToyNet, _data()["S01"], None, settings, site_keys, tmp_path, toy_train_fn())
    report = aggregate_round([update.to_record()], [], 1, _expectation(update.meta, site_keys, 1, "ckks"), public, 1)
    assert report.global_model is not None
    with pytest.raises(ContextMismatchError, match="layout"):
        apply_global_model(ToyNet(hidden=4), report.global_model, site_keys)


def _one_private_epoch(engine: object, device: torch.device, secure: bool) -> torch.Tensor:
    """One seeded DP-SGD epoch of a linear model; the caller's noise generator is seeded identically each time."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1).to(device)
    data = TensorDataset(torch.randn(64, 4, generator=torch.Generator().manual_seed(1)), torch.zeros(64))
    loader = DataLoader(data, batch_size=16, generator=torch.Generator().manual_seed(2))
    model, optimizer, loader = engine.make_private(  # type: ignore[attr-defined]
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), data_loader=loader,
        noise_multiplier=1.0, max_grad_norm=1.0, noise_generator=torch.Generator(device=device).manual_seed(3))
    assert optimizer.secure_mode == secure  # Opacus' floating-point-attack-resistant sampler in the secure engine
    for x, y in loader:
        optimizer.zero_grad()
        ((model(x.to(device)).squeeze(-1) - y.to(device)) ** 2).mean().backward()
        optimizer.step()
    return torch.cat([p.detach().flatten().cpu() for p in model.parameters()])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA only: the noise generator lives on the parameters' device"))])
def test_secure_noise_ignores_the_callers_seed(device: str) -> None:
    """Issue 14: deployment noise comes from a CSPRNG-seeded source in Opacus' secure mode; the seeded engine
    (benchmarks, tests) reproduces itself exactly from the same seeds."""
    from opacus import PrivacyEngine

    dev = torch.device(device)
    assert ClientSettings().secure_noise  # the default
    secure = [_one_private_epoch(csprng_privacy_engine("rdp"), dev, True) for _ in range(2)]
    seeded = [_one_private_epoch(PrivacyEngine(accountant="rdp"), dev, False) for _ in range(2)]
    assert torch.equal(seeded[0], seeded[1])
    assert not torch.equal(secure[0], secure[1])
