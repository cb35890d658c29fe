"""Providers that are not configured (no key, no base URL of the user's) are reported as such,
with the variable to set, and never contacted: a machine without keys makes no request to a
public API when the page lists models or checks health (issue 25, the web page)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelplex.plugins import Plugins
from modelplex.registry import ModelRegistry
from modelplex.testing.replay import Replay
from modelplex_server.app import AppServer, create_app, start
from modelplex_server.resolve import ModelResolver
from modelplex_server.settings import ServerSettings

KEYS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_API_KEY",
        "HF_ENDPOINT")
REMOTE = ["openai", "anthropic", "huggingface"]


@pytest.fixture
def wire() -> Iterator[Replay]:
    """Every HTTP request the server makes outside this machine is recorded (and refused);
    the test's own requests to the server pass through."""
    with Replay(passthrough=["http://127.0.0.1"]) as mock:
        yield mock


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    (tmp_path / "openai.toml").write_text("")
    monkeypatch.setenv("MODELPLEX_OPENAI_CONFIG", str(tmp_path / "openai.toml"))
    monkeypatch.setenv("MODELPLEX_OPENAI_ENDPOINTS", json.dumps(
        {"mine": {"base_url": "https://llm.example.test/v1"}}))  # a base URL: configured
    monkeypatch.setenv("MODELPLEX_LOAD_PLUGINS", "openai,anthropic,huggingface,server")
    return monkeypatch


@pytest.fixture
async def server(no_keys: pytest.MonkeyPatch, wire: Replay) -> AsyncIterator[AppServer]:
    plugins = Plugins()
    settings = ServerSettings(port=0, health_interval=None)
    resolver = ModelResolver(plugins=plugins)
    registry = ModelRegistry(plugins=plugins, get_provider=resolver.provider,
                             providers=[*REMOTE, "mine"], timeout=5)
    running = await start(create_app(settings, resolver=resolver, registry=registry))
    yield running
    await running.stop()


async def get(server: AppServer, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(server.url + path) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def outside(wire: Replay) -> list[str]:
    return sorted({str(url) for (_, url) in wire.requests if url.host != "127.0.0.1"})


async def test_not_configured_providers_are_reported_and_never_contacted(
        server: AppServer, wire: Replay) -> None:
    wire.get("https://llm.example.test/v1/models", payload={"data": [{"id": "m1"}]},
             repeat=True)
    providers = {p["provider"]: p for p in (await get(server, "/api/providers"))["providers"]}
    expected = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY",
                "huggingface": "HF_TOKEN"}
    for name, variable in expected.items():
        entry = providers[name]
        assert (entry["status"], entry["missing"], entry["available"]) == (
            "not_configured", variable, False), entry
        assert entry["error"] is None  # not a red error: nothing was tried
        assert entry["health"]["status"] == "not_configured"
        assert entry["health"]["detail"] == f"not configured: set {variable}"
    assert providers["mine"]["status"] == "ok" and providers["mine"]["models_count"] == 1
    health = await get(server, "/api/models/providers/health")
    assert health["anthropic"]["status"] == "not_configured"
    assert health["anthropic"]["missing"] == "ANTHROPIC_API_KEY"
    models = await get(server, "/api/models?refresh=true")
    assert models["models"]["anthropic"] == [] and "anthropic" not in models["errors"]
    assert models["not_configured"] == expected
    await get(server, "/api/providers/health?refresh=true")
    # the only request that left the machine went to the endpoint with a base URL
    assert outside(wire) == ["https://llm.example.test/v1/models"]


async def test_a_key_makes_a_provider_configured(no_keys: pytest.MonkeyPatch,
                                                 wire: Replay) -> None:
    no_keys.setenv("ANTHROPIC_API_KEY", "sk-ant-test-abcdefgh")
    plugins = Plugins()
    resolver = ModelResolver(plugins=plugins)
    wire.get("https://api.anthropic.com/v1/models?limit=1000", payload={
        "data": [{"id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5",
                  "type": "model", "created_at": "2025-09-29T00:00:00Z"}], "has_more": False})
    async with ModelRegistry(plugins=plugins, get_provider=resolver.provider,
                             providers=["anthropic", "openai"]) as registry:
        listings = await registry.listings()
        assert listings["anthropic"].missing is None
        assert listings["openai"].missing == "OPENAI_API_KEY"
    await resolver.aclose()
    assert [url.host for (_, url) in wire.requests] == ["api.anthropic.com"]
