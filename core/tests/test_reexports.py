"""``from modelplex import Provider`` type-checks under ``mypy --strict`` (plugin authors' setup).

Strict mypy only sees names a package re-exports explicitly. ``modelplex/__init__.py`` imports
its public names lazily, so its type-checking imports must use the ``import X as X`` form for
every lazy name; this test reads the file instead of running mypy.
"""

from __future__ import annotations

import ast
from pathlib import Path

import modelplex

INIT = Path(modelplex.__file__)


def _reexported() -> set[str]:
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom):
                    names |= {alias.name for alias in stmt.names if alias.asname == alias.name}
    return names


def test_every_lazy_name_is_explicitly_reexported() -> None:
    lazy = set(modelplex._LAZY)
    missing = sorted(lazy - _reexported())
    assert not missing, f"write these as `Name as Name` in the TYPE_CHECKING imports: {missing}"
