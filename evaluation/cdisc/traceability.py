"""The regeneration programs shipped in the submission package (DOMAIN §3, traceability).

A reviewer must regenerate the analysis datasets from the tabulation datasets with the submitted code, in an
environment holding only pandas and pyreadstat. The package therefore ships *the very modules that derived
ADaM* — :mod:`evaluation.cdisc.adam` and everything of ours it imports, found by reading their imports —
flattened into one folder with their ``evaluation.*`` imports rewritten to the sibling files, plus:

- ``study_protocol.py`` in place of :mod:`evaluation.protocol` (which needs pydantic and PyYAML): it reads
  ``study.json``, the protocol values the export writes beside a copy of ``study.yaml`` (same content; JSON
  because the standard library reads it — the decision is documented in docs/cdisc.md);
- ``derive_adam.py``, the driver: SDTM XPT → ADaM, compared with the submitted ADaM XPT files;
- ``results.py``: ADaM XPT → the headline ORR and median PFS with their intervals, formulas written out (no
  statistics package), compared with the package's ``adam/results.json``;
- ``populations.csv`` when the sites' stores hold analysis-population flags (:mod:`evaluation.populations`):
  they are derived at each site from its eligibility assessment, edit-check queries and image QC, none of
  which SDTM carries, so the program takes them as an input (one row per subject: USUBJID, SITEID, the
  flags and EXCLREAS) rather than pretending to re-derive them.

A module that imports anything else of the platform's (or a third-party package besides numpy/pandas/
pyreadstat) cannot stand alone: :func:`write_programs` refuses it, naming the import.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import yaml

from evaluation.exceptions import CdiscExportError
from evaluation.protocol import StudyProtocol, configs_dir, load_protocol

ROOT_MODULE = "evaluation.cdisc.adam"
PROTOCOL_MODULE = "evaluation.protocol"
SHIPPED_PROTOCOL = "study_protocol"
ALLOWED_THIRD_PARTY = frozenset({"numpy", "pandas", "pyreadstat"})
_PROGRAMS = Path(__file__).with_name("programs")
_REPO = Path(__file__).resolve().parents[2]


def _module_file(module: str) -> Path:
    path = _REPO.joinpath(*module.split(".")).with_suffix(".py")
    if not path.exists():
        raise CdiscExportError(f"cannot ship {module}: {path} not found")
    return path


def _imports(source: str) -> set[str]:
    """Top-level names of every module ``source`` imports (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def shipped_modules() -> dict[str, str]:
    """``{module: shipped file stem}`` for the derivation code: ``evaluation.cdisc.adam`` and its closure over
    our own imports; :class:`CdiscExportError` for an import that cannot run in the reviewer's environment."""
    todo: list[str] = [ROOT_MODULE]
    seen: dict[str, str] = {}
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        stem = module.rsplit(".", 1)[-1]
        if stem in seen.values() or stem in (SHIPPED_PROTOCOL, "derive_adam", "results"):
            raise CdiscExportError(f"two shipped modules would both be {stem}.py ({module}); rename one")
        seen[module] = stem
        for name in _imports(_module_file(module).read_text(encoding="utf-8")):
            top = name.split(".")[0]
            if name == PROTOCOL_MODULE or top == "__future__" or top in sys.stdlib_module_names:
                continue
            if top == "evaluation":
                todo.append(name)
            elif top not in ALLOWED_THIRD_PARTY:
                raise CdiscExportError(f"{module} imports {name}, which the reviewer's environment (pandas + "
                                       f"pyreadstat) lacks; keep {ROOT_MODULE} and its imports to "
                                       f"{sorted(ALLOWED_THIRD_PARTY)} and the standard library")
    return seen


def _rewrite(source: str, modules: dict[str, str]) -> str:
    def repl(match: re.Match[str]) -> str:
        name = match["module"]
        target = SHIPPED_PROTOCOL if name == PROTOCOL_MODULE else modules.get(name)
        if target is None:
            raise CdiscExportError(f"cannot rewrite import of {name}")
        return f"{match['indent']}from {target} import"

    return re.sub(r"^(?P<indent>[ \t]*)from (?P<module>evaluation(?:\.\w+)+) import", repl, source, flags=re.M)


def protocol_values(protocol: StudyProtocol) -> dict[str, object]:
    """The protocol as plain JSON values (what ``study.json`` holds)."""
    return json.loads(protocol.model_dump_json())


def write_programs(folder: Path, protocol: StudyProtocol, populations: pd.DataFrame | None = None) -> list[Path]:
    """Write the standalone regeneration programs and the protocol files into ``folder``; return the files.

    ``populations``: the sites' analysis-population flags ADSL was built with (written as ``populations.csv``).

    ``study.yaml`` is the configured protocol file when ``protocol`` is it, else ``protocol`` written as YAML.
    """
    folder.mkdir(parents=True, exist_ok=True)
    modules = shipped_modules()
    written = []
    for module, stem in sorted(modules.items()):
        header = f"# Shipped copy of {module} (imports of our modules rewritten to sibling files).\n"
        text = _rewrite(_module_file(module).read_text(encoding="utf-8"), modules)
        (folder / f"{stem}.py").write_text(header + text, encoding="utf-8")
        written.append(folder / f"{stem}.py")
    for name in (f"{SHIPPED_PROTOCOL}.py", "derive_adam.py", "results.py"):
        shutil.copy2(_PROGRAMS / name, folder / name)
        written.append(folder / name)
    default = configs_dir() / "study.yaml"
    if load_protocol(default) == protocol:
        shutil.copy2(default, folder / "study.yaml")
    else:
        (folder / "study.yaml").write_text(yaml.safe_dump(protocol_values(protocol), sort_keys=False,
                                                          allow_unicode=True), encoding="utf-8")
    (folder / "study.json").write_text(json.dumps(protocol_values(protocol), indent=2) + "\n", encoding="utf-8")
    written += [folder / "study.yaml", folder / "study.json"]
    if populations is not None:
        populations.to_csv(folder / "populations.csv", index=False)
        written.append(folder / "populations.csv")
    return written
