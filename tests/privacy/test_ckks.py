"""CKKS key ceremony and packing: the contract sites and the coordinating centre share."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from privacy.ckks import (
    PUBLIC_CONTEXT,
    SECRET_CONTEXT,
    CkksParameters,
    KeyInfo,
    ParameterLayout,
    chunk_count,
    create_context,
    decrypt_vector,
    encrypt_vector,
    load_ciphertext,
    load_public_context,
    load_site_context,
    write_key_files,
)
from privacy.exceptions import InsecureParametersError, KeyFileError, PackingError, SecretKeyPresentError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keys")
    write_key_files(out)
    return out


def test_key_files_modes_and_secret_split(keydir: Path) -> None:
    secret, public = keydir / SECRET_CONTEXT, keydir / PUBLIC_CONTEXT
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert load_site_context(secret).has_secret_key()
    assert not load_public_context(public).has_secret_key()
    # the public context is small because it carries no Galois keys
    assert public.stat().st_size < 4 * 1024 * 1024
    site_info, server_info = KeyInfo.read(secret.parent / "keyinfo.json"), KeyInfo.read(public.parent / "keyinfo.json")
    assert site_info.key_id == server_info.key_id and len(site_info.key_id) == 32


def test_ceremony_refuses_to_overwrite(keydir: Path) -> None:
    with pytest.raises(KeyFileError, match="already exist"):
        write_key_files(keydir)


def test_server_refuses_a_context_with_secret_key(keydir: Path) -> None:
    with pytest.raises(SecretKeyPresentError, match="secret key"):
        load_public_context(keydir / SECRET_CONTEXT)


def test_site_refuses_group_readable_key(keydir: Path, tmp_path: Path) -> None:
    loose = tmp_path / "secret.ctx"
    loose.write_bytes((keydir / SECRET_CONTEXT).read_bytes())
    os.chmod(loose, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_site_context(loose)


def test_site_refuses_public_file(keydir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "public_as_secret.ctx"
    copy.write_bytes((keydir / PUBLIC_CONTEXT).read_bytes())
    os.chmod(copy, 0o600)
    with pytest.raises(KeyFileError, match="no secret key"):
        load_site_context(copy)


@pytest.mark.parametrize(
    ("n", "sizes", "match"),
    [
        (8192, (60, 60, 60, 60), "below 128-bit"),  # 240 bits > 218 allowed at N=8192
        (4096, (60, 60), "below 128-bit"),  # 120 > 109
        (3000, (60, 60), "one of"),
        (8192, (60,), "special prime"),
        (8192, (45, 60), "no room above the scale"),
    ],
)
def test_insecure_or_unusable_parameters_refused(n: int, sizes: tuple[int, ...], match: str) -> None:
    with pytest.raises(InsecureParametersError, match=match):
        CkksParameters(poly_modulus_degree=n, coeff_mod_bit_sizes=sizes)


def test_he_standard_boundary_is_inclusive() -> None:
    # exactly 218 bits at N=8192 is allowed by the HE standard table
    assert CkksParameters(8192, (60, 40, 58, 60)).poly_modulus_degree == 8192


def test_layout_roundtrip_and_digest() -> None:
    rng = np.random.default_rng(0)
    arrays = {"a.weight": rng.normal(size=(3, 4)), "a.bias": rng.normal(size=(3,)), "b": rng.normal(size=(2, 2, 2))}
    layout = ParameterLayout.from_arrays(arrays)
    assert layout.size == 12 + 3 + 8
    back = layout.unflatten(layout.flatten(arrays))
    for name, value in arrays.items():
        np.testing.assert_array_equal(back[name], value)
    other = ParameterLayout.from_arrays({"a.weight": arrays["a.weight"], "a.bias": np.zeros(4), "b": arrays["b"]})
    assert other.digest != layout.digest
    with pytest.raises(PackingError, match="shape"):
        layout.flatten({**arrays, "a.bias": np.zeros(4)})


@pytest.mark.parametrize("sizes", [(60, 60), (60, 40, 40, 60)])
@pytest.mark.parametrize("length", [1, 4096, 4097, 10_000])
def test_encrypt_decrypt_roundtrip_lands_on_last_prime(sizes: tuple[int, ...], length: int) -> None:
    params = CkksParameters(8192, sizes)
    ctx = create_context(params)
    x = np.random.default_rng(length).normal(scale=3.0, size=length)
    chunks = encrypt_vector(ctx, x, params)
    assert len(chunks) == chunk_count(length, params)
    for data in chunks:
        assert load_ciphertext(ctx, data).ciphertext()[0].coeff_modulus_size() == 1
        assert len(data) <= params.max_ciphertext_bytes
    np.testing.assert_allclose(decrypt_vector(ctx, chunks, length), x, atol=1e-4)


def test_ciphertext_bytes_within_ten_times_float32() -> None:
    params = CkksParameters()
    ctx = create_context(params)
    chunks = encrypt_vector(ctx, np.ones(params.slots * 3), params)
    ratio = sum(len(c) for c in chunks) / (params.slots * 3 * 4)
    assert ratio <= 10.0, ratio


@pytest.mark.parametrize(
    ("vector", "match"),
    [
        (np.array([1.0, np.nan]), "non-finite"),
        (np.array([1.0, 1e9]), "encodable bound"),
        (np.ones((2, 2)), "flat vector"),
    ],
)
def test_encrypt_refuses_bad_vectors(vector: np.ndarray, match: str) -> None:
    params = CkksParameters()
    with pytest.raises(PackingError, match=match):
        encrypt_vector(create_context(params), vector, params)


def test_fl_server_has_no_decryption_path() -> None:
    """The coordinating centre's code never decrypts and never loads a site (secret) context."""
    forbidden = re.compile(r"decrypt|secret_key\(|load_site_context|SECRET_CONTEXT|fl_client")
    offenders = []
    for path in sorted((REPO / "fl_server").rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            code = line.split("#", 1)[0]
            if forbidden.search(code) and not code.strip().startswith(('"', "'")):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_keys_init_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedresponse.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["keys", "init", "--out", str(tmp_path / "k")])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((tmp_path / "k" / SECRET_CONTEXT).stat().st_mode) == 0o600
    assert not load_public_context(tmp_path / "k" / PUBLIC_CONTEXT).has_secret_key()
    again = runner.invoke(app, ["keys", "init", "--out", str(tmp_path / "k")])
    assert again.exit_code == 1 and "already exist" in again.output
    weak = runner.invoke(app, ["keys", "init", "--out", str(tmp_path / "w"), "--coeff-mod-bit-sizes", "60,60,60,60"])
    assert weak.exit_code == 1 and "128-bit" in weak.output
