"""The house's import rules (ARCHITECTURE "Rules of the house"), checked on the source with ``ast``.

Every ``import`` and ``from … import`` counts, at module level, inside functions and under ``TYPE_CHECKING``
alike: a deferred import is still a dependency, and a ``TYPE_CHECKING`` one still ties the two modules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("synth", "fl_client", "fl_server", "evaluation", "radiomics", "models", "privacy")
PACKAGES = ("fedresponse", *LIBRARIES)
# (package, packages of ours it must never import)
FORBIDDEN = [(lib, ("fedresponse",)) for lib in LIBRARIES] + [
    ("fl_server", ("fl_client",)),
    *[(lib, ("fl_client", "fl_server")) for lib in ("models", "radiomics", "privacy")],
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every absolute import in ``path``; ``from a import b`` gives ``a`` and ``a.b``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _graph() -> dict[str, set[str]]:
    """Module → the modules of ours it imports (package ``__init__`` edges implied by a dotted name are left out)."""
    modules = _modules()
    return {name: {dep for _, dep in _imports(path) if dep in modules and dep != name}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


@pytest.mark.parametrize(("package", "forbidden"), FORBIDDEN)
def test_library_packages_do_not_import_upwards(package: str, forbidden: tuple[str, ...]) -> None:
    bad = [f"{path.relative_to(ROOT)}:{line} imports {name}"
           for path in sorted((ROOT / package).rglob("*.py")) for line, name in _imports(path)
           if name.split(".")[0] in forbidden]
    assert not bad, f"{package} must not import {forbidden} (ARCHITECTURE, rules of the house): {bad}"


def test_no_import_cycles_between_our_modules() -> None:
    assert _cycles(_graph()) == []


@pytest.mark.parametrize(("graph", "expected"), [
    ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}}, [["a", "b", "c"]]),
])
def test_cycle_finder_on_known_graphs(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert _cycles(graph) == expected


def test_the_two_former_cycles_are_gone() -> None:
    """Issue 13: ``commands.train`` ↔ ``federation`` and ``radiomics.interpolation`` ↔ ``preprocess``."""
    graph = _graph()
    assert "fedresponse.commands.train" not in graph["fedresponse.federation"]
    assert "radiomics.preprocess" not in graph["radiomics.interpolation"]
    assert "radiomics.interpolation" in graph["radiomics.preprocess"]  # the one direction that stays


@pytest.mark.parametrize("module", ["radiomics.interpolation", "fedresponse.federation", "fedresponse.featurize",
                                    "fedresponse.stages.evaluate", "fedresponse.commands.train"])
def test_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    result = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def test_every_demo_stage_lives_in_the_cli_package_and_resolves() -> None:
    from fedresponse.demo import STAGES, _resolve

    for name, spec in STAGES:
        assert spec.startswith("fedresponse.stages."), f"stage {name!r} runs {spec}: stages live in fedresponse.stages"
        assert callable(_resolve(spec))
    left = [str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("demo_stage.py")]
    assert not left, f"demo stages live in fedresponse/stages/, not {left}"
