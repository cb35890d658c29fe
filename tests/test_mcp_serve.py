"""``modelplex mcp serve`` driven by the MCP SDK's client over stdio and streamable HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from modelplex.testing import Cli, FaultyUpstream, Reply

pytest.importorskip("mcp")

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

#: ``modelplex`` without the developer's MODELPLEX_* settings, with no config file
CLI = Cli(os.devnull)


def stdio_params(**env: str) -> StdioServerParameters:
    """``modelplex mcp serve`` for the SDK's stdio client (``env``: more variables)."""
    command, *args = map(str, CLI.command("mcp", "serve"))
    return StdioServerParameters(command=command, args=args, env=CLI.environ(env))


@asynccontextmanager
async def served(**env: str) -> AsyncIterator[ClientSession]:
    params = stdio_params(**env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def text(result: Any) -> str:
    assert not result.isError, result.content
    return "".join(block.text for block in result.content)


async def test_serve_lists_tools_and_chats_through_a_scripted_upstream() -> None:
    async with FaultyUpstream() as upstream:
        upstream.replies.extend([Reply("Hello from upstream."),
                                 Reply('{"city": "Lima"}')])
        async with served(OPENAI_API_KEY="sk-test-0000000000",
                          OPENAI_BASE_URL=upstream.url + "/v1") as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert set(tools) == {"chat", "list_models", "structured"}
            assert "prompt" in tools["chat"].inputSchema["properties"]
            answer = await session.call_tool("chat", {"prompt": "hi",
                                                      "model": "openai:scripted"})
            assert text(answer) == "Hello from upstream."
            schema = {"type": "object", "properties": {"city": {"type": "string"}},
                      "required": ["city"]}
            value = await session.call_tool("structured", {
                "prompt": "A city?", "schema": schema, "model": "openai:scripted"})
            assert json.loads(text(value)) == {"value": {"city": "Lima"}}
            bad = await session.call_tool("chat", {"prompt": "hi", "model": "nope:x"})
            assert bad.isError
            assert "nope" in "".join(b.text for b in bad.content)
    assert upstream.bodies[0]["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.slow
async def test_serve_chat_on_smollm2() -> None:
    async with served() as session:
        answer = await session.call_tool("chat", {
            "prompt": "What is the capital of France?", "model": "llamacpp:smollm2",
            "options": {"max_tokens": 40, "temperature": 0}})
        assert "Paris" in text(answer)
        listed = json.loads(text(await session.call_tool("list_models", {})))
        assert any(m["model"].startswith("llamacpp:") for m in listed["models"])


# -- streamable HTTP ---------------------------------------------------------------------------
LISTENING = re.compile(r"MCP server listening on (http://127\.0\.0\.1:([0-9]+)/mcp)$")


@asynccontextmanager
async def served_http(*args: str, log: list[str] | None = None,
                      stop: signal.Signals = signal.SIGTERM, **env: str) -> AsyncIterator[str]:
    """``modelplex mcp serve --transport http --port 0`` in a subprocess; yields the URL it
    writes to stderr once it listens, then stops it (``stop``: SIGTERM) and waits for it
    (``log``: gets what it wrote to stderr, and its exit status)."""
    async with CLI.start("mcp", "serve", "--transport", "http", "--port", "0", *args, env=env,
                         stdout=asyncio.subprocess.DEVNULL) as proc:
        assert proc.stderr is not None
        before: list[str] = []
        drain: asyncio.Task[bytes] | None = None
        try:
            async with asyncio.timeout(300):  # a guard against a hang, not a speed check
                while True:  # the lines before the URL (warnings), until the URL or the exit
                    raw = await proc.stderr.readline()
                    if not raw:
                        raise AssertionError("exited before listening: " + "".join(before))
                    line = raw.decode().rstrip("\n")
                    found = LISTENING.match(line)
                    if found:
                        break
                    before.append(line + "\n")
            assert int(found.group(2)) > 0
            drain = asyncio.ensure_future(proc.stderr.read())  # the pipe never fills
            yield found.group(1)
        finally:
            if proc.returncode is None:
                proc.send_signal(stop)
            await asyncio.wait_for(proc.wait(), 30)
            if drain is not None:
                rest = await drain
                if log is not None:
                    log += [*before, rest.decode(errors="replace"), f"exit {proc.returncode}"]


@asynccontextmanager
async def http_session(url: str, key: str | None = None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    async with create_mcp_http_client(headers=headers) as client, \
            streamable_http_client(url, http_client=client) as (read, write, _), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def test_serve_over_streamable_http_with_a_bearer_key() -> None:
    async with FaultyUpstream() as upstream:
        upstream.replies.append(Reply("Paris."))
        async with served_http("--key-env", "MCP_SERVE_KEY", MCP_SERVE_KEY="k-0123456789",
                               OPENAI_API_KEY="sk-test-0000000000",
                               OPENAI_BASE_URL=upstream.url + "/v1") as url:
            async with http_session(url, "k-0123456789") as session:
                tools = {t.name for t in (await session.list_tools()).tools}
                assert tools == {"chat", "list_models", "structured"}
                answer = await session.call_tool("chat", {
                    "prompt": "What is the capital of France?", "model": "openai:scripted"})
                assert text(answer) == "Paris."
            import httpx

            async with httpx.AsyncClient() as client:
                for headers in ({}, {"Authorization": "Bearer wrong"}):
                    refused = await client.post(url, json={}, headers=headers)
                    assert refused.status_code == 401
                    assert "k-0123456789" not in refused.text


async def test_serve_http_against_hostile_requests() -> None:
    """Raw requests no SDK sends: JSON nested past the parser's depth is a 400 JSON-RPC parse
    error (was a 500 with a traceback), a body over 4 MiB a 413, a wrong key (in any case of
    the scheme) a 401 that never shows the key; ``bearer`` in lower case is accepted."""
    import httpx

    key = "k-0123456789"
    accept = {"Accept": "application/json, text/event-stream",
              "Content-Type": "application/json"}
    ping = b'{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {' \
           b'"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": ' \
           b'{"name": "probe", "version": "1"}}}'
    async with served_http("--key-env", "MCP_SERVE_KEY", MCP_SERVE_KEY=key) as url, \
            httpx.AsyncClient(timeout=60) as client:
        good = {**accept, "Authorization": f"Bearer {key}"}
        deep = await client.post(url, content=b"[" * 100_000 + b"]" * 100_000, headers=good)
        assert deep.status_code == 400, deep.text
        assert deep.json()["error"]["code"] == -32700 and "deep" in deep.text
        huge = await client.post(url, content=b"[" + b"1," * 3_000_000 + b"1]", headers=good)
        assert huge.status_code == 413 and "4194304 bytes" in huge.text
        for wrong in (f"bearer {key}x", "Basic " + key, key, f"Bearer{key}"):
            refused = await client.post(url, content=ping, headers={**accept,
                                                                     "Authorization": wrong})
            assert refused.status_code == 401 and key not in refused.text
        lower = await client.post(url, content=ping,
                                  headers={**accept, "Authorization": f"bearer {key}"})
        assert lower.status_code == 200, lower.text


async def test_serve_http_on_port_0_writes_the_url_it_listens_on() -> None:
    """``--port 0`` binds a free port and says which on stderr, once, when it listens: the
    URL served is the one written, and nothing else is written before it."""
    async with CLI.start("mcp", "serve", "--transport", "http", "--port", "0") as proc:
        assert proc.stderr is not None and proc.stdout is not None
        try:
            async with asyncio.timeout(300):  # a guard against a hang, not a speed check
                first = (await proc.stderr.readline()).decode()
            found = LISTENING.match(first.rstrip("\n"))
            assert found, first
            async with http_session(found.group(1)) as session:
                assert "chat" in {t.name for t in (await session.list_tools()).tools}
        finally:
            proc.terminate()
            out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert "MCP server listening" not in err.decode() and out == b""


async def test_serve_http_needs_the_key_variable() -> None:
    proc = await CLI.arun("mcp", "serve", "--transport", "http", "--key-env", "MCP_UNSET_KEY")
    assert proc.returncode == 1
    assert "--key-env MCP_UNSET_KEY: the variable is not set" in proc.stderr


@pytest.mark.slow
async def test_serve_http_chat_on_smollm2() -> None:
    async with served_http() as url, http_session(url) as session:
        answer = await session.call_tool("chat", {
            "prompt": "What is the capital of France?", "model": "llamacpp:smollm2",
            "options": {"max_tokens": 40, "temperature": 0}})
        assert "Paris" in text(answer)


# -- what the MCP SDK's client meets: the spec's errors, and clients that leave mid-call ------
async def _served_upstream_chat(session: ClientSession) -> str:
    return text(await session.call_tool("chat", {"prompt": "hi", "model": "openai:scripted"}))


async def test_serve_answers_the_specs_errors(tmp_path: Any) -> None:
    """Spec 2025-11-25 (the version negotiated): an unknown tool is a JSON-RPC error -32602
    (was an ``isError`` result), arguments that do not match the input schema are an
    ``isError`` result naming the field (was pydantic's dump), a cursor this server never
    gave is -32602 (was ignored), an unknown prompt -32602 and an unknown resource -32002
    (were the invalid code 0, with a traceback on stderr); ``structured`` refuses a schema
    that is not one before asking the model (it asked three times); the session serves on
    after."""
    from mcp.shared.exceptions import McpError

    import modelplex

    async with FaultyUpstream() as upstream:
        params = stdio_params(OPENAI_API_KEY="sk-test-0000000",
                              OPENAI_BASE_URL=upstream.url + "/v1")
        with open(tmp_path / "stderr.txt", "w") as errlog:  # noqa: ASYNC230 - a new file
            async with stdio_client(params, errlog=errlog) as (read, write), \
                    ClientSession(read, write) as session:
                init = await session.initialize()
                assert init.protocolVersion == "2025-11-25"
                assert init.serverInfo.version == modelplex.__version__  # was the SDK's
                await session.send_ping()
                with pytest.raises(McpError) as info:
                    await session.call_tool("nope", {})
                assert info.value.error.code == -32602
                assert "Unknown tool: 'nope'" in info.value.error.message
                assert "chat, list_models, structured" in info.value.error.message
                for arguments, field in (({}, "'prompt' is a required property"),
                                         ({"prompt": 3}, "prompt: 3 is not of type 'string'")):
                    bad = await session.call_tool("chat", arguments)
                    assert bad.isError and field in bad.content[0].text
                    assert "pydantic" not in bad.content[0].text
                schema = await session.call_tool("structured", {"prompt": "x", "schema": "no"})
                assert schema.isError and "schema: 'no' is not of type 'object'" in \
                    schema.content[0].text
                seen = len(upstream.received)
                schema = await session.call_tool("structured", {"prompt": "x", "schema": {
                    "type": "nonsense"}, "model": "openai:scripted"})
                assert schema.isError and "schema: not a valid JSON schema at type" in \
                    schema.content[0].text  # was "no valid answer after 3 attempts"
                assert len(upstream.received) == seen  # the model was not asked
                for listing in (session.list_tools, session.list_prompts,
                                session.list_resources, session.list_resource_templates):
                    assert (await listing()).nextCursor is None
                    with pytest.raises(McpError) as info:
                        await listing(cursor="abc")
                    assert info.value.error.code == -32602
                    assert "invalid cursor 'abc'" in info.value.error.message
                assert (await session.list_prompts()).prompts == []
                with pytest.raises(McpError) as info:
                    await session.get_prompt("nope")
                assert info.value.error.code == -32602 and "Unknown prompt" in str(info.value)
                with pytest.raises(McpError) as info:
                    await session.read_resource("file:///etc/passwd")
                assert info.value.error.code == -32002
                assert info.value.error.data == {"uri": "file:///etc/passwd"}
                assert await _served_upstream_chat(session) == PIECES
        assert "Traceback" not in (tmp_path / "stderr.txt").read_text()


PIECES = "tok " * 5


async def _until_received(upstream: FaultyUpstream, count: int) -> None:
    async with asyncio.timeout(120):  # a guard against a hang, not a speed check
        while len(upstream.received) < count:  # noqa: ASYNC110 - the upstream's list, no event
            await asyncio.sleep(0.05)


async def test_serve_serves_on_after_a_client_leaves_mid_call() -> None:
    """A call whose client goes away while the model is still answering (stdio: the client
    gives up and cancels; HTTP: the client disconnects) does not stop the server: the same
    stdio session, and a new HTTP client, are answered; the call the HTTP client left is
    cancelled (its upstream connection closes)."""
    from datetime import timedelta

    from mcp.shared.exceptions import McpError

    async with FaultyUpstream() as upstream:
        env = {"OPENAI_API_KEY": "sk-test-0000000000", "OPENAI_BASE_URL": upstream.url + "/v1"}
        async with served(**env) as session:
            upstream.faults.append("hang")
            with pytest.raises(McpError, match="Timed out"):
                await session.call_tool("chat", {"prompt": "hi", "model": "openai:scripted"},
                                        read_timeout_seconds=timedelta(seconds=1))
            assert await _served_upstream_chat(session) == PIECES
        async with served_http(**env) as url:
            upstream.faults.append("hang")
            seen = len(upstream.received)

            async def leaving() -> None:
                async with http_session(url) as session:
                    await _served_upstream_chat(session)

            call = asyncio.ensure_future(leaving())
            await _until_received(upstream, seen + 1)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            async with asyncio.timeout(120):  # the call it left is cancelled, not left hanging
                while upstream.open_connections:  # noqa: ASYNC110 - a count, no event
                    await asyncio.sleep(0.05)
            async with http_session(url) as session:
                assert await _served_upstream_chat(session) == PIECES
                await session.send_ping()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
async def test_a_client_leaving_and_a_stop_are_not_logged_as_errors(
        stop: signal.Signals) -> None:
    """An HTTP client that disconnects mid-call, and a stop (SIGTERM, or Ctrl-C's SIGINT)
    while another call runs, are normal: the server logs no traceback for them (the SDK
    logged "Error in standalone SSE writer" with a ClosedResourceError, and Ctrl-C cancelled
    every request, each logged with its traceback) and exits as a stopped server does."""
    log: list[str] = []
    async with FaultyUpstream() as upstream:
        env = {"OPENAI_API_KEY": "sk-test-0000000000", "OPENAI_BASE_URL": upstream.url + "/v1"}
        async with served_http(log=log, stop=stop, **env) as url:
            upstream.faults.extend(["hang", "hang"])

            async def calling() -> None:
                async with http_session(url) as session:
                    await _served_upstream_chat(session)

            left = asyncio.ensure_future(calling())
            await _until_received(upstream, 1)
            left.cancel()
            with pytest.raises(asyncio.CancelledError):
                await left
            async with asyncio.timeout(120):  # the call it left is cancelled
                while upstream.open_connections:  # noqa: ASYNC110 - a count, no event
                    await asyncio.sleep(0.05)
            running = asyncio.ensure_future(calling())  # still running at the stop
            await _until_received(upstream, 2)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running
    text = "".join(log)
    assert "Traceback" not in text and "Error in" not in text and "ERROR" not in text, text
    assert log[-1] in ("exit 0", f"exit {-stop}", f"exit {128 + stop}", "exit 130"), log[-1]


def test_the_log_filter_keeps_real_errors() -> None:
    """The filter of the served MCP's loggers drops what a client leaving raises (anyio's
    closed and broken streams, alone or in an exception group) and keeps any other error
    with its traceback."""
    import logging

    import anyio

    from modelplex.mcp.served import QuietDisconnects

    def record(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException:
            return logging.LogRecord("mcp.server.streamable_http", logging.ERROR, __file__, 1,
                                     "Error in standalone SSE writer", (), sys.exc_info())

    quiet = QuietDisconnects()
    for gone in (anyio.ClosedResourceError(), anyio.BrokenResourceError(),
                 ExceptionGroup("g", [anyio.ClosedResourceError(), anyio.EndOfStream()])):
        kept = record(gone)
        assert not quiet.filter(kept) or (kept.exc_info is None and kept.levelno < logging.ERROR)
    for real in (RuntimeError("boom"), ExceptionGroup("g", [anyio.ClosedResourceError(),
                                                            ValueError("bad")])):
        kept = record(real)
        assert quiet.filter(kept) and kept.exc_info is not None
        assert kept.levelno == logging.ERROR
