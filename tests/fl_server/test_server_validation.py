"""Update validation and the round: a malformed update is rejected with its reason, the round goes on."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tenseal as ts

from fl_server.aggregate import weighted_fedavg
from fl_server.checkpoint import load_latest, save_checkpoint
from fl_server.strategy import NotEnoughUpdates, aggregate_round
from fl_server.validation import Expectation, UpdateRejected, check_update
from privacy.ckks import (
    PUBLIC_CONTEXT,
    CkksParameters,
    ParameterLayout,
    create_context,
    decrypt_vector,
    encrypt_vector,
    load_public_context,
    write_key_files,
)
from privacy.update import ModelUpdate, UpdateMeta

LENGTH = 5000  # two chunks at N = 8192
PARAMS = CkksParameters()
LAYOUT = ParameterLayout((("w", (LENGTH,)),))


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ts.Context, ts.Context]:
    out = tmp_path_factory.mktemp("keys")
    write_key_files(out)
    from privacy.ckks import SECRET_CONTEXT, load_site_context

    return load_site_context(out / SECRET_CONTEXT), load_public_context(out / PUBLIC_CONTEXT)


def _update(secret: ts.Context, site: str, n: int, vector: np.ndarray, **meta: Any) -> ModelUpdate:
    base = UpdateMeta(site=site, round=3, num_examples=n, layout_digest=LAYOUT.digest, length=LENGTH, key_id="k1",
                      encoding="ckks", steps=10, sample_rate=0.1, noise_multiplier=1.0, delta=1e-5, epsilon=1.5,
                      accountant="rdp", train_loss=0.5)
    return ModelUpdate(replace(base, **meta), encrypt_vector(secret, vector * n, PARAMS))


EXP = Expectation(round=3, layout_digest=LAYOUT.digest, length=LENGTH, key_id="k1", encoding="ckks", params=PARAMS)


def _mutations(secret: ts.Context) -> list[tuple[str, Any, str]]:
    rng = np.random.default_rng(1)
    good = _update(secret, "S09", 10, rng.normal(size=LENGTH))
    other_ctx = create_context(PARAMS)  # another ceremony's key: same parameters
    wrong_key = ModelUpdate(replace(good.meta, key_id="k2"), encrypt_vector(other_ctx, rng.normal(size=LENGTH), PARAMS))
    big = create_context(CkksParameters(8192, (60, 40, 40, 60)))
    high_level = [ts.ckks_vector(big, [1.0] * 4096).serialize(), good.chunks[1]]
    return [
        ("wrong round", good.to_record() | {"round": 2}, "round 2, expected 3"),
        ("other ceremony", wrong_key.to_record(), "key id"),
        ("other model", good.to_record() | {"layout_digest": "ab" * 32}, "layout hash"),
        ("wrong length", good.to_record() | {"length": LENGTH - 1}, "parameters, expected"),
        ("plaintext in an HE run", good.to_record() | {"encoding": "plain"}, "encoding 'plain'"),
        ("zero examples", good.to_record() | {"num_examples": 0}, "num_examples 0"),
        ("nan epsilon", good.to_record() | {"epsilon": float("nan")}, "non-finite"),
        ("missing field", {k: v for k, v in good.to_record().items() if k != "num_examples"}, "missing"),
        ("mistyped field", good.to_record() | {"num_examples": "10"}, "must be int"),
        ("chunk dropped", good.to_record() | {"chunks": good.chunks[:1]}, "1 chunks, expected 2"),
        ("garbage chunk", good.to_record() | {"chunks": [b"\x00" * 100, good.chunks[1]]}, "does not load"),
        ("oversized chunk", good.to_record() | {"chunks": [b"\x00" * (PARAMS.max_ciphertext_bytes + 1),
                                                           good.chunks[1]]}, "bytes, allowed"),
        ("chunks swapped", good.to_record() | {"chunks": good.chunks[::-1]}, "holds 904 values, expected 4096"),
        ("not at last prime", good.to_record() | {"chunks": high_level}, "bytes, allowed|does not load|primes"),
    ]


def test_each_malformed_update_is_rejected_with_its_reason(contexts: tuple[ts.Context, ts.Context]) -> None:
    secret, public = contexts
    for _name, record, reason in _mutations(secret):
        with pytest.raises(UpdateRejected, match=reason):
            check_update(record, EXP, public)


def test_round_survives_malformed_updates(contexts: tuple[ts.Context, ts.Context],
                                          caplog: pytest.LogCaptureFixture) -> None:
    secret, public = contexts
    rng = np.random.default_rng(0)
    vectors = {"S01": rng.normal(size=LENGTH), "S02": rng.normal(size=LENGTH)}
    counts = {"S01": 30, "S02": 70}
    good = [_update(secret, s, counts[s], v).to_record() for s, v in vectors.items()]
    bad = [record | {"site": f"X{i:02d}"} for i, (_, record, _) in enumerate(_mutations(secret))]
    with caplog.at_level(logging.WARNING):
        report = aggregate_round(good + bad, ["node 7: boom"], sent=len(good) + len(bad) + 2, exp=EXP, ctx=public,
                                 min_updates=2)
    assert report.accepted == ["S01", "S02"]
    assert len(report.rejected) == len(bad) and report.errors == ["node 7: boom"] and report.missing == 1
    assert "rejected" in caplog.text
    assert report.global_model is not None and report.global_model.total_examples == 100
    mean = decrypt_vector(secret, report.global_model.chunks, LENGTH) / 100
    expected = (30 * vectors["S01"] + 70 * vectors["S02"]) / 100
    assert np.linalg.norm(mean - expected) / np.linalg.norm(expected) < 1e-4
    assert {r.site for r in report.ledger} == {"S01", "S02"}


def test_duplicate_site_and_minimum(contexts: tuple[ts.Context, ts.Context]) -> None:
    secret, public = contexts
    record = _update(secret, "S01", 5, np.ones(LENGTH)).to_record()
    with pytest.raises(NotEnoughUpdates, match="1 valid update") as info:
        aggregate_round([record, record], [], sent=3, exp=EXP, ctx=public, min_updates=2)
    assert info.value.report.rejected == {"S01": "a second update from the same site in this round"}


def test_checkpoint_roundtrip_and_crash_leaves_previous(tmp_path: Path, contexts: tuple[ts.Context, ts.Context],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    secret, public = contexts
    assert load_latest(tmp_path) is None
    checked = [check_update(_update(secret, "S01", 4, np.full(LENGTH, 0.5)).to_record(), EXP, public)]
    model = weighted_fedavg(checked, EXP)
    save_checkpoint(tmp_path, model, {"settings": {"num_rounds": 5}})
    back = load_latest(tmp_path)
    assert back is not None and back.round == 3 and back.global_model == model and back.state["settings"]
    np.testing.assert_allclose(decrypt_vector(secret, back.global_model.chunks, LENGTH) / 4, 0.5, atol=1e-6)

    def crash(*_: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr("fl_server.checkpoint.os.rename", crash)
    with pytest.raises(OSError, match="disk gone"):
        save_checkpoint(tmp_path, replace(model, round=4), {})
    latest = load_latest(tmp_path)
    assert latest is not None and latest.round == 3
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".round")]


def test_every_context_the_server_loads_is_public(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fl_server.app import ServerSettings, _keys
    from privacy.exceptions import SecretKeyPresentError

    loaded: list[ts.Context] = []
    original = ts.context_from

    def spy(data: bytes, *args: Any, **kwargs: Any) -> ts.Context:
        ctx = original(data, *args, **kwargs)
        loaded.append(ctx)
        return ctx

    monkeypatch.setattr(ts, "context_from", spy)
    write_key_files(tmp_path / "keys")
    ctx, info = _keys(ServerSettings(run_dir=tmp_path / "run", server_keys=tmp_path / "keys" / "server"))
    assert info is not None and ctx is not None
    assert loaded and all(not c.has_secret_key() for c in loaded)
    # pointed at the sites' folder by mistake, the server refuses instead of holding the secret key
    site = tmp_path / "keys" / "site"
    (site / "public.ctx").write_bytes((site / "secret.ctx").read_bytes())
    with pytest.raises(SecretKeyPresentError):
        _keys(ServerSettings(run_dir=tmp_path / "run", server_keys=tmp_path / "keys" / "site"))
