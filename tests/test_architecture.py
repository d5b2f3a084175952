"""The package layout keeps its shape: dependencies between packages point one way.

Imports are read from the source (module level and inside functions alike), so a cycle
hidden in a function-level import fails here too.
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from pathlib import Path

import rlhfkit

SRC = Path(rlhfkit.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = SRC.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every rlhfkit import in `path`."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from package import module` imports the module
            names = [
                f"{source}.{alias.name}" if _is_module(f"{source}.{alias.name}") else source
                for alias in node.names
            ]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [(name, node.lineno) for name in names if name.startswith("rlhfkit.")]
    return found


def _unit(module: str) -> str:
    """The package a module belongs to: `rlhfkit.train.rl` -> `train`; top-level modules
    (`rlhfkit.config`) are units of their own."""
    return module.split(".")[1] if module.count(".") else "rlhfkit"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _graph(unit) -> tuple[dict[str, set[str]], dict[tuple[str, str], str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], str] = {}
    for path in SRC.rglob("*.py"):
        a = unit(_module_name(path))
        for name, line in _imports(path):
            b = unit(name)
            if a != b:
                graph[a].add(b)
                where.setdefault((a, b), f"{path.relative_to(SRC.parent)}:{line}")
    return graph, where


def _explain(cycle: list[str], where: dict[tuple[str, str], str]) -> str:
    return "; ".join(f"{a} -> {b} ({where[a, b]})" for a, b in itertools.pairwise(cycle))


def test_cycle_finder_finds_a_cycle_and_none_where_there_is_none():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


LAYERS = (
    {"errors", "config", "fileio", "progress", "seeding", "stats", "tracking", "algorithms"},
    {"data"},
    {"models"},
    {"graders"},
    {"rollout"},
    {"train"},
    {"eval"},
    {"label", "pipeline"},
    {"demo", "docs", "cli_help", "cli", "rlhfkit"},
)
"""The layout of docs/architecture.md, lowest first: a package imports only from its own
layer or the ones below."""


def test_packages_import_each_other_in_one_direction():
    graph, where = _graph(_unit)
    cycle = _cycle(graph)
    assert cycle is None, f"import cycle between packages: {_explain(cycle, where)}"
    layer = {unit: i for i, units in enumerate(LAYERS) for unit in units}
    assert set(graph) | {b for bs in graph.values() for b in bs} <= set(layer), (
        "a package missing from LAYERS"
    )
    upward = [f"{a} -> {b} ({where[a, b]})" for a in graph for b in graph[a] if layer[b] > layer[a]]
    assert not upward, f"imports against the layering: {upward}"


def test_modules_within_a_package_do_not_import_each_other_in_a_cycle():
    graph, where = _graph(lambda module: module)
    cycle = _cycle(graph)
    assert cycle is None, f"import cycle between modules: {_explain(cycle, where)}"


def test_modules_and_functions_stay_small():
    """A module does one job (at most 500 lines); a function fits on a screen (60). Generated
    modules (their docstring says "do not edit") are exempt: a signature with one keyword
    per config field is as long as the config."""
    too_long = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        if "; do not edit." in (ast.get_docstring(ast.parse(text)) or ""):
            continue
        where = path.relative_to(SRC.parent)
        if len(text.splitlines()) > 500:
            too_long.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    too_long.append(f"{where}:{node.lineno} {node.name}(): {lines} lines")
    assert not too_long, too_long
