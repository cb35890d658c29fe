"""Fixtures for the llama.cpp provider tests: the tiny generated GGUF in a models folder, and
the server with the llamacpp provider configured to use it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelplex_llamacpp.tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding ``tiny.gguf``, the tiny random-weight model."""
    folder = tmp_path_factory.mktemp("models")
    write_tiny_gguf(folder / "tiny.gguf", seed=0)
    return folder


class Served:
    """``modelplex serve``'s application, in-process on a free port, with a
    ``[providers.llamacpp]`` table; :meth:`post` sends a JSON body and gives the status and
    the JSON answer (the text of a stream)."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.session.post(self.url + path, json=body) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()


ServeFactory = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(models_dir: Path, monkeypatch: pytest.MonkeyPatch
                ) -> AsyncIterator[ServeFactory]:
    """``served = await serve(allow_load_options=True)``: a server whose config has
    ``[providers.llamacpp] models_dir = ...`` plus the given keywords."""
    pytest.importorskip("modelplex_server")
    from modelplex.config import parse_config
    from modelplex.plugins import Plugins
    from modelplex.pool import ProviderPool
    from modelplex_server.app import AppServer, create_app, start
    from modelplex_server.settings import ServerSettings

    monkeypatch.setenv("MODELPLEX_LOAD_PLUGINS", "llamacpp,server")
    servers: list[AppServer] = []
    async with aiohttp.ClientSession() as session:

        async def factory(**llamacpp: Any) -> Served:
            config = parse_config({"providers": {"llamacpp": {
                "models_dir": str(models_dir), **llamacpp}}})
            app = create_app(ServerSettings(port=0, health_interval=None), plugins=Plugins(),
                             config=config, pool=ProviderPool())
            servers.append(await start(app))
            return Served(servers[-1].url, session)

        try:
            yield factory
        finally:
            for server in servers:
                await server.stop()
