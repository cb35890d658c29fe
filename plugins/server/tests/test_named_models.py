"""Named models of the config file through the server: the router's retries, cooldowns and
fallbacks apply to every API, over real sockets (fault upstreams and the real SmolLM2)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from modelplex.config import Config, parse_config
from modelplex.plugins import Plugins
from modelplex.pool import ProviderPool
from modelplex.testing.upstream import PIECE, FaultyUpstream, closed_port_url
from modelplex_server.app import AppServer, create_app, server_registry, start
from modelplex_server.resolve import ModelResolver
from modelplex_server.settings import ServerSettings

USER: list[Any] = [{"role": "user", "content": "hi"}]


def routing_config(a: FaultyUpstream, b: FaultyUpstream) -> Config:
    return parse_config({
        "providers": {"openai": {"api_key": "sk-server-routing-0123456789"}},
        "models": {
            "duo": {"deployments": [
                {"model": "openai:fault", "base_url": a.url + "/v1", "name": "a"},
                {"model": "openai:fault", "base_url": b.url + "/v1", "name": "b"}]},
            "main": {"deployments": [{"model": "openai:gpt-4o-mini",
                                      "base_url": closed_port_url() + "/v1"}],
                     "fallbacks": ["local"]},
            "local": {"model": "llamacpp:smollm2", "options": {"max_tokens": 4}},
        }}, source="server-test.toml")


@pytest.fixture
async def routed(plugins: Plugins) -> AsyncIterator[tuple[AppServer, FaultyUpstream,
                                                          FaultyUpstream, ProviderPool]]:
    async with FaultyUpstream() as a, FaultyUpstream() as b:
        pool = ProviderPool()
        resolver = ModelResolver(config=routing_config(a, b), plugins=plugins, pool=pool)
        registry = server_registry(resolver, providers=["llamacpp"], timeout=5)
        settings = ServerSettings(port=0, health_interval=None)
        server = await start(create_app(settings, resolver=resolver, registry=registry))
        try:
            yield server, a, b, pool
        finally:
            await server.stop()
        assert pool.shared() == []  # every provider and router given back when it stopped


async def test_a_deployment_answering_503_is_retried_on_the_other(routed: Any) -> None:
    server, a, b, _ = routed
    a.faults.extend(["503:7"] * 5)
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x",
                                  max_retries=0) as client:
        reply = await client.chat.completions.create(model="duo", messages=USER)
        assert reply.model == "duo"
        assert reply.choices[0].message.content == PIECE * 5
        assert (a.requests, b.requests) == (1, 1)  # round robin tried a first: 503, then b
        stream = await client.chat.completions.create(model="duo", messages=USER, stream=True)
        text = "".join([c.choices[0].delta.content or ""
                        async for c in stream if c.choices])
        assert text == PIECE * 5
        # a's Retry-After: 7 put it in cooldown: every request went to b without trying a
        assert (a.requests, b.requests) == (1, 2)
    async with aiohttp.ClientSession(server.url) as http, \
            http.get("/api/models") as resp:  # the router's latency, listed
        duo = (await resp.json())["models"]["named"][0]
    assert duo["name"] == "duo" and duo["details"]["latency_ms"] > 0


@pytest.mark.slow
async def test_a_named_model_falls_back_to_llamacpp_when_its_remote_is_down(
        routed: Any) -> None:
    server, *_ = routed
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x",
                                  max_retries=0) as client:
        reply = await client.chat.completions.create(model="main", messages=USER)
    assert reply.model == "main"
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert 0 < reply.usage.completion_tokens <= 4  # the fallback's options: SmolLM2 answered


async def test_every_api_lists_the_named_models_first(routed: Any) -> None:
    server, *_ = routed
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x",
                                  max_retries=0) as client:
        ids = [m.id async for m in client.models.list()]
        assert ids[:3] == ["duo", "main", "local"]
        assert "llamacpp:smollm2" in ids[3:]
        assert (await client.models.retrieve("main")).owned_by == "modelplex"
    async with aiohttp.ClientSession(server.url) as http:
        async with http.get("/api/models") as resp:
            grouped = (await resp.json())["models"]
        assert next(iter(grouped)) == "named"
        assert grouped["named"][0]["details"]["target"] == "openai:fault, openai:fault"
        assert grouped["named"][1]["details"]["target"] == "openai:gpt-4o-mini -> local"
        async with http.get("/ollama/api/tags") as resp:
            tags = [m["name"] for m in (await resp.json())["models"]]
        assert tags[:3] == ["duo", "main", "local"]
        async with http.post("/ollama/api/show", json={"model": "duo"}) as resp:
            assert resp.status == 200


async def test_the_serve_config_file_names_models_for_the_server(
        plugins: Plugins, tmp_path: Any) -> None:
    from modelplex_server.settings import load_server_config

    async with FaultyUpstream() as up:
        file = tmp_path / "modelplex.toml"
        file.write_text(f"""
[providers.openai]
api_key = "sk-one-file-0123456789"

[models.fast]
deployments = [{{ model = "openai:fault", base_url = "{up.url}/v1" }}]

[server]
port = 0
max_concurrency = 8
""")
        config, settings = load_server_config(file, max_concurrency=4)  # flags beat the file
        assert (settings.port, settings.max_concurrency) == (0, 4)
        settings = settings.model_copy(update={"health_interval": None})
        pool = ProviderPool()
        app = create_app(settings, config=config, plugins=plugins, pool=pool)
        server = await start(app)
        try:
            async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x",
                                          max_retries=0) as client:
                reply = await client.chat.completions.create(model="fast", messages=USER)
                assert reply.choices[0].message.content == PIECE * 5
            assert up.requests == 1
        finally:
            await server.stop()
        assert pool.shared() == []
