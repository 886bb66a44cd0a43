"""No two modules of ``tracker`` import each other, however far round, lazy imports included."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import tracker

PACKAGE = Path(tracker.__file__).parent


def module_names() -> dict[str, Path]:
    """Every module under ``tracker/`` by its dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The dotted name a ``from … import`` names, relative ones resolved against ``module``."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str, path: Path, modules: Mapping[str, Path]) -> Iterator[str]:
    """The ``tracker`` modules that ``module`` imports anywhere: at the top, in functions, in
    ``if TYPE_CHECKING:`` blocks. ``from tracker.a import b`` names ``tracker.a.b`` when that
    is a module, else ``tracker.a``. A package's ``__init__`` that runs first is not counted:
    it is the package's own business."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(node, module, is_package)
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    yield f"{target}.{alias.name}"
                elif target in modules:
                    yield target


def import_graph() -> dict[str, set[str]]:
    """Each module of ``tracker`` with the ``tracker`` modules it imports (itself left out)."""
    modules = module_names()
    return {
        name: {target for target in imports_of(name, path, modules) if target != name}
        for name, path in modules.items()
    }


def reachable(graph: Mapping[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, however far round (``start`` itself only by a circle)."""
    found: set[str] = set()
    waiting = list(graph.get(start, ()))
    while waiting:
        node = waiting.pop()
        if node not in found:
            found.add(node)
            waiting.extend(graph.get(node, ()))
    return found


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One circle per group of modules that all import each other round about, as
    ``[a, b, …, a]`` from the group's first module."""
    reach = {node: reachable(graph, node) for node in graph}
    grouped: set[str] = set()
    found: list[list[str]] = []
    for node in sorted(graph):
        if node in grouped or node not in reach[node]:
            continue
        group = {other for other in reach[node] if node in reach.get(other, ())}
        grouped |= group
        found.append(_circle(graph, group))
    return found


def _circle(graph: Mapping[str, set[str]], group: set[str]) -> list[str]:
    """A shortest way from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for target in sorted(graph[node] & group):
                if target == start:
                    return [*paths[node], start]
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no circle through {start}")  # a group of two or more has one


class TestImportGraph:
    """The modules of ``tracker`` import each other without a circle."""

    def test_no_module_imports_itself_round_about(self) -> None:
        """Every import of a tracker module, top-level or inside a function, runs one way."""
        found = cycles(import_graph())
        assert not found, "import circles: " + "; ".join(" -> ".join(c) for c in found)

    def test_the_walk_sees_imports_inside_functions(self) -> None:
        """A lazy import counts: ``cli`` imports ``views`` only inside its commands."""
        assert "tracker.views" in import_graph()["tracker.cli"]

    def test_a_circle_is_named(self) -> None:
        """A circle of three is reported as the way round, from its first module back."""
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        assert cycles(graph) == [["a", "b", "c", "a"]]


class TestTestHelpers:
    """Test helpers live in helper modules under ``tests/``, never in another test module."""

    def test_no_test_module_imports_another(self) -> None:
        """No ``test_*.py`` imports from a ``test_*`` module: shared helpers have their homes."""
        tests = PACKAGE.parent / "tests"
        found = []
        for path in sorted(tests.rglob("test_*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [alias.name for alias in node.names]
                    if isinstance(node, ast.Import)
                    else []
                )
                found += [
                    f"{path.relative_to(tests)} imports {name}"
                    for name in names
                    if name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_")
                ]
        assert found == []
