"""The layers import one way (docs/architecture.md), and oprl installs under one import name.

An import-linter contract cannot see this layout (the folders simulators/, solvers/ and
policies/ install as oprl.simulators, ... through setuptools' package-dir, which import-linter's
graph builder does not follow), so this test reads every module's imports with `ast`, lazy
imports inside functions included, and checks them against the layer table below.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
# import name -> folder, as pyproject.toml's [tool.setuptools.package-dir] maps them
FOLDERS = {"oprl": "oprl", "oprl.simulators": "simulators", "oprl.solvers": "solvers",
           "oprl.policies": "policies"}
# bottom to top; a module may import its own layer and the layers below it. Names in one
# tuple are independent siblings: they may not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("oprl.core", "oprl.result", "oprl.nn", "oprl.data"),
    ("oprl.simulators",),
    ("oprl.solvers", "oprl.policies"),
    ("oprl.algorithms",),
    ("oprl",),  # API, CLI, evaluation, sweeps, reports, registry: everything else
]
INDEPENDENT = {("oprl.solvers", "oprl.policies"), ("oprl.policies", "oprl.solvers")}
GENERIC_NAMES = ("simulators", "solvers", "policies")


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts])
            if name in FOLDERS and package != name:  # e.g. a stray oprl/simulators folder
                raise AssertionError(f"{path} shadows the package {name}")
            out[name] = path
    return out


def imported(path: Path, name: str, known: set[str] | frozenset = frozenset()) -> set[str]:
    """Every module ``name`` imports, wherever in the file (resolved relative imports);
    ``from package import module`` counts as importing the module, not the package, when the
    module is ``known``."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            submodules = {f"{base}.{a.name}" for a in node.names} & set(known)
            out.update(submodules)
            if len(submodules) < len(node.names):
                out.add(base)
    return out


def layer_of(module: str) -> tuple[int, str]:
    best = (-1, "", "")
    for level, group in enumerate(LAYERS):
        for prefix in group:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best[2]):
                best = (level, prefix, prefix)
    return best[0], best[1]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {m for m in imported(path, name, set(mods)) if m in mods and m != name}
            for name, path in mods.items()}


def test_every_import_goes_down_or_sideways(graph):
    bad = []
    for importer, targets in graph.items():
        lo, lo_group = layer_of(importer)
        for target in targets:
            hi, hi_group = layer_of(target)
            if hi > lo or (lo_group, hi_group) in INDEPENDENT:
                bad.append(f"{importer} imports {target} ({hi_group} is not below {lo_group})")
    assert not bad, "\n".join(bad)


def test_no_import_cycles_between_modules(graph):
    # Tarjan-free check: a module may not reach itself through the imports of others
    def reach(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph.get(m, ()))
        return seen

    # a package's __init__ re-exporting its submodules is not a cycle of concepts
    def parent_child(a: str, b: str) -> bool:
        return a.startswith(b + ".") or b.startswith(a + ".")

    cycles = sorted(m for m in graph if any(
        m in reach(t) and not parent_child(m, t) for t in graph[m]))
    assert not cycles, f"modules in an import cycle: {cycles}"


def test_no_generic_top_level_names_are_imported():
    """Package code, tests, benchmarks and scripts import oprl.simulators, never simulators."""
    bad = []
    for path in itertools.chain(*(ROOT.joinpath(d).rglob("*.py") for d in
                                  ("oprl", "simulators", "solvers", "policies", "tests",
                                   "benchmarks", "scripts", "examples"))):
        for m in imported(path, "x.y"):
            if m.split(".")[0] in GENERIC_NAMES:
                bad.append(f"{path.relative_to(ROOT)}: {m}")
    assert not bad, "\n".join(bad)


def test_pyproject_installs_every_package_under_oprl():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == FOLDERS
    on_disk = sorted(n for n, p in modules().items() if p.name == "__init__.py")
    assert sorted(config["packages"]) == on_disk


def test_the_layer_check_catches_an_upward_import(tmp_path, graph):
    """The check is not vacuous: an import of the API from a simulator is reported."""
    graph = {**graph, "oprl.simulators.inventory": graph["oprl.simulators.inventory"] | {"oprl.api"}}
    with pytest.raises(AssertionError, match="oprl.simulators.inventory imports oprl.api"):
        test_every_import_goes_down_or_sideways(graph)
