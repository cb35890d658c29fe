"""Seed 004's spelling: OllamaConfig(...).to_dict(), OllamaProvider(config), initialize(),
create_provider("ollama", config) with the config positional."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

import modelplex_ollama
from modelplex import create_provider, get_available_providers
from modelplex.errors import ConfigurationError
from modelplex.plugins import Plugins
from modelplex_ollama import OllamaConfig, OllamaProvider


def test_config_to_dict_gives_constructor_keywords() -> None:
    config = OllamaConfig(base_url="http://gpu-box:11434", max_parallel=2)
    assert config.to_dict() == {"host": "http://gpu-box:11434", "max_parallel": 2}
    assert OllamaConfig().to_dict() == {}


async def test_provider_from_a_config_dict() -> None:
    provider = OllamaProvider(OllamaConfig(base_url="gpu-box", max_parallel=3).to_dict())
    assert (provider.host, provider.max_parallel) == ("http://gpu-box:11434", 3)
    await provider.aclose()
    with pytest.raises(ConfigurationError, match="unknown settings"):
        OllamaProvider({"hots": "x"})


async def test_initialize_says_whether_the_server_answers(
        local_server: Callable[[dict[tuple[str, str], Any]], Awaitable[str]],
        closed_port: int) -> None:
    async def tags(request: web.Request) -> web.Response:
        return web.json_response({"models": []})

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"version": "0.5.7"})

    base = await local_server({("GET", "/api/tags"): tags, ("GET", "/api/version"): version})
    async with OllamaProvider(OllamaConfig(base_url=base).to_dict()) as provider:
        assert await provider.initialize() is True
    async with OllamaProvider({"host": f"http://127.0.0.1:{closed_port}"}) as provider:
        assert await provider.initialize() is False


async def test_create_provider_takes_the_config_positional(
        modelplex_plugins: Plugins, register_plugin: Callable[..., str]) -> None:
    register_plugin(modelplex_ollama, name="ollama")
    config = OllamaConfig(base_url="http://gpu-box:11434").to_dict()
    for given in (config, OllamaConfig(base_url="http://gpu-box:11434")):
        provider = create_provider("ollama", given)
        assert isinstance(provider, OllamaProvider)
        assert provider.host == "http://gpu-box:11434"
        await provider.aclose()
    provider = create_provider("ollama", config, max_parallel=4)  # keywords win
    assert provider.max_parallel == 4
    await provider.aclose()
    assert "ollama" in get_available_providers()
    assert get_available_providers() == sorted(get_available_providers())


async def test_a_failed_pull_is_a_model_download_error(provider: OllamaProvider,
                                                       mock: Any, wire: Any) -> None:
    from modelplex.errors import ModelDownloadError, StreamError

    mock.post(wire.url("/api/pull"), body=wire.ndjson(
        {"status": "pulling manifest"}, {"error": "max retries exceeded: EOF"}))
    with pytest.raises(ModelDownloadError) as info:
        async for _ in provider.pull_model("llama3.2"):
            pass
    err = info.value
    assert isinstance(err, StreamError)  # what callers caught before
    assert (err.model, err.reason) == ("llama3.2", "max retries exceeded: EOF")
    assert err.details == {"error": "max retries exceeded: EOF"}
    assert err.provider == "ollama"
