"""Plugins import only the public plugin API listed in ``docs/plugin-api.md``.

The page's tables are the list: a module named in backticks in a table's first column is
public, with its public submodules (``modelplex.testing.upstream``); ``from modelplex import X``
is public when ``X`` is in ``modelplex.__all__`` or is a listed module. Checked here: every
plugin of this repository (``plugins/*/src``, imports inside functions and under
``TYPE_CHECKING`` included), the template rendered with each wire format, and the code examples
of ``docs/writing-a-provider.md``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "plugin-api.md"
TEMPLATE = ROOT / "cookiecutter-provider"
WIRES = ["openai-sse", "ndjson", "sse-events", "in-process"]


def public_modules() -> list[str]:
    """The modules the page lists, in its order."""
    text = PAGE.read_text(encoding="utf-8")
    return re.findall(r"^\| `(modelplex(?:\.\w+)*)` \|", text, flags=re.MULTILINE)


def listed_names() -> list[tuple[str, str]]:
    """``(module, name)`` for every name of the page's "main names" column."""
    found = []
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| `(modelplex(?:\.\w+)*)` \|.*\|(.*)\|$", line)
        if match:
            found += [(match[1], name) for name in re.findall(r"`(\w+)`", match[2])]
    return found


def is_public(module: str, public: list[str]) -> bool:
    """Whether ``module`` (not the package root) is a listed module or a public submodule of
    one."""
    if any(part.startswith("_") for part in module.split(".")):
        return False
    return any(module == m or module.startswith(m + ".") for m in public)


def imports(source: str) -> Iterator[tuple[int, str, list[str]]]:
    """``(line, module, names)`` for every absolute import of modelplex in ``source``;
    ``names`` is empty for ``import modelplex.x``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "modelplex":
                    yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] == "modelplex":
            yield node.lineno, node.module, [a.name for a in node.names]


def violations(source: str, where: str) -> list[str]:
    """What ``source`` imports from modelplex beyond the public plugin API."""
    import modelplex

    public = public_modules()
    found = []
    for line, module, names in imports(source):
        if module == "modelplex":
            for name in names:
                if name in modelplex.__all__ or is_public(f"modelplex.{name}", public):
                    continue
                found.append(f"{where}:{line}: from modelplex import {name}")
            continue
        if not is_public(module, public):
            found.append(f"{where}:{line}: {module} is not in docs/plugin-api.md")
        found += [f"{where}:{line}: {module}.{name} is private" for name in names
                  if name.startswith("_")]
    return found


def test_the_page_lists_modules() -> None:
    modules = public_modules()
    assert {"modelplex.provider", "modelplex.hookspecs", "modelplex.testing",
            "modelplex.store.sqlite"} <= set(modules)
    assert len(modules) == len(set(modules))


@pytest.mark.parametrize("module", public_modules())
def test_listed_module_exists_and_says_what_it_is(module: str) -> None:
    assert importlib.util.find_spec(module) is not None, f"{module} is listed but missing"
    doc = importlib.import_module(module).__doc__
    assert doc and doc.strip(), f"{module} has no docstring"


def test_listed_names_exist() -> None:
    missing = [f"{module}.{name}" for module, name in listed_names()
               if name not in getattr(importlib.import_module(module), "__all__", ())]
    assert not missing, "listed on the page, not in the module's __all__"


def test_the_rules() -> None:
    bad = violations("from modelplex.store.conversations import history_of\n"
                     "from modelplex.http import _parse\n"
                     "from modelplex import _bodies, ChatManager, errors\n"
                     "import modelplex.testing.upstream\n"
                     "def f():\n    from modelplex.cli import cli\n", "x.py")
    assert bad == ["x.py:1: modelplex.store.conversations is not in docs/plugin-api.md",
                   "x.py:2: modelplex.http._parse is private",
                   "x.py:3: from modelplex import _bodies",
                   "x.py:6: modelplex.cli is not in docs/plugin-api.md"]


def plugin_sources() -> list[Path]:
    return sorted(ROOT.glob("plugins/*/src/**/*.py"))


def test_plugins_are_found() -> None:
    names = {p.relative_to(ROOT).parts[1] for p in plugin_sources()}
    assert {"ollama", "openai", "server", "redis", "llamacpp"} <= names


def test_in_tree_plugins_import_only_the_public_api() -> None:
    bad = [v for path in plugin_sources()
           for v in violations(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("wire", WIRES)
def test_the_template_imports_only_the_public_api(wire: str, tmp_path: Path) -> None:
    cookiecutter_main = pytest.importorskip("cookiecutter.main")
    package = Path(cookiecutter_main.cookiecutter(
        str(TEMPLATE), no_input=True, output_dir=str(tmp_path),
        extra_context={"provider_name": "acme", "wire_format": wire}))
    sources = sorted(package.rglob("*.py"))
    assert len(sources) >= 4
    bad = [v for path in sources
           for v in violations(path.read_text(encoding="utf-8"), path.name)]
    assert not bad, "\n".join(bad)


def test_the_authoring_guide_imports_only_the_public_api() -> None:
    text = (ROOT / "docs" / "writing-a-provider.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks
    bad = [v for i, block in enumerate(blocks)
           for v in violations(block, f"writing-a-provider.md block {i + 1}")]
    assert not bad, "\n".join(bad)
