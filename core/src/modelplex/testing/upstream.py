"""A real HTTP upstream on 127.0.0.1 that speaks provider wire formats and injects faults.

Plugin authors use it to prove their provider fails well::

    async with FaultyUpstream() as upstream:
        upstream.faults.append("stall_mid")          # the next request stalls mid-stream
        provider = MyProvider(base_url=upstream.url, ...)

Routes: ``/v1/chat/completions`` and ``/chat/completions`` answer OpenAI-style SSE (or JSON
without ``stream``), ``/api/chat`` Ollama-style NDJSON (or JSON with ``stream: false``),
``/v1/messages`` Anthropic-style SSE; ``/v1/models``, ``/api/tags``, ``/api/version`` list one
model. Each request takes the next fault from :attr:`FaultyUpstream.faults` (``"ok"`` when
empty). The faults:

``ok``            a normal answer of ``chunks`` pieces
``hang``          accept the request, never answer
``stall_headers`` send the headers, then nothing
``stall_mid``     send two chunks, then nothing
``reset``         send two chunks, then reset the connection
``malformed``     send one chunk, then a line that is not JSON
``oversize``      send one chunk, then a line of ``oversize_bytes`` bytes without a newline
``no_end``        send the chunks but no end marker (``[DONE]``, ``done: true``, ``message_stop``)
``error_event``   send two chunks, then the provider's in-stream error object
``429`` ``500`` ``503`` ``529``   that status with the provider's error body
                  (429 and 503 carry ``Retry-After: 2``)
``redirect_301`` ``redirect_302`` ``redirect_303`` ``redirect_307`` ``redirect_308``
                  that redirect to :attr:`FaultyUpstream.redirect_to` plus the request's path
                  (start a second upstream there, on ``localhost`` for another host)

The headers and JSON body of the last chat requests are recorded
(:attr:`FaultyUpstream.received`), so tests can check what was sent where.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections import deque
from typing import Any

from aiohttp import web

__all__ = ["FaultyUpstream", "closed_port_url"]

PIECE = "tok "


def closed_port_url() -> str:
    """The URL of a port on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _openai_event(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1,
            "model": "fault", "choices": [{"index": 0, "delta": delta,
                                           "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _ollama_line(content: str, done: bool = False, n: int = 0) -> bytes:
    body: dict[str, Any] = {"model": "fault", "created_at": "2025-01-01T00:00:00Z",
                            "message": {"role": "assistant", "content": content}, "done": done}
    if done:
        body.update(done_reason="stop", prompt_eval_count=3, eval_count=n,
                    total_duration=1000, eval_duration=500)
    return json.dumps(body).encode() + b"\n"


def _anthropic_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


class _Wire:
    """How one provider family frames an answer."""

    def __init__(self, kind: str, chunks: int) -> None:
        self.kind = kind
        self.chunks = chunks

    @property
    def content_type(self) -> str:
        return "application/x-ndjson" if self.kind == "ollama" else "text/event-stream"

    def start(self) -> list[bytes]:
        if self.kind == "openai":
            return [_openai_event({"role": "assistant", "content": ""})]
        if self.kind == "anthropic":
            return [_anthropic_event("message_start", {"type": "message_start", "message": {
                "id": "msg_fault", "type": "message", "role": "assistant", "model": "fault",
                "content": [], "stop_reason": None, "usage": {"input_tokens": 3,
                                                              "output_tokens": 1}}}),
                    _anthropic_event("content_block_start", {
                        "type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}})]
        return []

    def piece(self) -> bytes:
        if self.kind == "openai":
            return _openai_event({"content": PIECE})
        if self.kind == "anthropic":
            return _anthropic_event("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": PIECE}})
        return _ollama_line(PIECE)

    def end(self) -> list[bytes]:
        n = self.chunks
        if self.kind == "openai":
            usage = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1,
                     "model": "fault", "choices": [],
                     "usage": {"prompt_tokens": 3, "completion_tokens": n,
                               "total_tokens": n + 3}}
            return [_openai_event({}, "stop"), b"data: " + json.dumps(usage).encode() + b"\n\n",
                    b"data: [DONE]\n\n"]
        if self.kind == "anthropic":
            return [_anthropic_event("content_block_stop", {"type": "content_block_stop",
                                                            "index": 0}),
                    _anthropic_event("message_delta", {
                        "type": "message_delta", "delta": {"stop_reason": "end_turn"},
                        "usage": {"output_tokens": n}}),
                    _anthropic_event("message_stop", {"type": "message_stop"})]
        return [_ollama_line("", done=True, n=n)]

    def error_event(self) -> bytes:
        if self.kind == "openai":
            return b'data: {"error": {"message": "the model crashed", "type": "server_error"}}\n\n'
        if self.kind == "anthropic":
            return _anthropic_event("error", {"type": "error", "error": {
                "type": "overloaded_error", "message": "Overloaded"}})
        return b'{"error": "an error was encountered while running the model"}\n'

    def error_body(self, status: int) -> dict[str, Any]:
        message = {429: "rate limit exceeded", 500: "internal error",
                   503: "server busy, please try again.", 529: "Overloaded"}.get(status, "error")
        if self.kind == "ollama":
            return {"error": message}
        if self.kind == "anthropic":
            kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
            return {"type": "error", "error": {"type": kind, "message": message}}
        return {"error": {"message": message, "type": "server_error", "code": None}}

    def whole(self) -> dict[str, Any]:
        text = PIECE * self.chunks
        if self.kind == "ollama":
            return {"model": "fault", "created_at": "2025-01-01T00:00:00Z",
                    "message": {"role": "assistant", "content": text}, "done": True,
                    "done_reason": "stop", "prompt_eval_count": 3, "eval_count": self.chunks}
        if self.kind == "anthropic":
            return {"id": "msg_fault", "type": "message", "role": "assistant", "model": "fault",
                    "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                    "usage": {"input_tokens": 3, "output_tokens": self.chunks}}
        return {"id": "chatcmpl-fault", "object": "chat.completion", "created": 1,
                "model": "fault", "choices": [{"index": 0, "message": {
                    "role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": self.chunks,
                          "total_tokens": self.chunks + 3}}


class FaultyUpstream:
    """The fault-injecting server; an async context manager that starts and stops it.

    ``tail_delay`` seconds pass between a stream's end marker and the end of its body, as
    with real servers, so clients must read the tail to reuse the connection.

    Attributes:
        faults: faults for the next requests, taken one per request (``"ok"`` when empty).
        requests: how many chat requests arrived.
        disconnects: how many chat responses ended because the client went away.
        active: chat requests being answered now.
        received: ``(headers, body)`` of the last ``keep_requests`` chat requests, in order.
        redirect_to: the base URL the ``redirect_*`` faults send clients to.
    """

    def __init__(self, *, chunks: int = 5, oversize_bytes: int = 2 * 1024 * 1024,
                 tail_delay: float = 0.005, keep_requests: int = 100) -> None:
        self.chunks = chunks
        self.tail_delay = tail_delay
        self.oversize_bytes = oversize_bytes
        self.faults: deque[str] = deque()
        self.requests = 0
        self.disconnects = 0
        self.active = 0
        self.received: deque[tuple[dict[str, str], Any]] = deque(maxlen=keep_requests)
        self.redirect_to = ""
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._idle = asyncio.Event()

    async def __aenter__(self) -> FaultyUpstream:
        app = web.Application()
        for path, kind in (("/v1/chat/completions", "openai"), ("/chat/completions", "openai"),
                           ("/api/chat", "ollama"), ("/v1/messages", "anthropic")):
            app.router.add_post(path, self._chat_handler(kind))
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_get("/api/version", self._version)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_idle(self, within: float = 5.0) -> bool:
        """Wait until no chat request is being answered; false if still busy after ``within`` s."""
        deadline = asyncio.get_running_loop().time() + within
        while self.active:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fault",
                                                              "object": "model"}]})

    async def _tags(self, _: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": "fault", "model": "fault", "size": 1}]})

    async def _version(self, _: web.Request) -> web.Response:
        return web.json_response({"version": "0.0.0-fault"})

    def _chat_handler(self, kind: str) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            self.requests += 1
            self.active += 1
            try:
                return await self._answer(request, _Wire(kind, self.chunks))
            except (asyncio.CancelledError, ConnectionResetError):
                self.disconnects += 1
                raise
            finally:
                self.active -= 1

        return handler

    async def _answer(self, request: web.Request, wire: _Wire) -> web.StreamResponse:
        body = await request.json()
        self.received.append((dict(request.headers), body))
        fault = self.faults.popleft() if self.faults else "ok"
        if fault.startswith("redirect_"):
            return web.Response(status=int(fault.removeprefix("redirect_")),
                                headers={"Location": self.redirect_to + request.path_qs})
        if fault.isdigit():
            status = int(fault)
            headers = {"Retry-After": "2"} if status in (429, 503) else {}
            return web.json_response(wire.error_body(status), status=status, headers=headers)
        if fault == "hang":
            await asyncio.sleep(3600)
        streaming = body.get("stream", wire.kind == "ollama")
        if not streaming and fault == "ok":
            return web.json_response(wire.whole())
        resp = web.StreamResponse(headers={"Content-Type": wire.content_type})
        await resp.prepare(request)
        if fault == "stall_headers":
            await asyncio.sleep(3600)
        for part in wire.start():
            await resp.write(part)
        pieces = {"stall_mid": 2, "reset": 2, "malformed": 1, "oversize": 1,
                  "error_event": 2}.get(fault, wire.chunks)
        for _ in range(pieces):
            await resp.write(wire.piece())
            await asyncio.sleep(0)
        if fault == "stall_mid":
            await asyncio.sleep(3600)
        elif fault == "reset":
            self._reset(request)
            return resp
        elif fault == "malformed":
            await resp.write(b"data: {not json at all\n\n" if wire.kind != "ollama"
                             else b"{not json at all\n")
        elif fault == "oversize":
            prefix = b"data: " if wire.kind != "ollama" else b""
            await resp.write(prefix + b'{"x": "' + b"a" * self.oversize_bytes)
        elif fault == "error_event":
            await resp.write(wire.error_event())
        elif fault != "no_end":
            for part in wire.end():
                await resp.write(part)
            if self.tail_delay:  # the body's terminator comes a moment after the end marker
                await asyncio.sleep(self.tail_delay)
        await resp.write_eof()
        return resp

    @staticmethod
    def _reset(request: web.Request) -> None:
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
