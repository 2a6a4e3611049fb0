"""The regeneration programs of the package stand alone: they import only the standard library, numpy, pandas,
pyreadstat and each other, and — in a fresh virtual environment holding only pandas and pyreadstat (the repo's
pins) — regenerate every ADaM dataset of the package from its SDTM XPT files and the shipped protocol."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import yaml
from test_cdisc import _read, _source

from evaluation.cdisc.export import export_cdisc
from evaluation.cdisc.traceability import shipped_modules
from evaluation.exceptions import CdiscExportError

PINS = ("pandas==2.3.3", "pyreadstat==1.3.7")  # = pyproject.toml


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("programs")
    return export_cdisc(_source(root / "src", cuts=True), root / "out")


def test_pins_match_the_project() -> None:
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    assert all(f'"{pin}"' in text for pin in PINS)


def test_programs_import_only_what_the_reviewer_has(package: dict[str, Path]) -> None:
    folder = package["programs"]
    siblings = {p.stem for p in folder.glob("*.py")}
    assert {"derive_adam", "results", "adam", "pfs", "bor", "study_protocol"} <= siblings
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in siblings | {"numpy", "pandas", "pyreadstat"}, (
                    path.name, name)


def test_shipped_protocol_json_is_the_yaml(package: dict[str, Path]) -> None:
    folder = package["programs"]
    from_yaml = yaml.safe_load((folder / "study.yaml").read_text(encoding="utf-8"))
    from_json = json.loads((folder / "study.json").read_text(encoding="utf-8"))
    assert {k: v for k, v in from_json.items() if k in from_yaml} == json.loads(json.dumps(from_yaml))


def test_a_module_that_cannot_stand_alone_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import evaluation.cdisc.traceability as traceability

    fake = tmp_path / "evaluation" / "cdisc" / "adam.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("import torch\n", encoding="utf-8")
    monkeypatch.setattr(traceability, "_REPO", tmp_path)
    with pytest.raises(CdiscExportError, match="imports torch"):
        shipped_modules()


@pytest.mark.slow  # a venv and a pip install of pandas + pyreadstat (~1-2 min; pip's cache makes reruns faster)
def test_regenerates_adam_in_a_fresh_venv_with_only_pandas_and_pyreadstat(package: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PINS],
                             capture_output=True, text=True, env=env, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    for absent in ("yaml", "pydantic", "evaluation", "fedresponse"):  # nothing of the platform is importable
        probe = subprocess.run([str(python), "-I", "-c", f"import {absent}"], capture_output=True, env=env,
                               cwd=tmp_path)
        assert probe.returncode != 0, absent
    root = package["programs"].parents[1]
    run = subprocess.run([str(python), "-I", "adam/programs/derive_adam.py", "sdtm", "adam", str(tmp_path / "regen")],
                         capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("MATCHES") == 3
    for name in ("adsl", "adrs", "adtte"):  # independently: the regenerated CSV equals the submitted XPT
        regenerated = pd.read_csv(tmp_path / "regen" / f"{name}.csv", dtype=str, keep_default_na=False)
        submitted = _read(package[name])
        assert list(regenerated.columns) == list(submitted.columns)
        for column in submitted.columns:
            if submitted[column].dtype == object:
                assert regenerated[column].tolist() == submitted[column].tolist(), column
            else:
                numbers = pd.to_numeric(regenerated[column].replace("", None)).astype(float)
                pd.testing.assert_series_equal(numbers, submitted[column], check_names=False, rtol=1e-9)
    # the headline results from the ADaM files alone agree with the package's results.json
    results = subprocess.run([str(python), "-I", "adam/programs/results.py", "adam", str(tmp_path / "results.json")],
                             capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert results.returncode == 0 and "results MATCH" in results.stdout, results.stdout + results.stderr
    # a tampered SDTM value shows up as a difference
    broken = tmp_path / "broken"
    (broken / "sdtm").mkdir(parents=True)
    for path in (root / "sdtm").glob("*.xpt"):
        (broken / "sdtm" / path.name).write_bytes(path.read_bytes())
    dm = (broken / "sdtm" / "dm.xpt").read_bytes().replace(b"FEDRESP-S01-0001", b"FEDRESP-S01-0009")
    (broken / "sdtm" / "dm.xpt").write_bytes(dm)
    bad = subprocess.run([str(python), "-I", str(root / "adam/programs/derive_adam.py"), str(broken / "sdtm"),
                          str(root / "adam"), str(broken / "regen")], capture_output=True, text=True, env=env,
                         timeout=300)
    assert bad.returncode == 1 and "DIFFERS FROM" in bad.stdout, bad.stdout + bad.stderr


def _shipped(name: str) -> ModuleType:
    path = Path(__file__).parents[2] / "evaluation" / "cdisc" / "programs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"shipped_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("k", "n"), [(0, 10), (1, 10), (3, 10), (10, 10), (17, 36), (15, 36), (250, 500), (1, 1)])
def test_shipped_clopper_pearson_matches_the_beta_quantiles(k: int, n: int) -> None:
    from scipy.stats import beta

    low, high = _shipped("results").clopper_pearson(k, n)
    assert low == pytest.approx(0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1), abs=1e-9)
    assert high == pytest.approx(1.0 if k == n else beta.ppf(0.975, k + 1, n - k), abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_shipped_kaplan_meier_median_matches_lifelines_and_ours(seed: int) -> None:
    from lifelines import KaplanMeierFitter

    from evaluation.survival import kaplan_meier, median_survival, risk_table

    rng = np.random.default_rng(seed)
    days = np.ceil(rng.exponential(150, 40)).tolist()
    events = (rng.random(40) < 0.7).astype(int).tolist()
    shipped = _shipped("results")
    times, surv, low, high = shipped.kaplan_meier(days, events, shipped.normal_quantile(0.975))
    fitter = KaplanMeierFitter().fit(days, events)
    np.testing.assert_allclose(surv, fitter.survival_function_.loc[times].to_numpy().ravel(), atol=1e-12)
    km = kaplan_meier(risk_table(days, events))
    median, (lo, hi) = median_survival(km)
    got = shipped.median(times, surv)
    assert (got if got is not None else np.inf) == median
    assert [shipped._first_at_or_below(times, c, 0.5) or np.inf for c in (low, high)] == [lo, hi]


def test_site_population_flags_travel_with_the_programs(tmp_path: Path) -> None:
    """A store with populations.csv: ADSL carries its flags, the package ships them, and the program
    regenerates ADSL (flags included) from SDTM + that file; here with this interpreter (isolated mode)."""
    src = _source(tmp_path / "cohort") / "S01"
    store = tmp_path / "stores" / "S01"
    (store / "assessment").mkdir(parents=True)
    (store / "store.json").write_text("{}")
    crf = pd.read_csv(src / "crf.csv", dtype=str, keep_default_na=False)
    crf.to_parquet(store / "crf.parquet")
    pd.read_csv(src / "reads.csv", keep_default_na=False, na_values=[""]).to_parquet(store / "measurements.parquet")
    flags = pd.DataFrame({"USUBJID": crf["USUBJID"], "SITEID": "S01", "ITTFL": "Y", "ELIGFL": ["Y", "N", "Y"],
                          "EFFFL": ["Y", "N", "Y"], "PFSFL": ["Y", "N", "N"],
                          "EXCLREAS": ["", "other malignancy", "PFS: unresolved hard query"]})
    flags.to_csv(store / "assessment" / "populations.csv", index=False)
    paths = export_cdisc(store, tmp_path / "out")
    adsl = _read(paths["adsl"])
    assert adsl[["ELIGFL", "EFFFL", "PFSFL", "EXCLREAS"]].values.tolist() == flags[
        ["ELIGFL", "EFFFL", "PFSFL", "EXCLREAS"]].values.tolist()
    assert (paths["programs"] / "populations.csv").exists()
    assert "adam/programs/populations.csv" in paths["guide"].read_text(encoding="utf-8")
    root = paths["programs"].parents[1]
    run = subprocess.run([sys.executable, "-I", "adam/programs/derive_adam.py", "sdtm", "adam", str(tmp_path / "r")],
                         capture_output=True, text=True, cwd=root, timeout=300)
    assert run.returncode == 0 and run.stdout.count("MATCHES") == 3, run.stdout + run.stderr
    (paths["programs"] / "populations.csv").unlink()  # without the sites' flags ADSL cannot be regenerated
    again = subprocess.run([sys.executable, "-I", "adam/programs/derive_adam.py", "sdtm", "adam", str(tmp_path / "r")],
                           capture_output=True, text=True, cwd=root, timeout=300)
    assert again.returncode == 1 and "adsl.ELIGFL" in again.stdout, again.stdout
