"""``/healthz`` and ``/readyz`` over real sockets: public, cheap, and saying which part of the
server is not ready (a closed store, no healthy provider)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import aiohttp

from modelplex.plugins import Plugins
from modelplex.registry import ModelRegistry
from modelplex_server.app import AppServer, create_app, start
from modelplex_server.resolve import ModelResolver
from modelplex_server.settings import KeyConfig, ServerSettings, generate_key, hash_key
from modelplex_server.sqlite_store import SQLiteConversationStore


async def get(server: AppServer, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(server.url + path) as resp:
        return resp.status, json.loads(await resp.text())


async def test_healthz_and_readyz_are_public(serve: Any) -> None:
    key = generate_key()
    server = await serve(keys=[KeyConfig(name="k", hash=hash_key(key))])
    assert await get(server, "/healthz") == (200, {"status": "ok", "pid": os.getpid()})
    status, body = await get(server, "/readyz")
    assert status == 200, body
    assert body["ready"] is True
    checks = body["checks"]
    assert set(checks) == {"config", "store", "state", "providers"}
    assert all(part["ok"] for part in checks.values())
    assert checks["store"]["detail"] == "memory"
    assert checks["state"]["backend"] == "memory"
    assert "fault" in checks["providers"]["healthy"]  # the upstream answers
    assert "down" not in checks["providers"]["healthy"]  # nothing listens there
    status, _ = await get(server, "/api/models")
    assert status == 401  # the rest still needs the key


async def test_readyz_names_an_unreachable_store(serve: Any, tmp_path: Path) -> None:
    store = SQLiteConversationStore(tmp_path / "c.db")
    server = await serve(store=store)
    status, body = await get(server, "/readyz")
    assert status == 200 and body["checks"]["store"]["detail"] == f"SQLite {store.path}"
    store.close()  # the database is gone from under the server
    status, body = await get(server, "/readyz")
    assert status == 503 and body["ready"] is False
    assert body["checks"]["store"]["ok"] is False
    assert "closed" in body["checks"]["store"]["detail"]
    assert body["checks"]["providers"]["ok"] is True
    assert (await get(server, "/healthz"))[0] == 200  # alive all the same


async def test_readyz_without_a_healthy_provider(plugins: Plugins) -> None:
    settings = ServerSettings(port=0, health_interval=None)
    resolver = ModelResolver(plugins=plugins)
    registry = ModelRegistry(plugins=plugins, get_provider=resolver.provider,
                             providers=["down"], timeout=5)
    server = await start(create_app(settings, resolver=resolver, registry=registry))
    try:
        status, body = await get(server, "/readyz")
        assert status == 503
        providers = body["checks"]["providers"]
        assert providers["ok"] is False and providers["healthy"] == []
        assert providers["detail"] == "none of 1 providers is healthy"
        assert set(providers["errors"]) == {"down"}
        assert body["checks"]["store"]["ok"] is True
    finally:
        await server.stop()
