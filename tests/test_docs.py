"""The documentation is tested: its examples run, and its reference pages are complete.

Conventions in ``docs/**/*.md``: an HTML comment (invisible when rendered) on the line right
before a fence marks what the tests do with the block.

``<!-- test: run -->``
    The next ```` ```python ```` block runs alone, in a fresh interpreter, and must exit 0.
    ``contains="TEXT"`` (repeatable) also requires TEXT in what it prints. An ```` ```output ````
    block right after it (only blank lines between) is what it prints, compared line by line:
    a line ``...`` matches any number of lines, and ``...`` inside a line matches any text.
    (```` ```text ```` blocks are illustrative and not compared.)
``<!-- test: file PATH -->``
    The next block is written to PATH in the page's scratch folder before the page's examples
    run. The folder is on ``PYTHONPATH``; a ``pyproject.toml`` makes its folder a package that
    is installed (``pip install --no-deps --target site``), so its entry points are found.
``<!-- test: pytest PATH -->``
    Written like ``file``, then ``python -m pytest PATH`` runs in the folder of the nearest
    ``pyproject.toml`` above it and must pass.
``<!-- test: console -->``
    Each ``$ modelplex ...`` line of the next ```` ```console ```` block runs in a shell; its
    output (stdout and stderr) must match the lines after it as ``output`` blocks do, and it
    must fail exactly when the output shows an ``Error:``. ``env="NAME=VALUE"`` sets a
    variable for the commands.

Examples that load SmolLM2 are marked ``slow``.
"""

from __future__ import annotations

import ast
import functools
import inspect
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# Pages whose marked examples are run.
EXAMPLE_PAGES = [
    "index.md",
    "python-api.md",
    "writing-a-provider.md",
    "plugin-hooks.md",
    "cli.md",
    "providers/llamacpp.md",
    "structured-output.md",
    "server.md",
    "routing.md",
    "providers/anthropic.md",
    "providers/huggingface.md",
    "caches.md",
    "conversations.md",
    "redis.md",
    "telemetry.md",
    "batch.md",
    "mcp.md",
]
# Pages whose examples talk to a real Redis server (started for them; MODELPLEX_REDIS_URL).
REDIS_PAGES = {"redis.md"}
TIMEOUT = 300

_FENCE = re.compile(r"^```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
_MARKER = re.compile(r"<!--\s*test:\s*(?P<kind>[\w-]+)\s*(?P<args>.*?)\s*-->\s*\n\Z")
_ATTR = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class Block:
    """A fenced block of a page, with its test marker if it has one."""

    page: str
    line: int
    lang: str
    body: str
    kind: str | None = None
    args: str = ""
    attrs: list[tuple[str, str]] = field(default_factory=list)
    output: str | None = None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def path(self) -> str:
        """The PATH of a ``file`` or ``pytest`` marker."""
        return self.args.split()[0]

    @property
    def slow(self) -> bool:
        return "llamacpp" in self.body or "smollm2" in self.body or (
            self.kind == "console" and "modelplex chat" in self.body
            and "-m echo" not in self.body)


@functools.cache
def page_blocks(page: str) -> list[Block]:
    """Every fenced block of a page, markers and shown output attached."""
    text = (DOCS / page).read_text(encoding="utf-8")
    blocks: list[Block] = []
    previous_end: int | None = None
    for match in _FENCE.finditer(text):
        before = text[:match.start()]
        block = Block(page=page, line=before.count("\n") + 1, lang=match["lang"],
                      body=match["body"])
        marker = _MARKER.search(before[-300:])
        if marker:
            block.kind, block.args = marker["kind"], marker["args"]
            block.attrs = _ATTR.findall(marker["args"])
        if (block.lang == "output" and blocks and previous_end is not None
                and not text[previous_end:match.start()].strip()):
            blocks[-1].output = block.body
        blocks.append(block)
        previous_end = match.end()
    return blocks


def marked(kind: str) -> list[Block]:
    return [b for page in EXAMPLE_PAGES for b in page_blocks(page) if b.kind == kind]


def params(blocks: list[Block]) -> list[object]:
    return [pytest.param(b, id=b.id, marks=[pytest.mark.slow] if b.slow else [])
            for b in blocks]


# -- matching shown output ------------------------------------------------------------------
def _normalize(text: str) -> str:
    return "".join(line.rstrip() + "\n" for line in text.strip("\n").splitlines())


def output_matches(expected: str, actual: str) -> bool:
    """Doctest-ELLIPSIS matching, by line: ``...`` alone matches any lines."""
    parts = []
    for line in _normalize(expected).splitlines():
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(r"[^\n]*".join(re.escape(p) for p in line.split("...")) + r"\n")
    return re.fullmatch("".join(parts), _normalize(actual)) is not None


# -- the scratch folder of a page -------------------------------------------------------------
@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory):
    """``scratch(page)``: the page's folder with its ``file`` blocks written and installed.

    Its examples keep their data (conversations, the SQLite cache) in the folder, and the
    pages in ``REDIS_PAGES`` get a real ``redis-server`` of their own.
    """
    made: dict[str, tuple[Path, dict[str, str]]] = {}
    servers: list[Any] = []

    def make(page: str) -> tuple[Path, dict[str, str]]:
        if page in made:
            return made[page]
        folder = tmp_path_factory.mktemp(re.sub(r"\W", "_", page))
        site = folder / "site"
        site.mkdir()
        for block in page_blocks(page):
            if block.kind in ("file", "pytest"):
                target = folder / block.path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.body, encoding="utf-8")
        for project in sorted(folder.glob("*/pyproject.toml")):
            result = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                 "--no-build-isolation", "--no-index", "--target", str(site),
                 str(project.parent)],
                capture_output=True, text=True, timeout=TIMEOUT)
            assert result.returncode == 0, f"installing {project.parent.name}:\n{result.stderr}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(site), str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])
        env.pop("PYTEST_ADDOPTS", None)
        env["MODELPLEX_DATA_DIR"] = str(folder / "data")
        env["MODELPLEX_CACHE_DIR"] = str(folder / "cache")
        if page in REDIS_PAGES:
            from modelplex_redis.testing import RedisServer

            servers.append(RedisServer.start_new(tmp_path_factory.mktemp("redis")))
            env["MODELPLEX_REDIS_URL"] = servers[-1].url
        made[page] = (folder, env)
        return made[page]

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


def _run(args: list[str] | str, *, cwd: Path, env: dict[str, str],
         shell: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, shell=shell, capture_output=True, text=True,
                          timeout=TIMEOUT)


# -- the examples run -------------------------------------------------------------------------
def test_examples_were_found() -> None:
    """The markers are in place: a broken marker would silently skip an example."""
    runnable = marked("run")
    assert {b.page for b in runnable} >= {"index.md", "python-api.md", "writing-a-provider.md"}
    assert all(b.lang == "python" for b in runnable), [b.id for b in runnable
                                                       if b.lang != "python"]
    assert marked("pytest")
    assert marked("console")


@pytest.mark.parametrize("block", params(marked("run")))
def test_example_runs(block: Block, scratch) -> None:
    """Each runnable example exits 0 and prints what the page says it prints."""
    folder, env = scratch(block.page)
    script = folder / f"example_{block.line}.py"
    script.write_text(block.body, encoding="utf-8")
    result = _run([sys.executable, str(script)], cwd=folder, env=env)
    assert result.returncode == 0, f"{block.id} failed:\n{result.stdout}\n{result.stderr}"
    for key, value in block.attrs:
        if key == "contains":
            assert value in result.stdout, f"{block.id}: {value!r} not in:\n{result.stdout}"
    if block.output is not None:
        assert output_matches(block.output, result.stdout), (
            f"{block.id} printed:\n{result.stdout}\nthe page shows:\n{block.output}")


@pytest.mark.parametrize("block", params(marked("pytest")))
def test_example_test_suite_passes(block: Block, scratch) -> None:
    """The test files a page shows pass, e.g. a ProviderConformanceTests subclass."""
    folder, env = scratch(block.page)
    test_file = folder / block.path
    project = next(p for p in test_file.parents if (p / "pyproject.toml").is_file())
    result = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   str(test_file.relative_to(project))], cwd=project, env=env)
    assert result.returncode == 0, f"{block.id}:\n{result.stdout}\n{result.stderr}"
    assert " passed" in result.stdout


def _console_steps(body: str) -> list[tuple[str, str]]:
    steps: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    return [(command, "\n".join(lines)) for command, lines in steps]


@pytest.mark.parametrize("block", params(marked("console")))
def test_console_example(block: Block, scratch) -> None:
    """Each command of a tested console block prints what the page shows."""
    folder, env = scratch(block.page)
    for key, value in block.attrs:
        if key == "env":
            name, _, val = value.partition("=")
            env = {**env, name: val}
    steps = _console_steps(block.body)
    assert steps, f"{block.id}: no `$ ` commands"
    for command, expected in steps:
        assert shlex.split(command)[0] == "modelplex", f"{block.id}: only modelplex runs here"
        result = subprocess.run(command, cwd=folder, env=env, shell=True, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                timeout=TIMEOUT)
        assert output_matches(expected, result.stdout), (
            f"{block.id}: `{command}` printed:\n{result.stdout}\nthe page shows:\n{expected}")
        shows_error = any(line.startswith("Error:") for line in expected.splitlines())
        assert (result.returncode != 0) == shows_error, (
            f"{block.id}: `{command}` exited {result.returncode}")


@pytest.mark.parametrize("page", EXAMPLE_PAGES)
def test_every_python_block_compiles(page: str) -> None:
    """Even the examples that are not run are valid Python (top-level await allowed)."""
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    for block in page_blocks(page):
        if block.lang == "python":
            compile(block.body, block.id, "exec", flags=flags)


def test_output_matching() -> None:
    """The matcher used above: exact lines, ``...`` within a line and for whole lines."""
    assert output_matches("a\nb  \n", "a\nb\n")
    assert output_matches("x ... z", "x y y z")
    assert output_matches("...\necho 1\n...", "echo 1\n")
    assert output_matches("...\necho 1\n...", "a\nb\necho 1\nc\n")
    assert not output_matches("a\nb", "a\nc")
    assert not output_matches("a", "a\nextra")


# -- the plugin hooks are documented ----------------------------------------------------------
def hook_specs() -> dict[str, inspect.Signature]:
    """Every hook specification in modelplex.hookspecs, with its signature."""
    from modelplex import hookspecs

    return {name: inspect.signature(obj) for name, obj in vars(hookspecs).items()
            if inspect.isfunction(obj) and hasattr(obj, f"{hookspecs.NAME}_spec")}


def _hook_headings() -> dict[str, str]:
    text = (DOCS / "plugin-hooks.md").read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    headings = {}
    for section in sections:
        heading, _, body = section.partition("\n")
        match = re.fullmatch(r"`?(\w+)\((.*)\)`?", heading.strip())
        if match:
            headings[match[1]] = f"{match[1]}({match[2]})\n{body}"
    return headings


def test_hookspecs_found() -> None:
    assert set(hook_specs()) >= {"register_providers", "register_prompt_templates",
                                 "register_parsers", "register_caches", "register_commands"}


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_plugin_hook_is_documented(name: str) -> None:
    """Each hook has a ``## name(args)`` heading that matches its signature and docstring."""
    signature = hook_specs()[name]
    expected = f"{name}({', '.join(signature.parameters)})"
    headings = _hook_headings()
    assert name in headings, f"docs/plugin-hooks.md has no `## {expected}` heading"
    heading, _, body = headings[name].partition("\n")
    assert heading == expected, f"heading `## {heading}` does not match `{expected}`"
    from modelplex import hookspecs

    summary = inspect.getdoc(getattr(hookspecs, name)).splitlines()[0].replace("``", "`")
    assert summary in body, f"the section of {name} lacks its docstring summary {summary!r}"
    assert "```python" in body and "@hookimpl" in body, f"the section of {name} has no example"


def test_no_heading_for_a_hook_that_does_not_exist() -> None:
    assert set(_hook_headings()) <= set(hook_specs())


# -- the CLI is documented --------------------------------------------------------------------
def _help_commands(*args: str, load_plugins: str | None) -> list[str]:
    env = dict(os.environ)
    if load_plugins is not None:
        env["MODELPLEX_LOAD_PLUGINS"] = load_plugins
    result = subprocess.run(["modelplex", *args, "--help"], capture_output=True, text=True,
                            env=env, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    commands = result.stdout.partition("\nCommands:\n")[2]
    return [line.split()[0] for line in commands.splitlines() if line.startswith("  ")]


def _cli_sections() -> dict[str, str]:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    sections = re.split(r"^#{2,3} ", text, flags=re.M)[1:]
    found = {}
    for section in sections:
        heading, _, body = section.partition("\n")
        if heading.startswith("modelplex "):
            found[heading.removeprefix("modelplex ").strip()] = body
    return found


def _core_commands() -> list[str]:
    names = []
    for name in _help_commands(load_plugins=""):
        subcommands = _help_commands(name, load_plugins="")
        names += [f"{name} {sub}" for sub in subcommands] if subcommands else [name]
    return names


def test_core_commands_found() -> None:
    assert {"chat", "models list", "models show", "providers", "plugins"} <= set(
        _core_commands())


@pytest.mark.parametrize("command", _core_commands())
def test_cli_command_is_documented(command: str) -> None:
    """Every command of ``modelplex --help`` has a section, which names each of its options."""
    from modelplex.cli import cli

    sections = _cli_sections()
    assert command in sections, f"docs/cli.md has no `## modelplex {command}` section"
    obj = cli
    for part in command.split():
        obj = obj.commands[part]  # type: ignore[attr-defined]
    for param in obj.params:
        for opt in [*param.opts, *param.secondary_opts]:
            if opt.startswith("-") and opt not in ("-h", "--help"):
                assert opt in sections[command], f"`modelplex {command}` lacks {opt}"
    # and the other way: an option of the section's table is one `--help` shows
    shown = {opt for param in obj.params if not getattr(param, "hidden", False)
             for opt in [*param.opts, *param.secondary_opts]}
    for row in re.findall(r"^\| (`-.*?) \|", sections[command], flags=re.M):
        for opt in re.findall(r"`(--?[\w-]+)", row):
            assert opt in shown, f"docs/cli.md documents {opt}, `modelplex {command} --help` " \
                "does not show it"


def test_global_options_are_documented() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for option in ("--debug", "--version", "--help"):
        assert f"`{option}`" in text


def test_plugin_commands_are_documented() -> None:
    """Commands that installed plugins add are mentioned in cli.md."""
    core = set(_help_commands(load_plugins=""))
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for name in set(_help_commands(load_plugins=None)) - core:
        assert f"`modelplex {name}`" in text, f"docs/cli.md does not mention modelplex {name}"


# -- links between the pages resolve ----------------------------------------------------------
_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(?P<title>.*?)[ \t]*#*[ \t]*$", re.M)


def _prose(text: str) -> str:
    """The page without its fenced blocks and inline code (links there are not links)."""
    return re.sub(r"`[^`\n]*`", "", _FENCE.sub("", text))


def _anchors(text: str) -> set[str]:
    """The anchors GitHub makes for a page's headings (``-1``, ``-2`` for repeats)."""
    found: set[str] = set(re.findall(r'<a (?:name|id)="([^"]+)"', text))
    seen: dict[str, int] = {}
    for match in _HEADING.finditer(_FENCE.sub("", text)):
        slug = re.sub(r"[^\w\- ]", "", match["title"].strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links of a Markdown page whose file or ``#anchor`` does not exist."""
    broken = []
    for match in _LINK.finditer(_prose(page.read_text(encoding="utf-8"))):
        target = match["target"]
        if re.match(r"[a-zA-Z][\w+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path) if path else page
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(
                resolved.read_text(encoding="utf-8")):
            broken.append(f"{target} (no heading with that anchor)")
    return broken


@pytest.mark.parametrize("page", sorted(
    [str(p.relative_to(ROOT)) for p in DOCS.rglob("*.md")] + ["README.md"]))
def test_relative_links_resolve(page: str) -> None:
    assert broken_links(ROOT / page) == []


def test_broken_links_are_found(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(
        "# A page\n## Second `part`, too\n```text\n[x](nowhere.md)\n```\n"
        "[ok](#a-page) [ok2](a.md#second-part-too) [web](https://x.y/z) [`code`](a.md)\n"
        "[bad](b.md) [bad2](#nope) [bad3](a.md#a-page-1)\n", encoding="utf-8")
    assert broken_links(tmp_path / "a.md") == [
        "b.md (no such file)", "#nope (no heading with that anchor)",
        "a.md#a-page-1 (no heading with that anchor)"]
