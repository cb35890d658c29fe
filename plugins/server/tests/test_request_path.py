"""The server is one more caller of the request path: the same stack as ``modelplex chat``
(recording -> telemetry -> cache -> router -> provider), from the same config file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from modelplex import hookimpl
from modelplex.config import parse_config
from modelplex.plugins import Plugins
from modelplex.provider import ChatRequest
from modelplex.store.logs import LogStore
from modelplex.testing.upstream import FaultyUpstream
from modelplex.wrapping import LayerContext, WrappingProvider
from modelplex_server.app import create_app, start
from modelplex_server.resolve import ModelResolver
from modelplex_server.settings import ServerSettings

HELLO = {"model": "fault:fault", "messages": [{"role": "user", "content": "hi"}],
         "temperature": 0}


class Probe(WrappingProvider):
    """Counts the requests that reach it."""

    def __init__(self, inner: Any, caller: str) -> None:
        super().__init__(inner)
        self.caller = caller
        self.seen = 0
        self.streamed = 0

    def stream_request(self, request: ChatRequest) -> Any:
        self.seen += 1
        self.streamed += 1
        return self.inner.stream_request(request)

    async def complete_request(self, request: ChatRequest) -> Any:
        self.seen += 1
        return await self.inner.complete_request(request)


class ProbePlugin:
    @hookimpl
    def register_layers(self, register: Any) -> None:
        def factory(inner: Any, ctx: LayerContext) -> Probe:
            return Probe(inner, ctx.caller)

        register(factory, name="probe", before="cache")


def _chain(provider: Any) -> list[Any]:
    chain = []
    while provider is not None:
        chain.append(provider)
        provider = getattr(provider, "wrapped", None)
    return chain


async def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def test_the_server_caches_records_and_has_the_plugins_layer(
        plugins: Plugins, upstream: FaultyUpstream, tmp_path: Path) -> None:
    plugins.register(ProbePlugin(), name="probe")
    config = parse_config({"cache": {"backend": "memory"}})
    resolver = ModelResolver(config=config, plugins=plugins, logs=tmp_path / "logs.db")
    server = await start(create_app(ServerSettings(port=0, health_interval=None),
                                    resolver=resolver))
    try:
        for _ in range(2):
            status, body = await _post(server.url + "/v1/chat/completions", HELLO)
            assert status == 200 and body["choices"][0]["message"]["content"]
        assert upstream.requests == 1  # the second identical request was a cache hit
        top, _ = await resolver.resolve_model("fault:fault")
        names = [type(p).__name__ for p in _chain(top)]
        # the telemetry layer is there for /metrics (modelplex_server.metrics)
        assert names == ["RecordingProvider", "TelemetryLayer", "Probe", "CachedProvider",
                         "Router"]
        probe = _chain(top)[2]
        assert probe.caller == "server" and probe.seen == 2
    finally:
        await server.stop()
    store = LogStore(tmp_path / "logs.db")
    recorded = store.recent(limit=10)
    assert [(e.provider, e.model, e.cached) for e in reversed(recorded)] == [
        ("fault", "fault", False), ("fault", "fault", True)]
    store.close()


async def test_non_streaming_apis_ask_the_stack_for_a_whole_answer(
        plugins: Plugins, upstream: FaultyUpstream) -> None:
    plugins.register(ProbePlugin(), name="probe")
    resolver = ModelResolver(config=parse_config({}), plugins=plugins)
    server = await start(create_app(ServerSettings(port=0, health_interval=None),
                                    resolver=resolver))
    try:
        status, body = await _post(server.url + "/v1/chat/completions", HELLO)
        assert status == 200 and body["choices"][0]["message"]["content"]
        for path in ("/ollama/api/chat", "/ollama/api/generate"):
            ask = ({"messages": HELLO["messages"]} if path.endswith("chat")
                   else {"prompt": "hi"})
            status, body = await _post(server.url + path,
                                       {"model": "fault:fault", "stream": False, **ask})
            assert status == 200 and body["done"] is True
            assert (body.get("response") or body["message"]["content"])
        top, _ = await resolver.resolve_model("fault:fault")
        probe = next(p for p in _chain(top) if isinstance(p, Probe))
        assert (probe.seen, probe.streamed) == (3, 0)
        sent = [bool(r.json.get("stream")) for r in upstream.chat_requests()]
        assert sent == [False, False, False]  # the provider's non-streaming request
    finally:
        await server.stop()


async def test_a_log_database_that_cannot_be_opened_does_not_fail_requests(
        plugins: Plugins, tmp_path: Path) -> None:
    (tmp_path / "logs.db").mkdir()  # a folder where the database should be
    resolver = ModelResolver(config=parse_config({}), plugins=plugins,
                             logs=tmp_path / "logs.db")
    server = await start(create_app(ServerSettings(port=0, health_interval=None),
                                    resolver=resolver))
    try:
        status, body = await _post(server.url + "/v1/chat/completions", HELLO)
        assert status == 200 and body["choices"][0]["message"]["content"]
    finally:
        await server.stop()


async def test_rest_conversations_are_recorded_under_their_id(
        plugins: Plugins, tmp_path: Path) -> None:
    resolver = ModelResolver(config=parse_config({}), plugins=plugins, logs=tmp_path / "l.db")
    server = await start(create_app(ServerSettings(port=0, health_interval=None),
                                    resolver=resolver))
    try:
        status, conv = await _post(server.url + "/api/conversations", {"model": "fault:fault"})
        assert status == 201
        async with aiohttp.ClientSession() as session, session.post(
                server.url + "/api/chat",
                json={"conversation_id": conv["id"], "message": "hi"}) as resp:
            assert resp.status == 200
            await resp.read()
    finally:
        await server.stop()
    store = LogStore(tmp_path / "l.db")
    assert [e.prompt for e in store.exchanges(conv["id"])] == ["hi"]
    store.close()


def test_modelplex_serve_stores_exchanges_where_modelplex_chat_does(
        tmp_path: Path, monkeypatch: Any) -> None:
    from modelplex_server.cli import _log_database

    monkeypatch.setenv("MODELPLEX_DATA_DIR", str(tmp_path))
    assert _log_database(parse_config({})) == str(tmp_path / "logs.db")
    config = parse_config({"conversations": {"path": str(tmp_path / "x.db")}})
    assert _log_database(config) == str(tmp_path / "x.db")
    assert _log_database(parse_config({"conversations": {"log": False}})) is None
    from modelplex.store.logs import set_logs_enabled

    set_logs_enabled(False)  # modelplex logs off
    assert _log_database(config) is None
