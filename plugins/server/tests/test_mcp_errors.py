"""A named model whose MCP server cannot start: every API answers 502 (an upstream tool server
failed) in its own error shape, naming the MCP server and never its secrets or stderr."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from modelplex.config import parse_config
from modelplex.plugins import Plugins
from modelplex.pool import ProviderPool
from modelplex.testing import FaultyUpstream
from modelplex_server.app import AppServer, create_app, start
from modelplex_server.errors import from_exception
from modelplex_server.resolve import ModelResolver
from modelplex_server.settings import ServerSettings

pytest.importorskip("mcp")
openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

SECRET = "sk-mcp-secret-token-0123456789abcdef"
USER: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def server(plugins: Plugins) -> AsyncIterator[AppServer]:
    async with FaultyUpstream() as scripted:
        config = parse_config({
            "providers": {"openai": {"api_key": "sk-mcp-test-0123456789"}},
            "mcp": {"ghost": {"command": "/nonexistent/modelplex-no-such-mcp-server",
                              "args": ["--token", SECRET], "env": {"TOKEN": SECRET},
                              "timeout": 10}},
            "models": {"helper": {
                "deployments": [{"model": "openai:scripted", "base_url": scripted.url + "/v1"}],
                "mcp": ["ghost"]}}},
            source="mcp-error-test.toml")
        resolver = ModelResolver(config=config, plugins=plugins, pool=ProviderPool())
        server = await start(create_app(ServerSettings(port=0, health_interval=None),
                                        resolver=resolver))
        try:
            yield server
        finally:
            await server.stop()


def check(message: str) -> None:
    assert "ghost" in message and "MCP server" in message, message
    assert SECRET not in message and "stderr" not in message, message


async def test_chat_completions_and_responses_answer_502(server: AppServer) -> None:
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused",
                                  max_retries=0) as client:
        for call in (lambda: client.chat.completions.create(model="helper", messages=USER),
                     lambda: client.chat.completions.create(model="helper", messages=USER,
                                                            stream=True),
                     lambda: client.responses.create(model="helper", input="hi")):
            with pytest.raises(openai.InternalServerError) as caught:
                await call()
            assert caught.value.status_code == 502
            body: Any = caught.value.body
            assert body["code"] == "mcp_server_error", body
            check(body["message"])


async def test_messages_answer_502_in_anthropics_shape(server: AppServer) -> None:
    async with anthropic.AsyncAnthropic(base_url=server.url, api_key="unused",
                                        max_retries=0) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.create(model="helper", max_tokens=20, messages=USER)
    assert caught.value.status_code == 502
    body: Any = caught.value.body
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    check(body["error"]["message"])


async def test_ollama_api_answers_502(server: AppServer) -> None:
    async with aiohttp.ClientSession() as session, session.post(
            server.url + "/ollama/api/chat", json={"model": "helper", "messages": USER,
                                            "stream": False}) as resp:
        assert resp.status == 502, await resp.text()
        check((await resp.json())["error"])


def test_the_mapping_drops_the_stderr_tail() -> None:
    from modelplex.mcp import McpError

    api = from_exception(McpError(f"MCP server 'x': could not start: boom; its stderr ends "
                                  f"with:\ntoken={SECRET}"))
    assert (api.status, api.code) == (502, "mcp_server_error")
    assert api.message.startswith("MCP server 'x': could not start: boom") and "stderr" \
        not in api.message and SECRET not in api.message
