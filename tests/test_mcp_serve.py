"""``modelplex mcp serve`` driven by the MCP SDK's client over stdio and streamable HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from modelplex.testing import FaultyUpstream, Reply

pytest.importorskip("mcp")

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client


@asynccontextmanager
async def served(**env: str) -> AsyncIterator[ClientSession]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODELPLEX_")}
    params = StdioServerParameters(command=sys.executable, args=["-m", "modelplex", "mcp",
                                                                 "serve"],
                                   env={**clean, "MODELPLEX_CONFIG": os.devnull, **env})
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
async def served_http(*args: str, **env: str) -> AsyncIterator[str]:
    """``modelplex mcp serve --transport http --port 0`` in a subprocess; yields the URL it
    writes to stderr once it listens, then stops it (SIGTERM) and waits for it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODELPLEX_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modelplex", "mcp", "serve", "--transport", "http", "--port",
        "0", *args, env={**clean, "MODELPLEX_CONFIG": os.devnull, **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
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
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
        if drain is not None:
            await drain


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
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODELPLEX_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modelplex", "mcp", "serve", "--transport", "http", "--port",
        "0", env={**clean, "MODELPLEX_CONFIG": os.devnull},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
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
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODELPLEX_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modelplex", "mcp", "serve", "--transport", "http",
        "--key-env", "MCP_UNSET_KEY", env={**clean, "MODELPLEX_CONFIG": os.devnull},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert "--key-env MCP_UNSET_KEY: the variable is not set" in err.decode()


@pytest.mark.slow
async def test_serve_http_chat_on_smollm2() -> None:
    async with served_http() as url, http_session(url) as session:
        answer = await session.call_tool("chat", {
            "prompt": "What is the capital of France?", "model": "llamacpp:smollm2",
            "options": {"max_tokens": 40, "temperature": 0}})
        assert "Paris" in text(answer)
