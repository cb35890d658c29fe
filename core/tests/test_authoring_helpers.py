"""The core helpers for provider authors: finish reasons, stream readers, foreign errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from modelplex.chunks import StreamChunk, Usage
from modelplex.errors import (
    ModelplexError,
    ProviderConnectionError,
    ProviderError,
    RateLimitError,
    StreamError,
)
from modelplex.finish import FINISH_REASONS, normalize_finish_reason
from modelplex.http import HttpClient
from modelplex.provider import ChatRequest, Provider
from modelplex.streams import dispatch, ndjson_json, sse_json
from modelplex.testing import PIECE, FaultyUpstream, Reply, serve_app
from modelplex.types import ModelInfo, PullProgress

MESSAGES = [{"role": "user", "content": "hi"}]


# -- finish reasons ---------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "expected"), [
    ("stop", "stop"), ("end_turn", "stop"), ("stop_sequence", "stop"), ("eos_token", "stop"),
    ("length", "length"), ("max_tokens", "length"), ("MAX_TOKENS", "length"),
    ("tool_use", "tool_calls"), ("function_call", "tool_calls"),
    ("SAFETY", "content_filter"), ("refusal", "refusal"), ("load", "stop"),
    ("something_new", "other"), (None, "stop"), ("", "stop")])
def test_normalize_finish_reason(raw: str | None, expected: str) -> None:
    assert normalize_finish_reason(raw) == expected
    assert normalize_finish_reason(raw) in FINISH_REASONS


def test_normalize_finish_reason_extra_and_default() -> None:
    assert normalize_finish_reason("halted", extra={"halted": "length"}) == "length"
    assert normalize_finish_reason(None, default="length") == "length"


# -- stream readers ---------------------------------------------------------------------------
async def _events(upstream: FaultyUpstream, path: str, body: dict[str, Any],
                  **kw: Any) -> list[tuple[str | None, Any]]:
    http = HttpClient(upstream.url, provider="t")
    try:
        async with http.stream("POST", path, body) as resp:
            return [e async for e in sse_json(resp, provider="t", **kw)]
    finally:
        await http.aclose()


async def test_sse_json_stops_at_done() -> None:
    async with FaultyUpstream(chunks=3) as upstream:
        events = await _events(upstream, "/v1/chat/completions",
                               {"model": "m", "stream": True, "messages": MESSAGES})
    texts = [e[1]["choices"][0]["delta"].get("content") for e in events if e[1]["choices"]]
    assert texts == ["", PIECE, PIECE, PIECE, None]
    assert events[-1][1]["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize(("fault", "message"), [
    ("no_end", "ended before the answer was finished"), ("error_event", "the model crashed"),
    ("malformed", "malformed event")])
async def test_sse_json_faults(fault: str, message: str) -> None:
    async with FaultyUpstream() as upstream:
        upstream.faults.append(fault)
        with pytest.raises(StreamError, match=message):
            await _events(upstream, "/v1/chat/completions",
                          {"model": "m", "stream": True, "messages": MESSAGES})


class _AnthropicState:
    """Handlers for named events, keeping the usage between them."""

    def __init__(self) -> None:
        self.prompt_tokens = 0

    def start(self, obj: Any) -> None:
        self.prompt_tokens = obj["message"]["usage"]["input_tokens"]

    def delta(self, obj: Any) -> StreamChunk:
        return StreamChunk(content=obj["delta"]["text"])

    def finish(self, obj: Any) -> StreamChunk:
        return StreamChunk(finish_reason=normalize_finish_reason(obj["delta"]["stop_reason"]),
                           usage=Usage(self.prompt_tokens, obj["usage"]["output_tokens"]))


async def _anthropic(upstream: FaultyUpstream) -> list[StreamChunk]:
    state = _AnthropicState()
    http = HttpClient(upstream.url, provider="t")
    try:
        async with http.stream("POST", "/v1/messages", {"model": "m", "stream": True,
                                                        "messages": MESSAGES}) as resp:
            events = sse_json(resp, provider="t", done=None, end_events=("message_stop",))
            return [c async for c in dispatch(events, {
                "message_start": state.start, "content_block_delta": state.delta,
                "message_delta": state.finish})]
    finally:
        await http.aclose()


async def test_dispatch_named_events() -> None:
    async with FaultyUpstream(chunks=2) as upstream:
        upstream.script("m", Reply(pieces=["Hel", "lo"], finish="length", prompt_tokens=7))
        chunks = await _anthropic(upstream)
        assert [c.content for c in chunks] == ["Hel", "lo", ""]
        assert chunks[-1].finish_reason == "length"
        assert chunks[-1].usage == Usage(7, 2)
        upstream.faults.extend(["no_end", "error_event"])
        with pytest.raises(StreamError, match="ended before"):
            await _anthropic(upstream)
        with pytest.raises(StreamError, match="Overloaded"):
            await _anthropic(upstream)


async def _ndjson(upstream: FaultyUpstream) -> list[Any]:
    http = HttpClient(upstream.url, provider="t")
    try:
        async with http.stream("POST", "/api/chat", {"model": "m", "messages": MESSAGES}) as r:
            return [o async for o in ndjson_json(r, provider="t")]
    finally:
        await http.aclose()


async def test_ndjson_json() -> None:
    async with FaultyUpstream(chunks=2) as upstream:
        objects = await _ndjson(upstream)
        assert [o["done"] for o in objects] == [False, False, True]
        upstream.faults.extend(["no_end", "error_event"])
        with pytest.raises(StreamError, match="ended before"):
            await _ndjson(upstream)
        with pytest.raises(StreamError, match="an error was encountered"):
            await _ndjson(upstream)


# -- foreign exceptions -------------------------------------------------------------------------
class Careless(Provider):
    """Raises whatever its ``error`` is, after one chunk."""

    name = "careless"

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        yield StreamChunk(content="partial ")
        raise self.error

    async def list_models(self) -> list[ModelInfo]:
        raise self.error

    async def pull_model(self, name: str) -> AsyncIterator[PullProgress]:  # type: ignore[override]
        yield PullProgress(status="pulling")
        raise self.error


def _client_response_error(status: int) -> aiohttp.ClientResponseError:
    info = aiohttp.RequestInfo(url=URL("http://x"), method="POST",
                               headers=CIMultiDictProxy(CIMultiDict()), real_url=URL("http://x"))
    return aiohttp.ClientResponseError(info, (), status=status, message="Too Many Requests")


@pytest.mark.parametrize(("error", "expected"), [
    (KeyError("choices"), ProviderError), (ConnectionResetError("reset"), ProviderConnectionError),
    (_client_response_error(429), RateLimitError),
    (aiohttp.ClientPayloadError("cut"), StreamError)])
async def test_foreign_exceptions_become_provider_errors(error: Exception,
                                                         expected: type[Exception]) -> None:
    provider = Careless(error)
    with pytest.raises(expected) as info:
        async for _ in provider.chat(MESSAGES, model="m"):
            pass
    assert info.value.__cause__ is error
    assert info.value.partial_content == "partial "
    assert "careless" in str(info.value)
    with pytest.raises(expected):
        await provider.complete(MESSAGES, model="m")
    with pytest.raises(expected):
        await provider.list_models()
    with pytest.raises(expected):
        async for _ in provider.pull_model("m"):
            pass
    assert not (await provider.health()).healthy


async def test_modelplex_errors_pass_through() -> None:
    err = ModelplexError("ours")
    with pytest.raises(ModelplexError) as info:
        await Careless(err).list_models()
    assert info.value is err


# -- the test upstream's checks -----------------------------------------------------------------
async def test_upstream_checks_headers_and_models_and_records() -> None:
    from modelplex.errors import AuthenticationError, ModelNotFoundError

    async with FaultyUpstream(models=["m"], require_headers={"x-api-key": "k1"}) as upstream:
        body = {"model": "m", "stream": False, "messages": MESSAGES}
        http = HttpClient(upstream.url, provider="t")
        with pytest.raises(AuthenticationError, match="x-api-key"):
            await http.request_json("POST", "/v1/chat/completions", body)
        await http.aclose()
        http = HttpClient(upstream.url, provider="t", headers={"x-api-key": "k1"})
        try:
            answer = await http.request_json("POST", "/v1/chat/completions", body)
            assert answer["choices"][0]["message"]["content"] == PIECE * upstream.chunks
            with pytest.raises(ModelNotFoundError, match="'other' not found"):
                await http.request_json("POST", "/v1/chat/completions",
                                        {**body, "model": "other"})
            assert upstream.open_connections == 1
        finally:
            await http.aclose()
        assert [r.json["model"] for r in upstream.chat_requests()] == ["m", "m", "other"]
        assert upstream.received[-1].headers["x-api-key"] == "k1"
        assert upstream.received[-1].path == "/v1/chat/completions"


# -- serve_app ---------------------------------------------------------------------------------
async def test_serve_app_serves_on_a_free_local_port_until_the_block_ends() -> None:
    from aiohttp import web

    async def hello(_: web.Request) -> web.Response:
        return web.json_response({"hello": "world"})

    app = web.Application()
    app.router.add_get("/hello", hello)
    with pytest.raises(RuntimeError, match="boom"):
        async with serve_app(app) as url:
            assert url.startswith("http://127.0.0.1:") and not url.endswith("/")
            async with aiohttp.ClientSession() as session, session.get(url + "/hello") as resp:
                assert await resp.json() == {"hello": "world"}
            raise RuntimeError("boom")
    async with aiohttp.ClientSession() as session:  # stopped, even on an error
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(url + "/hello")


async def test_serve_app_cancels_a_handler_whose_client_went_away() -> None:
    import asyncio

    from aiohttp import web

    started, cancelled = asyncio.Event(), asyncio.Event()

    async def forever(_: web.Request) -> web.Response:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get("/forever", forever)
    async with serve_app(app) as url:
        async with aiohttp.ClientSession() as session:
            request = asyncio.create_task(session.get(url + "/forever"))
            await started.wait()
            request.cancel()
        await asyncio.wait_for(cancelled.wait(), 60)  # guards a hang, not a timing


# -- the readers' end state, error hook and object check ---------------------------------------
async def _reader(upstream: FaultyUpstream, path: str, read: Any) -> Any:
    http = HttpClient(upstream.url, provider="t")
    try:
        async with http.stream("POST", path, {"model": "m", "stream": True,
                                              "messages": MESSAGES}) as resp:
            return await read(resp)
    finally:
        await http.aclose()


async def test_sse_reader_reports_whether_the_end_came() -> None:
    async def read(resp: Any) -> tuple[bool, int, StreamError]:
        reader = sse_json(resp, provider="t", require_end=False)
        count = len([e async for e in reader])
        return reader.ended, count, reader.cut_short()

    async with FaultyUpstream(chunks=2) as upstream:
        ended, count, err = await _reader(upstream, "/v1/chat/completions", read)
        assert ended and count == 5  # role, 2 pieces, finish, usage; [DONE] not yielded
        upstream.faults.append("no_end")
        ended, count, err = await _reader(upstream, "/v1/chat/completions", read)
        assert not ended and count == 3
        assert "ended before the answer was finished" in str(err)


async def test_error_hook_builds_the_error() -> None:
    class Crashed(StreamError):
        pass

    def hook(obj: Any) -> StreamError:
        return Crashed(f"crashed: {obj['error']['type']}")

    async def read(resp: Any) -> list[Any]:
        return [e async for e in sse_json(resp, provider="t", error=hook)]

    async with FaultyUpstream() as upstream:
        upstream.faults.append("error_event")
        with pytest.raises(Crashed, match="crashed: server_error"):
            await _reader(upstream, "/v1/chat/completions", read)


async def test_named_end_event_without_event_lines_uses_the_type() -> None:
    async def read(resp: Any) -> list[Any]:
        reader = sse_json(resp, provider="t", done=None, end_events=("message_stop",))
        return [obj async for _event, obj in reader]

    body = ('data: {"type": "message_start"}\n\ndata: {"type": "message_stop"}\n\n'
            'data: {"type": "after"}\n\n')
    async with FaultyUpstream() as upstream:
        objects = await _raw(upstream, body, read)
    assert [o["type"] for o in objects] == ["message_start", "message_stop"]


async def test_objects_only_refuses_other_values() -> None:
    async def read_sse(resp: Any) -> list[Any]:
        return [e async for e in sse_json(resp, provider="t", objects_only=True)]

    async def read_nd(resp: Any) -> list[Any]:
        return [o async for o in ndjson_json(resp, provider="t", objects_only=True)]

    async with FaultyUpstream() as upstream:
        with pytest.raises(StreamError, match="unexpected value in the stream: \\[1, 2\\]"):
            await _raw(upstream, "data: [1, 2]\n\ndata: [DONE]\n\n", read_sse)
        with pytest.raises(StreamError, match="unexpected value in the stream: 3"):
            await _raw(upstream, '{"done": false}\n3\n', read_nd)
        reader_values = await _raw(upstream, "data: [1, 2]\n\ndata: [DONE]\n\n",
                                   lambda r: _all(sse_json(r, provider="t")))
        assert reader_values == [(None, [1, 2])]


async def _all(reader: Any) -> list[Any]:
    return [item async for item in reader]


async def _raw(upstream: FaultyUpstream, body: str, read: Any) -> Any:
    """Read ``body`` as the response of a small server (a route added to nothing else)."""
    from aiohttp import web

    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body.encode(), content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/raw", handler)
    async with serve_app(app) as url:
        http = HttpClient(url, provider="t")
        try:
            async with http.stream("POST", "/raw", {}) as resp:
                return await read(resp)
        finally:
            await http.aclose()
