"""``modelplex mcp serve`` driven by the MCP SDK's client over stdio."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from modelplex.testing import FaultyUpstream, Reply

pytest.importorskip("mcp")

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


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
