"""The shared HTTP machinery against real servers on 127.0.0.1.

aiohttp.web servers (``modelplex.testing.serve_app``, port 0) play well-behaved upstreams;
raw asyncio servers play the ones that stall or break off, where an HTTP framework would get
in the way.
"""

from __future__ import annotations

import asyncio
import email.utils
import gc
import json
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from modelplex import errors
from modelplex.http import (
    HttpClient,
    Timeouts,
    error_from_status,
    extract_error_message,
    iter_ndjson,
    iter_sse,
    parse_retry_after,
)
from modelplex.testing import closed_port_url, serve_app

Serve = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start aiohttp apps on 127.0.0.1 (a free port each); returns the base URL."""
    async with AsyncExitStack() as servers:

        async def start(app: web.Application) -> str:
            return await servers.enter_async_context(serve_app(app))

        yield start


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_serve() -> AsyncIterator[Callable[[RawHandler], Awaitable[str]]]:
    """Start a raw TCP server; the handler owns the connection, closed at teardown."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []
    tasks: list[asyncio.Task[None]] = []

    async def start(handler: RawHandler) -> str:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            task = asyncio.current_task()
            assert task is not None
            tasks.append(task)
            await handler(reader, writer)

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for task in tasks:
        task.cancel()
    for writer in writers:
        writer.close()
    for server in servers:
        server.close()
        await server.wait_closed()
    await asyncio.gather(*tasks, return_exceptions=True)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")


def pieces_app(pieces: list[bytes], content_type: str = "application/x-ndjson",
               delay: float = 0.01) -> web.Application:
    """An app whose GET /s writes ``pieces`` as separate network writes, ``delay`` apart."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
            await asyncio.sleep(delay)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/s", handler)
    return app


async def read_ndjson(url: str, **kw: Any) -> list[Any]:
    client = HttpClient(url, provider="test", **kw)
    try:
        async with client.stream("GET", "/s") as resp:
            return [obj async for obj in iter_ndjson(resp, client.max_line_bytes,
                                                     provider="test")]
    finally:
        await client.aclose()


async def read_sse(url: str, **kw: Any) -> list[tuple[str | None, bytes]]:
    client = HttpClient(url, provider="test", **kw)
    try:
        async with client.stream("GET", "/s") as resp:
            return [ev async for ev in iter_sse(resp, client.max_line_bytes, provider="test")]
    finally:
        await client.aclose()


# -- NDJSON -------------------------------------------------------------------------------------
async def test_ndjson_lines_blank_lines_crlf_and_no_trailing_newline(serve: Serve) -> None:
    url = await serve(pieces_app([b'{"a":1}\n', b"\n", b'{"b":2}\r\n', b"   \n",
                                  b'{"c":"x"}\n{"d":4}']))
    assert await read_ndjson(url) == [{"a": 1}, {"b": 2}, {"c": "x"}, {"d": 4}]


async def test_ndjson_line_split_across_network_writes(serve: Serve) -> None:
    body = b'{"message":{"content":"Paris"},"done":false}\n{"done":true,"eval_count":3}\n'
    pieces = [body[i:i + 5] for i in range(0, len(body), 5)]
    url = await serve(pieces_app(pieces, delay=0.005))
    assert await read_ndjson(url) == [{"message": {"content": "Paris"}, "done": False},
                                      {"done": True, "eval_count": 3}]


async def test_ndjson_malformed_line_is_a_stream_error(serve: Serve) -> None:
    url = await serve(pieces_app([b'{"a":1}\n', b"not json\n"]))
    with pytest.raises(errors.StreamError, match="malformed line") as info:
        await read_ndjson(url)
    assert b"not json" in str(info.value).encode()


async def test_max_line_bytes_on_a_line_still_growing(serve: Serve) -> None:
    url = await serve(pieces_app([b'{"a":1}\n', b"x" * 600, b"y" * 600, b"\n"]))
    with pytest.raises(errors.ResponseTooLargeError, match="1000 bytes"):
        await read_ndjson(url, max_line_bytes=1000)


async def test_max_line_bytes_on_a_complete_long_line(serve: Serve) -> None:
    line = json.dumps({"content": "x" * 5000}).encode() + b"\n"
    url = await serve(pieces_app([line, b'{"a":1}\n']))
    with pytest.raises(errors.ResponseTooLargeError):
        await read_ndjson(url, max_line_bytes=1000)
    assert len(await read_ndjson(url, max_line_bytes=10_000)) == 2


# -- SSE ----------------------------------------------------------------------------------------
SSE_BODY = (
    b": keep-alive ping\n\n"
    b'data: {"a":1}\n\n'
    b'data:{"b":2}\n\n'
    b'event: message_start\ndata: {"c":3}\n\n'
    b"data: line one\ndata: line two\ndata:line three\n\n"
    b"data:  two spaces\n\n"
    b"event: ping\n\n"
    b"data: after ping\n\n"
    b': comment in the middle\ndata: {"d":4}\n\n'
    b"error: {\"message\":\"slot unavailable\"}\n\n"
    b"id: 7\nretry: 1000\ndata: with id\n\n"
    b"data: [DONE]\n\n"
)
SSE_EVENTS = [
    (None, b'{"a":1}'),
    (None, b'{"b":2}'),
    ("message_start", b'{"c":3}'),
    (None, b"line one\nline two\nline three"),
    (None, b" two spaces"),
    (None, b"after ping"),
    (None, b'{"d":4}'),
    ("error", b'{"message":"slot unavailable"}'),
    (None, b"with id"),
    (None, b"[DONE]"),
]


async def test_sse_parsing_rules(serve: Serve) -> None:
    url = await serve(pieces_app([SSE_BODY], "text/event-stream"))
    assert await read_sse(url) == SSE_EVENTS


async def test_sse_with_crlf_line_endings(serve: Serve) -> None:
    url = await serve(pieces_app([SSE_BODY.replace(b"\n", b"\r\n")], "text/event-stream"))
    assert await read_sse(url) == SSE_EVENTS


async def test_sse_split_across_network_writes(serve: Serve) -> None:
    body = SSE_BODY.replace(b"\n", b"\r\n")
    pieces = [body[i:i + 7] for i in range(0, len(body), 7)]
    url = await serve(pieces_app(pieces, "text/event-stream", delay=0.002))
    assert await read_sse(url) == SSE_EVENTS


async def test_sse_blank_lines_and_end_without_newline(serve: Serve) -> None:
    body = b"\n\n\ndata: first\n\n\n\ndata: last"
    url = await serve(pieces_app([body], "text/event-stream"))
    assert await read_sse(url) == [(None, b"first"), (None, b"last")]


async def test_sse_max_line_bytes(serve: Serve) -> None:
    url = await serve(pieces_app([b"data: " + b"x" * 3000 + b"\n\n"], "text/event-stream"))
    with pytest.raises(errors.ResponseTooLargeError):
        await read_sse(url, max_line_bytes=1000)


# -- whole bodies -------------------------------------------------------------------------------
def body_app() -> web.Application:
    async def sized(request: web.Request) -> web.Response:
        return web.json_response({"data": "x" * int(request.query["n"])})

    async def chunked_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(b'{"data":"')
        for _ in range(int(request.query["n"]) // 100):
            await resp.write(b"x" * 100)
        await resp.write(b'"}')
        await resp.write_eof()
        return resp

    async def empty(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def not_json(request: web.Request) -> web.Response:
        return web.Response(text="<html>hello</html>", content_type="text/html")

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"method": request.method, "json": await request.json(),
                                  "type": request.headers.get("Content-Type")})

    app = web.Application()
    app.router.add_get("/sized", sized)
    app.router.add_get("/chunked", chunked_body)
    app.router.add_get("/empty", empty)
    app.router.add_get("/html", not_json)
    app.router.add_post("/echo", echo)
    return app


async def test_request_json(serve: Serve) -> None:
    client = HttpClient(await serve(body_app()) + "/", provider="test")
    try:
        assert await client.request_json("GET", "/sized?n=3") == {"data": "xxx"}
        assert await client.request_json("POST", "/echo", {"q": [1, "é"]}) == {
            "method": "POST", "json": {"q": [1, "é"]}, "type": "application/json"}
        assert await client.request_json("GET", "/empty") is None
        with pytest.raises(errors.StreamError, match="not valid JSON"):
            await client.request_json("GET", "/html")
    finally:
        await client.aclose()


@pytest.mark.parametrize("path", ["/sized", "/chunked"])
async def test_max_body_bytes(serve: Serve, path: str) -> None:
    client = HttpClient(await serve(body_app()), provider="test", max_body_bytes=2000)
    try:
        assert await client.request_json("GET", f"{path}?n=1000") == {"data": "x" * 1000}
        with pytest.raises(errors.ResponseTooLargeError, match="2000"):
            await client.request_json("GET", f"{path}?n=5000")
    finally:
        await client.aclose()


# -- status mapping -----------------------------------------------------------------------------
def status_app() -> web.Application:
    """POST /err {"status", "body" (JSON or text), "headers"} answers with exactly that."""

    async def handler(request: web.Request) -> web.Response:
        spec = await request.json()
        body = spec["body"]
        headers = spec.get("headers", {})
        if isinstance(body, str):
            return web.Response(status=spec["status"], text=body, headers=headers)
        return web.json_response(body, status=spec["status"], headers=headers)

    app = web.Application()
    app.router.add_post("/err", handler)
    return app


OPENAI_400 = {"error": {"message": "Invalid value for 'temperature': must be <= 2.",
                        "type": "invalid_request_error", "param": "temperature", "code": None}}
OPENAI_401 = {"error": {"message": "Incorrect API key provided.",
                        "type": "invalid_request_error", "code": "invalid_api_key"}}
OLLAMA_404 = {"error": "model 'llama9' not found, try pulling it first"}
TGI_422 = {"error": "Input validation error: `inputs` must have less than 4096 tokens",
           "error_type": "validation"}
OPENAI_429 = {"error": {"message": "Rate limit reached for requests", "type": "requests",
                        "code": "rate_limit_exceeded"}}
LLAMACPP_500 = {"error": {"code": 500, "message": "failed to decode the batch",
                          "type": "server_error"}}
LLAMACPP_503 = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
ANTHROPIC_529 = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


@pytest.mark.parametrize(("status", "body", "cls", "text"), [
    (400, OPENAI_400, errors.BadRequestError, "Invalid value for 'temperature'"),
    (401, OPENAI_401, errors.AuthenticationError, "Incorrect API key provided."),
    (403, {"error": "forbidden"}, errors.AuthenticationError, "forbidden"),
    (404, OLLAMA_404, errors.ModelNotFoundError, "model 'llama9' not found"),
    (422, TGI_422, errors.BadRequestError, "Input validation error"),
    (429, OPENAI_429, errors.RateLimitError, "Rate limit reached"),
    (500, LLAMACPP_500, errors.ServerError, "failed to decode the batch"),
    (502, "<html>Bad Gateway</html>", errors.ServerError, "Bad Gateway (an HTML page"),
    (503, LLAMACPP_503, errors.ServerBusyError, "Loading model"),
    (529, ANTHROPIC_529, errors.ServerBusyError, "Overloaded"),
    (418, {"message": "I'm a teapot"}, errors.ProviderStatusError, "I'm a teapot"),
])
async def test_status_mapping(serve: Serve, status: int, body: Any,
                              cls: type[errors.ProviderStatusError], text: str) -> None:
    client = HttpClient(await serve(status_app()), provider="test")
    try:
        with pytest.raises(errors.ProviderStatusError) as info:
            await client.request_json("POST", "/err", {"status": status, "body": body})
    finally:
        await client.aclose()
    err = info.value
    assert type(err) is cls
    assert err.status_code == status
    assert err.provider == "test"
    assert str(err).startswith(f"test returned HTTP {status}: {text}")
    assert err.body == body


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Retry-After": "7"}, 7.0),
    ({"Retry-After": "0.5"}, 0.5),
    ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5),
    ({"retry-after-ms": "oops", "Retry-After": "9"}, 9.0),
    ({"Retry-After": "soon"}, None),
    ({}, None),
])
@pytest.mark.parametrize("status", [429, 503, 529])
async def test_retry_after(serve: Serve, status: int, headers: dict[str, str],
                           expected: float | None) -> None:
    client = HttpClient(await serve(status_app()), provider="test")
    try:
        with pytest.raises(errors.RateLimitError) as info:
            await client.request_json("POST", "/err", {"status": status, "body": OPENAI_429,
                                                       "headers": headers})
    finally:
        await client.aclose()
    assert info.value.retry_after == expected
    assert info.value.retriable


def test_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = parse_retry_after({"retry-after": when})
    assert seconds is not None
    assert 25 <= seconds <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert parse_retry_after({"retry-after": past}) == 0.0


def test_extract_error_message_shapes() -> None:
    assert extract_error_message(OPENAI_400).startswith("Invalid value")
    assert extract_error_message(OLLAMA_404).startswith("model 'llama9'")
    assert extract_error_message({"detail": "Not Found"}) == "Not Found"
    assert extract_error_message({"error": {"type": "overloaded_error"}}) == "overloaded_error"
    assert extract_error_message({"weird": 1}) == '{"weird": 1}'
    assert extract_error_message(b"plain bytes") == "plain bytes"
    assert extract_error_message(None) == ""
    assert extract_error_message("x" * 1000) == "x" * 500


def test_error_from_status_without_body() -> None:
    err = error_from_status(500, None, provider="p")
    assert type(err) is errors.ServerError
    assert str(err) == "p returned HTTP 500"


class ContextLengthError(errors.BadRequestError):
    """What a provider's error_factory might raise for one special case."""


async def test_error_factory_overrides_and_falls_back(serve: Serve) -> None:
    seen: list[tuple[int, Any, str | None]] = []

    def factory(status: int, body: Any, headers: Any) -> errors.ProviderError | None:
        seen.append((status, body, headers.get("X-Request-Id")))
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and error.get("code") == "context_length":
            return ContextLengthError("prompt too long", status_code=status, body=body,
                                      provider="test")
        return None

    client = HttpClient(await serve(status_app()), provider="test", error_factory=factory)
    try:
        with pytest.raises(ContextLengthError, match="prompt too long"):
            await client.request_json("POST", "/err", {
                "status": 400, "body": {"error": {"code": "context_length", "message": "m"}},
                "headers": {"X-Request-Id": "req-1"}})
        with pytest.raises(errors.ModelNotFoundError):
            await client.request_json("POST", "/err", {"status": 404, "body": OLLAMA_404})
    finally:
        await client.aclose()
    assert [s[0] for s in seen] == [400, 404]
    assert seen[0][2] == "req-1"


KEY = "sk-live-SECRETKEY0123456789"
PLAIN_KEY = "zz-custom-key-987654"


def echo_auth_app() -> web.Application:
    """Answers 401 with the credentials it got, as upstreams sometimes do."""

    async def as_json(request: web.Request) -> web.Response:
        got = f"{request.headers['Authorization']} / {request.headers['X-Api-Key']}"
        return web.json_response({"error": {"message": f"Incorrect API key provided: {got}"}},
                                 status=401)

    async def as_text(request: web.Request) -> web.Response:
        got = f"{request.headers['Authorization']} / {request.headers['X-Api-Key']}"
        return web.Response(text=f"bad credentials {got}", status=403)

    app = web.Application()
    app.router.add_get("/json", as_json)
    app.router.add_get("/text", as_text)
    return app


@pytest.mark.parametrize("path", ["/json", "/text"])
async def test_secrets_never_in_errors(serve: Serve, path: str) -> None:
    client = HttpClient(await serve(echo_auth_app()), provider="test",
                        headers={"Authorization": f"Bearer {KEY}", "X-Api-Key": PLAIN_KEY})
    try:
        with pytest.raises(errors.AuthenticationError) as info:
            await client.request_json("GET", path)
    finally:
        await client.aclose()
    err = info.value
    for text in (str(err), repr(err), repr(err.body), repr(err.args)):
        assert KEY not in text
        assert KEY[8:] not in text
        assert PLAIN_KEY not in text
    assert "***" in str(err)


# -- connection failures and timeouts -----------------------------------------------------------
async def test_connect_to_a_closed_port() -> None:
    url = closed_port_url()
    client = HttpClient(url, provider="test")
    try:
        with pytest.raises(errors.ProviderConnectionError) as info:
            await client.request_json("GET", "/")
    finally:
        await client.aclose()
    assert url.removeprefix("http://") in str(info.value)
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectorError)
    assert info.value.retriable


async def test_first_byte_timeout(raw_serve: Any) -> None:
    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    url = await raw_serve(never_answers)
    client = HttpClient(url, provider="test",
                        timeouts=Timeouts(connect=2, first_byte=0.3, between_chunks=5))
    start = time.monotonic()
    try:
        with pytest.raises(errors.ProviderTimeoutError) as info:
            await client.request_json("POST", "/api/chat", {"model": "m"})
    finally:
        await client.aclose()
    elapsed = time.monotonic() - start
    assert info.value.phase == "first_byte"
    assert info.value.timeout == 0.3
    assert "0.3 s" in str(info.value)
    assert 0.25 <= elapsed < 2.0
    assert isinstance(info.value.__cause__, aiohttp.ServerTimeoutError)


async def test_between_chunks_timeout(raw_serve: Any) -> None:
    async def one_line_then_stall(reader: asyncio.StreamReader,
                                  writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(STREAM_HEAD + chunked(b'{"n":1}\n'))
        await writer.drain()

    url = await raw_serve(one_line_then_stall)
    # first_byte is longer than the stall: only the between-chunks limit can fire
    client = HttpClient(url, provider="test",
                        timeouts=Timeouts(connect=2, first_byte=10, between_chunks=0.3))
    got: list[Any] = []
    start = time.monotonic()
    try:
        with pytest.raises(errors.ProviderTimeoutError) as info:
            async with client.stream("GET", "/") as resp:
                async for obj in iter_ndjson(resp):
                    got.append(obj)
    finally:
        await client.aclose()
    assert got == [{"n": 1}]
    assert info.value.phase == "between_chunks"
    assert info.value.timeout == 0.3
    assert time.monotonic() - start < 3.0


async def test_total_timeout(raw_serve: Any) -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(STREAM_HEAD)
        while True:
            writer.write(chunked(b'{"n":1}\n'))
            await writer.drain()
            await asyncio.sleep(0.05)

    url = await raw_serve(trickle)
    client = HttpClient(url, provider="test",
                        timeouts=Timeouts(connect=5, first_byte=5, between_chunks=5, total=2))
    count = 0
    start = time.monotonic()
    try:
        with pytest.raises(errors.ProviderTimeoutError) as info:
            async with client.stream("GET", "/") as resp:
                async for _ in iter_ndjson(resp):
                    count += 1
    finally:
        await client.aclose()
    # chunks kept flowing (no between-chunks timeout could fire), yet the whole request ended
    # at its total budget; the bounds leave room for a busy machine, not for a missed timeout
    assert info.value.phase == "total"
    assert count >= 1
    assert 1.9 < time.monotonic() - start < 6.0


async def test_stream_breaking_off_is_a_stream_error(raw_serve: Any) -> None:
    async def breaks_off(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(STREAM_HEAD + chunked(b'{"n":1}\n') + b"ff\r\n{\"n\":")
        await writer.drain()
        writer.close()

    url = await raw_serve(breaks_off)
    client = HttpClient(url, provider="test")
    got: list[Any] = []
    try:
        with pytest.raises(errors.StreamError, match="broke off") as info:
            async with client.stream("GET", "/") as resp:
                async for obj in iter_ndjson(resp):
                    got.append(obj)
    finally:
        await client.aclose()
    assert got == [{"n": 1}]
    assert isinstance(info.value.__cause__, aiohttp.ClientError)


# -- leaving a stream early ---------------------------------------------------------------------
def endless_app(state: dict[str, Any]) -> web.Application:
    """GET /endless streams lines until the client goes away; GET /one answers at once."""
    state.setdefault("ports", [])
    state["disconnected"] = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        state["ports"].append(request.transport.get_extra_info("peername")[1])
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        try:
            for n in range(10_000):
                await resp.write(b'{"n":%d}\n' % n)
                await asyncio.sleep(0.01)
        except (ConnectionResetError, asyncio.CancelledError):
            state["disconnected"].set()
            raise
        return resp

    async def one(request: web.Request) -> web.Response:
        state["ports"].append(request.transport.get_extra_info("peername")[1])
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/endless", endless)
    app.router.add_get("/one", one)
    return app


async def test_leaving_a_stream_early_closes_the_connection(serve: Serve) -> None:
    state: dict[str, Any] = {}
    client = HttpClient(await serve(endless_app(state)), provider="test")
    try:
        assert await client.request_json("GET", "/one") == {"ok": True}
        assert await client.request_json("GET", "/one") == {"ok": True}
        assert state["ports"][0] == state["ports"][1]  # a fully read body is kept alive

        async with client.stream("GET", "/endless") as resp:
            async for obj in iter_ndjson(resp):
                if obj["n"] == 2:
                    break
        assert resp.closed
        await asyncio.wait_for(state["disconnected"].wait(), 2)

        assert await client.request_json("GET", "/one") == {"ok": True}
        assert state["ports"][2] == state["ports"][0]  # the stream took the pooled one...
        assert state["ports"][3] != state["ports"][2]  # ...and it was closed, not reused
    finally:
        await client.aclose()


async def test_an_exception_in_the_block_closes_and_propagates(serve: Serve) -> None:
    state: dict[str, Any] = {}
    client = HttpClient(await serve(endless_app(state)), provider="test")
    try:
        with pytest.raises(KeyError, match="mine"):
            async with client.stream("GET", "/endless") as resp:
                async for _ in iter_ndjson(resp):
                    raise KeyError("mine")
        await asyncio.wait_for(state["disconnected"].wait(), 2)
    finally:
        await client.aclose()


async def test_cancelling_the_reader_closes_the_connection(serve: Serve) -> None:
    state: dict[str, Any] = {}
    client = HttpClient(await serve(endless_app(state)), provider="test")
    first = asyncio.Event()

    async def consume() -> None:
        async with client.stream("GET", "/endless") as resp:
            async for _ in iter_ndjson(resp):
                first.set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(first.wait(), 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(state["disconnected"].wait(), 2)
    finally:
        await client.aclose()


async def exercise_and_collect_leaks(close: bool) -> tuple[list[str], list[dict[str, Any]],
                                                            list[asyncio.Task[Any]]]:
    """Run requests (one left early) against a server, then report warnings, loop errors
    and pending tasks left behind once the server is gone."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    old_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
    state: dict[str, Any] = {}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async with serve_app(endless_app(state)) as url:
                client = HttpClient(url, provider="test")
                assert await client.request_json("GET", "/one") == {"ok": True}
                async with client.stream("GET", "/endless") as resp:
                    async for _ in iter_ndjson(resp):
                        break
                await asyncio.wait_for(state["disconnected"].wait(), 2)
                if close:
                    await client.aclose()
                del client, resp
            for _ in range(3):
                gc.collect()
                await asyncio.sleep(0.01)
    finally:
        loop.set_exception_handler(old_handler)
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()
               and not t.done()]
    messages = [str(w.message) for w in caught]
    return messages, reported, pending


async def test_no_unclosed_warnings_or_pending_tasks_after_aclose() -> None:
    messages, reported, pending = await exercise_and_collect_leaks(close=True)
    assert not [m for m in messages if "Unclosed" in m or "unclosed" in m]
    assert reported == []
    assert pending == []


async def test_leak_detection_catches_a_client_left_open() -> None:
    """The check above can fail: without aclose() the leak is reported."""
    messages, reported, _ = await exercise_and_collect_leaks(close=False)
    found = messages + [str(ctx.get("message")) for ctx in reported]
    assert any("Unclosed client session" in m for m in found)


async def test_one_session_per_client_and_aclose_is_idempotent(serve: Serve) -> None:
    client = HttpClient(await serve(body_app()), provider="test")
    session = client.session
    assert client.session is session
    await client.request_json("GET", "/sized?n=1")
    assert client.session is session
    await client.aclose()
    assert session.closed
    await client.aclose()
    # a closed client opens a new session when used again
    assert await client.request_json("GET", "/sized?n=2") == {"data": "xx"}
    assert client.session is not session
    await client.aclose()


def test_verify_tls_false_warns() -> None:
    with pytest.warns(UserWarning, match="TLS certificate verification is turned off"):
        client = HttpClient("https://example.invalid", provider="secure", verify_tls=False)
    assert client.verify_tls is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HttpClient("https://example.invalid", provider="secure")


def test_url_joining() -> None:
    client = HttpClient("http://127.0.0.1:11434/", provider="test")
    assert client.url("/api/tags") == "http://127.0.0.1:11434/api/tags"
    assert client.url("http://other:1/x") == "http://other:1/x"


async def test_a_pooled_connection_closed_by_the_server_is_replaced(raw_serve: Any) -> None:
    """A server that closes a keep-alive connection just as it is reused (llama-server does,
    right after a stream) costs no error: the request goes out again on a new connection."""
    connections: list[int] = []
    body = b'{"ok": true}'
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
              + str(len(body)).encode() + b"\r\n\r\n" + body)

    async def first_answer_then_drop(reader: asyncio.StreamReader,
                                     writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        if len(connections) == 1:  # the first connection: take the next request, then drop
            await read_request(reader)
            writer.close()
            return
        await reader.read()

    url = await raw_serve(first_answer_then_drop)
    client = HttpClient(url, provider="test")
    try:
        assert await client.request_json("POST", "/", {"n": 1}) == {"ok": True}
        assert await client.request_json("POST", "/", {"n": 2}) == {"ok": True}
    finally:
        await client.aclose()
    assert len(connections) == 2


# -- issue 19 #5: one parser, clamped to max_retry_after, garbage is no wait ------------------
@pytest.mark.parametrize(("headers", "expected"), [
    ({"Retry-After": "inf"}, 300.0),
    ({"Retry-After": "Infinity"}, 300.0),
    ({"Retry-After": "1e400"}, 300.0),
    ({"Retry-After": "99999999999"}, 300.0),
    ({"Retry-After": "Thu, 01 Jan 2099 00:00:00 GMT"}, 300.0),
    ({"retry-after-ms": "inf"}, 300.0),
    ({"retry-after-ms": "99999999999999"}, 300.0),
    ({"Retry-After": "nan"}, None),
    ({"Retry-After": "-5"}, None),
    ({"retry-after-ms": "-5", "Retry-After": "nan"}, None),
    ({"Retry-After": "Thu, 99 Foo 2099 99:99:99 GMT"}, None),
    ({"Retry-After": "  "}, None),
    ({"Retry-After": "12 seconds"}, None),
    ({"RETRY-AFTER": "4"}, 4.0),  # a plain dict of any case
])
def test_retry_after_is_clamped_and_garbage_is_no_wait(headers: dict[str, str],
                                                       expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_the_maximum_is_the_config_key() -> None:
    from modelplex.config import parse_config, set_config

    old = set_config(parse_config({"max_retry_after": 20}))
    try:
        assert parse_retry_after({"Retry-After": "inf"}) == 20.0
        assert parse_retry_after({"Retry-After": "7"}) == 7.0
        # whoever builds the error, its retry_after is clamped the same way
        assert errors.RateLimitError("x", retry_after=float("inf")).retry_after == 20.0
        assert errors.ServerBusyError("x", retry_after=1e308).retry_after == 20.0
    finally:
        set_config(old)
    assert errors.RateLimitError("x", retry_after=float("nan")).retry_after is None
    assert errors.RateLimitError("x", retry_after=-1).retry_after is None
    err = errors.RateLimitError("x", retry_after=float("inf"))
    assert err.retry_after == 300.0 and str(err) == "x (retry after 300 s)"
    err.retry_after = float("inf")  # set later, e.g. by a provider: clamped too
    assert err.retry_after == 300.0


@pytest.mark.parametrize("value", ["inf", "1e400", "99999999999", "nan", "-3", "oops"])
async def test_retry_after_from_a_server(serve: Serve, value: str) -> None:
    client = HttpClient(await serve(status_app()), provider="test")
    try:
        with pytest.raises(errors.RateLimitError) as info:
            await client.request_json("POST", "/err", {"status": 429, "body": OPENAI_429,
                                                       "headers": {"Retry-After": value}})
    finally:
        await client.aclose()
    wait = info.value.retry_after
    assert wait is None or 0 <= wait <= 300.0
