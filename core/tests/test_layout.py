"""The core's layout: no import cycles among its modules, and every module says what it does.

The import graph is built from the source, not by importing: an edge for every
``import``/``from ... import`` of a core module, at the top of a module or inside a function
(a cycle closed inside a function is still a cycle a reader has to untangle), but not under
``if TYPE_CHECKING:`` (never run). ``from pkg import name`` is an edge to ``pkg`` and, when
``name`` is a module, to it too; the package root ``modelplex`` (lazy names only) is left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "modelplex"
ROOT = "modelplex"

#: Cycles that another branch of the same issue removes; each entry must go when it does (the
#: test fails on a listed cycle that no longer exists, so the list only shrinks).
KNOWN_CYCLES: list[frozenset[str]] = []


def module_files() -> dict[str, Path]:
    """Dotted name -> file, for every module of the core package."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = [ROOT, *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` refers to: itself, else its longest known prefix."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(module: str, is_package: bool, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            here = module.split(".") if is_package else module.split(".")[:-1]
            here = here[: len(here) - (node.level - 1)]
            base = ".".join([*here, base] if base else here)
        return [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return []


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the core modules it imports (see the module docstring for the rules)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"

        def visit(node: ast.AST, name: str = name, is_package: bool = is_package) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _is_type_checking(child):
                    for other in child.orelse:  # the else branch does run
                        visit(other)
                    continue
                for target in _imported(name, is_package, child):
                    found = _known(target, modules)
                    if found is not None and found not in (name, ROOT):
                        graph[name].add(found)
                visit(child)

        visit(ast.parse(path.read_text(encoding="utf-8")))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


def _short(component: frozenset[str]) -> frozenset[str]:
    return frozenset(m.removeprefix(ROOT + ".") for m in component)


def test_the_graph_sees_what_it_should() -> None:
    modules = module_files()
    assert {"modelplex.cli", "modelplex.cli.chat", "modelplex.store.sqlite"} <= set(modules)
    graph = import_graph(modules)
    assert "modelplex.cli.chat" in graph["modelplex.cli"]  # from modelplex.cli.chat import
    assert "modelplex.store.migrations" in graph["modelplex.store.logs"]
    assert "modelplex.manager" in graph["modelplex.cli.chat"]  # inside a function: counts
    assert "modelplex.provider" not in graph["modelplex.cli._common"]  # TYPE_CHECKING only


def test_cycle_finder() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set()}
    assert sorted(map(sorted, cycles(graph))) == [["a", "b", "c"], ["d", "e"]]


def test_no_import_cycles() -> None:
    found = [_short(c) for c in cycles(import_graph(module_files()))]
    new = [sorted(c) for c in found if c not in KNOWN_CYCLES]
    assert not new, f"import cycles: {new}"
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"these cycles are gone: remove them from KNOWN_CYCLES: {gone}"


@pytest.mark.parametrize("name", sorted(module_files()))
def test_every_module_opens_with_what_it_does(name: str) -> None:
    doc = ast.get_docstring(ast.parse(module_files()[name].read_text(encoding="utf-8")))
    assert doc, f"{name} has no docstring"
    first = doc.strip().splitlines()[0]
    assert len(first.split()) >= 3, f"{name}: the docstring's first line says too little"
