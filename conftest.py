"""Settings for every test of the repository: nothing a test runs touches the user's home.

modelplex keeps conversations and logs under ``$XDG_DATA_HOME/modelplex`` and caches under
``$XDG_CACHE_HOME/modelplex``; the tests (and the ``modelplex`` processes they start, which
inherit the environment) use a fresh temporary folder for each instead, so a developer's own
log database is never written, and one left by another version never fails a test.

Also the fixtures tests of several folders share (test modules are imported with
``--import-mode=importlib`` and cannot import each other): ``upstream``, ``global_spans``
(OpenTelemetry's global tracer provider, recording in memory), and for the MCP tests of tests/
and plugins/server/tests ``mcp_server``, ``mcp_http_server``, ``mcp_cli``, ``mcp_models`` and
``children``. The helpers that third-party plugins could use too are in ``modelplex.testing``
(the ``modelplex`` command: ``Cli``; a server program: ``server_process``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from modelplex.config import Config
    from modelplex.testing import CliResult, FaultyUpstream


@pytest.fixture(autouse=True, scope="session")
def _isolated_user_dirs() -> Iterator[None]:
    keys = ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME")
    saved = {key: os.environ.get(key) for key in keys}
    with tempfile.TemporaryDirectory(prefix="modelplex-tests-") as root:
        for key in keys:
            folder = Path(root, key.lower())
            folder.mkdir()
            os.environ[key] = str(folder)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(autouse=True)
def _fresh_router_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no cooldowns. Named models share one process-wide state, keyed
    by deployment (its model and connection settings, the URL included), and a test upstream
    bound to port 0 can be given the port of an earlier test's deployment that is still
    cooling down: the new deployment would then be skipped before it was ever asked."""
    import modelplex.pipeline as pipeline
    from modelplex.routing import MemoryState

    monkeypatch.setattr(pipeline, "_memory_state", MemoryState())


@pytest.fixture
def global_spans() -> Iterator[InMemorySpanExporter]:
    """An in-memory span exporter on a tracer provider made OpenTelemetry's global one for the
    test (the one before is put back after): the spans of code that asks the global
    provider."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.util._once import Once

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    old = trace._TRACER_PROVIDER
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(provider)
    yield exporter
    trace._TRACER_PROVIDER = old
    trace._TRACER_PROVIDER_SET_ONCE = Once()


@pytest.fixture
async def upstream() -> AsyncIterator[FaultyUpstream]:
    """The core's fault-injecting test upstream (``modelplex.testing.FaultyUpstream``)."""
    from modelplex.testing import FaultyUpstream

    async with FaultyUpstream() as server:
        yield server


# -- the MCP tests of tests/ and plugins/server/tests ------------------------------------------
#: The stdio MCP server the MCP tests run, written with the SDK's server API.
MCP_FIXTURE_SERVER = str(Path(__file__).parent / "tests" / "mcp_fixture_server.py")


@pytest.fixture
def mcp_server() -> Callable[..., dict[str, Any]]:
    """``mcp_server(*args, timeout=10, **fields)``: an ``[mcp.NAME]`` table that runs
    tests/mcp_fixture_server.py over stdio with ``args`` (``--hang``, ``--name NAME``)."""

    def table(*args: str, timeout: float = 10, **fields: Any) -> dict[str, Any]:
        return {"command": sys.executable, "args": [MCP_FIXTURE_SERVER, *args],
                "timeout": timeout, **fields}

    return table


@pytest.fixture
def mcp_http_server() -> Callable[[str], contextlib.AbstractAsyncContextManager[int]]:
    """``async with mcp_http_server(flag) as port``: the fixture server over HTTP (``--http``:
    streamable, ``--sse``: HTTP+SSE) on 127.0.0.1 at a free port, once it accepts
    connections; stopped after."""

    @contextlib.asynccontextmanager
    async def serve(flag: str) -> AsyncIterator[int]:
        from modelplex.testing import free_port

        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, MCP_FIXTURE_SERVER, flag, str(port),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    assert proc.returncode is None, "the fixture server exited"
                    await asyncio.sleep(0.1)
                    continue
                writer.close()
                await writer.wait_closed()
                break
            yield port
        finally:
            proc.terminate()
            await proc.wait()

    return serve


@pytest.fixture
def mcp_cli(tmp_path: Path) -> Callable[..., CliResult]:
    """``mcp_cli(*args, **env)``: ``modelplex ARGS`` in a child process
    (``modelplex.testing.Cli``), with none of the developer's ``MODELPLEX_*`` settings and a
    config whose ``[mcp.fx]`` is the fixture server (``FIXTURE_SECRET = "hidden-value"`` in
    its environment); ``env`` adds variables."""
    from modelplex.testing import Cli

    path = tmp_path / "mcp-cli.toml"
    path.write_text(f"[mcp.fx]\ncommand = {json.dumps(sys.executable)}\n"
                    f"args = [{json.dumps(MCP_FIXTURE_SERVER)}]\n"
                    'env = { FIXTURE_SECRET = "hidden-value" }\n')
    cli = Cli(path)

    def run(*args: str, **env: str) -> CliResult:
        return cli.run(*args, env=env)

    return run


@pytest.fixture
def mcp_models(mcp_server: Callable[..., dict[str, Any]]) -> Callable[..., Config]:
    """``mcp_models(base_url, **helper)``: the configuration of the MCP layer tests. ``[mcp.fx]``
    is the fixture server; the named models ask the openai provider at ``base_url`` for
    ``scripted``: ``helper`` and ``other`` run ``fx``'s tools, ``plain`` none. Keywords
    replace fields of ``helper`` (``mcp=[{"server": "fx", "tools": ["add"]}]``: an allow
    list)."""
    from modelplex.config import parse_config

    def build(base_url: str, **helper: Any) -> Config:
        return parse_config({
            "mcp": {"fx": mcp_server()},
            "providers": {"openai": {"base_url": base_url, "api_key": "sk-test-0000000000"}},
            "models": {"helper": {"model": "openai:scripted", "mcp": ["fx"], **helper},
                       "other": {"model": "openai:scripted", "mcp": ["fx"]},
                       "plain": {"model": "openai:scripted"}}})

    return build


@pytest.fixture
def children() -> Callable[[], set[int]]:
    """``children()``: the live child processes of this process (zombies are not alive), to
    check that MCP servers are started and stopped."""

    def live() -> set[int]:
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if fields[1] == str(os.getpid()) and fields[0] != "Z":
                    found.add(int(entry.name))
        return found

    return live
