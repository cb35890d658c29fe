"""A named model with ``mcp = [...]`` in the server's APIs: the request path's ``mcp`` layer
runs its MCP tools (a real stdio server written with the SDK) for ``/v1/chat/completions``
(the official openai client, streaming and not), ``/api/chat`` and ``/ws``; the server starts
the MCP server once (for every named model using it) and stops it at shutdown."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from modelplex.config import Config
from modelplex.plugins import Plugins
from modelplex.pool import ProviderPool
from modelplex.testing import FaultyUpstream, Reply
from modelplex_server.app import AppServer, create_app, start
from modelplex_server.resolve import ModelResolver
from modelplex_server.settings import ServerSettings

pytest.importorskip("mcp")
openai = pytest.importorskip("openai")


@pytest.fixture
async def served(
        plugins: Plugins, mcp_models: Callable[..., Config],
) -> AsyncIterator[tuple[AppServer, FaultyUpstream]]:
    """The server with the MCP layer tests' named models (``mcp_models``, the root conftest);
    ``helper`` may call ``add`` and ``image`` only."""
    async with FaultyUpstream() as scripted:
        config = mcp_models(scripted.url + "/v1",
                            mcp=[{"server": "fx", "tools": ["add", "image"]}])
        resolver = ModelResolver(config=config, plugins=plugins, pool=ProviderPool())
        server = await start(create_app(ServerSettings(port=0, health_interval=None),
                                        resolver=resolver))
        try:
            yield server, scripted
        finally:
            await server.stop()


def script(upstream: FaultyUpstream, a: int, b: int, answer: str) -> None:
    upstream.replies.extend([
        Reply(tool_calls=[{"id": f"c{a}", "name": "add", "arguments": {"a": a, "b": b}}]),
        Reply(answer)])


def tool_result(body: dict[str, Any]) -> str:
    [message] = [m for m in body["messages"] if m["role"] == "tool"]
    return str(message["content"])


async def test_every_api_runs_the_named_models_mcp_tools(
        served: tuple[AppServer, FaultyUpstream], children: Callable[[], set[int]]) -> None:
    before = children()
    server, upstream = served
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused")
    question = [{"role": "user", "content": "2+3?"}]

    script(upstream, 2, 3, "It is 5.")
    whole = await client.chat.completions.create(model="helper", messages=question)
    assert whole.choices[0].message.content == "It is 5."
    assert not whole.choices[0].message.tool_calls
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage is not None and whole.usage.prompt_tokens == 6  # both rounds

    script(upstream, 4, 4, "It is 8.")
    stream = await client.chat.completions.create(model="helper", messages=question,
                                                  stream=True)
    pieces = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in pieces if c.choices) == "It is 8."
    assert not any(c.choices[0].delta.tool_calls for c in pieces if c.choices)

    script(upstream, 1, 6, "It is 7.")
    async with aiohttp.ClientSession() as session:
        async with session.post(server.url + "/api/chat",
                                json={"model": "helper", "message": "1+6?"}) as resp:
            events = [json.loads(line[5:]) for line in (await resp.text()).splitlines()
                      if line.startswith("data:")]
        assert "".join(e.get("content", "") for e in events) == "It is 7."

        script(upstream, 5, 5, "It is 10.")
        async with session.ws_connect(server.url + "/ws") as ws:
            await ws.send_json({"type": "send_message", "model": "helper", "message": "5+5?"})
            got: list[dict[str, Any]] = []
            while not got or got[-1]["type"] not in ("done", "error"):
                got.append(await ws.receive_json(timeout=30))
        assert got[-1]["type"] == "done"
        assert "".join(e.get("content", "") for e in got if e["type"] == "chunk") == "It is 10."

    # the tools offered: the model's allow list; each call was run by the server
    offered = {t["function"]["name"] for t in upstream.bodies[0]["tools"]}
    assert offered == {"add", "image"}
    assert [tool_result(upstream.bodies[i]) for i in (1, 3, 5, 7)] == ["5", "8", "7", "10"]
    script(upstream, 2, 2, "It is 4.")  # another named model on the same server
    other = await client.chat.completions.create(model="other", messages=question)
    assert other.choices[0].message.content == "It is 4."
    assert tool_result(upstream.bodies[9]) == "4"
    started = children() - before
    assert len(started) == 1  # one MCP server for every model, request and API
    await server.stop()
    assert children() <= before  # stopped at shutdown
