"""A real HTTP upstream on 127.0.0.1 that speaks provider wire formats and injects faults.

Plugin authors use it to prove their provider fails well::

    async with FaultyUpstream() as upstream:
        upstream.faults.append("stall_mid")          # the next request stalls mid-stream
        provider = MyProvider(base_url=upstream.url, ...)

Routes: each wire's chat paths (:mod:`modelplex.testing.wires`): ``/v1/chat/completions``
and ``/chat/completions`` answer OpenAI-style SSE (or JSON without ``stream``), ``/api/chat``
Ollama-style NDJSON (or JSON with ``stream: false``), ``/v1/messages`` Anthropic-style SSE,
``/generate_stream`` and ``/generate`` Text Generation Inference's native SSE and JSON (with its
``/chat_tokenize`` and ``/info``); ``/v1/embeddings`` and ``/api/embed`` answer embeddings;
``/v1/models``, ``/api/tags``, ``/api/v1/models`` list the models, ``/api/show`` and
``/api/version`` answer as Ollama does. ``routes={"/my/chat": "openai"}`` adds chat routes
for an API with its own paths, and ``wires=[MyWire()]`` serves a wire of your own (a
:class:`~modelplex.testing.wire.Wire`: its paths, which may name the model, and how it writes
an answer); every fault, script and recording below works the same on it.

What a chat request gets, in order: a 401 if ``require_headers`` are missing or wrong; a 404
(in the wire's own error shape) if ``models`` is set and does not hold the requested model;
else the next entry scripted for that model with :meth:`FaultyUpstream.script`, else the next
of :attr:`FaultyUpstream.replies` (for any model), else the next fault from
:attr:`FaultyUpstream.faults`, else ``"ok"``. A ``max_tokens`` (``num_predict``
for Ollama) smaller than ``chunks`` cuts the answer to that many pieces with the wire's own
"length" finish reason. Every request is recorded in :attr:`FaultyUpstream.received`.

The faults:

``ok``            a normal answer of ``chunks`` pieces
``hang``          accept the request, never answer
``stall_headers`` send the headers, then nothing
``stall_mid``     send two chunks, then nothing
``reset``         send two chunks, then reset the connection
``malformed``     send one chunk, then a line that is not JSON
``oversize``      send one chunk, then a line of ``oversize_bytes`` bytes without a newline
``no_end``        send the chunks but no end marker (``[DONE]``, ``done: true``, ``message_stop``,
                  TGI's event with ``generated_text``; for a wire without an end marker, the
                  event that carries the finish reason)
``error_event``   send two chunks, then the wire's in-stream error object (with the
                  :class:`Reply`'s ``message``, else the wire's own)
``429`` ``500`` ``503`` ``529``   that status with the provider's error body
                  (429 and 503 carry ``Retry-After: 2``); any other status, e.g. ``401``,
                  ``404``, ``400``, works the same way; ``503:7`` sends ``Retry-After: 7``
``delay:0.05``    wait that many seconds, then answer normally
``redirect_301`` ``redirect_302`` ``redirect_303`` ``redirect_307`` ``redirect_308``
                  that redirect to :attr:`FaultyUpstream.redirect_to` plus the request's path
                  (start a second upstream there, on ``localhost`` for another host)

A :class:`Reply` scripts one answer in detail: its text or pieces, tool calls, finish reason,
token counts, the delay between pieces (a slow stream, to test cancellation) and a fault. A
conversation of several requests (a re-ask, a tool loop) is scripted with
:attr:`FaultyUpstream.replies` and checked with :attr:`FaultyUpstream.bodies`::

    async with FaultyUpstream() as upstream:
        upstream.replies.extend([Reply(tool_calls=[{"name": "add", "arguments": {"a": 1}}]),
                                 Reply("The sum is 3.")])
        ...
        assert upstream.bodies[1]["messages"][-1]["role"] == "tool"
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections import deque
from collections.abc import Collection, Mapping
from contextlib import AsyncExitStack
from typing import Any

import attrs
from aiohttp import web

from modelplex.testing.serve import serve_app
from modelplex.testing.wire import PIECE, Answer, Reply, Wire
from modelplex.testing.wires import OLLAMA, OPENAI, TGI, WIRES, get_wire

__all__ = ["PIECE", "FaultyUpstream", "ReceivedRequest", "Reply", "closed_port_url"]


@attrs.define
class ReceivedRequest:
    """One request the upstream received: method, path, headers and JSON body.

    ``wire`` is the name of the wire whose chat path it came to (``None`` for other routes),
    ``model`` the model it asked for (from the body, or from the path for a wire that puts it
    there).
    """

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    wire: str | None = None
    model: str | None = None


#: The model listings every upstream serves.
_LISTINGS = frozenset({"/v1/models", "/models", "/api/tags", "/api/v1/models"})


@attrs.frozen
class _Route:
    """A chat path's wire, and whether the path itself says if the answer streams."""

    wire: Wire
    stream: bool | None


def closed_port_url() -> str:
    """The URL of a port on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class FaultyUpstream:
    """The fault-injecting server; an async context manager that starts and stops it.

    Args:
        chunks: pieces in a normal answer.
        oversize_bytes: length of the line the ``oversize`` fault sends.
        tail_delay: seconds between a stream's end marker and the end of its body, as with
            real servers, so clients must read the tail to reuse the connection.
        models: the model names served; a chat request for another gets a 404 in the
            wire's error shape (default ``None``: any name is served). Also what the model
            listing routes list (default ``["fault"]``).
        require_headers: headers every request must carry with exactly these values
            (names case-insensitive); a request without them gets a 401.
        routes: extra chat routes, path to wire (a built-in's name: ``"openai"``,
            ``"ollama"``, ``"anthropic"``, ``"tgi"``; or a :class:`Wire`). The answer streams
            as the body's ``stream`` field (or the wire's ``stream_default``) says.
        wires: wires of your own (:class:`~modelplex.testing.wire.Wire`) served on their
            ``paths``, besides the built-in ones.
        embedding_dim: length of the vectors the embeddings routes return.
        record: how many of the latest requests :attr:`received` keeps.

    Attributes:
        replies: answers (:class:`Reply` or fault names) for the next chat requests to any
            model, one per request, after the model's own :meth:`script`.
        faults: faults for the next chat requests, one per request (``"ok"`` when empty).
        received: the requests received, oldest first (:class:`ReceivedRequest`; the last
            ``record`` of them).
        requests: how many chat requests arrived.
        disconnects: how many chat responses ended because the client went away.
        active: chat requests being answered now (``peak_active``: the most at once).
        url: ``http://127.0.0.1:PORT``, set once started.
        redirect_to: the base URL the ``redirect_*`` faults send clients to.
    """

    def __init__(self, *, chunks: int = 5, oversize_bytes: int = 2 * 1024 * 1024,
                 tail_delay: float = 0.005, models: Collection[str] | None = None,
                 require_headers: Mapping[str, str] | None = None,
                 routes: Mapping[str, str | Wire] | None = None, embedding_dim: int = 8,
                 record: int = 1000, wires: Collection[Wire] = ()) -> None:
        self.chunks = chunks
        self.tail_delay = tail_delay
        self.oversize_bytes = oversize_bytes
        self.models = list(models) if models is not None else None
        self.require_headers = dict(require_headers or {})
        self.routes = {path: get_wire(wire) for path, wire in (routes or {}).items()}
        self.wires = list(wires)
        self.embedding_dim = embedding_dim
        self.replies: deque[str | Reply] = deque()
        self.faults: deque[str] = deque()
        self.received: deque[ReceivedRequest] = deque(maxlen=record)
        self.requests = 0
        self.disconnects = 0
        self.active = 0
        self.peak_active = 0
        self.url = ""
        self.redirect_to = ""
        self._scripts: dict[str, deque[str | Reply]] = {}
        self._chat_routes: dict[Any, _Route] = {}
        self._runner: web.AppRunner | None = None
        self._serving = AsyncExitStack()

    async def __aenter__(self) -> FaultyUpstream:
        app = web.Application(middlewares=[self._record, self._check_headers])
        chat_routes: dict[str, _Route] = {}
        for wire in [*WIRES.values(), *self.wires]:
            chat_routes.update({path: _Route(wire, stream) for path, stream in wire.paths.items()})
        chat_routes.update({path: _Route(wire, None) for path, wire in self.routes.items()})
        self._chat_routes = {}
        for path, route in chat_routes.items():
            resource = app.router.add_post(path.replace("{model}", "{model:[^{}]+?}"),
                                           self._chat_handler(route)).resource
            self._chat_routes[resource] = route
        app.router.add_post("/chat_tokenize", self._chat_tokenize)
        app.router.add_get("/info", self._info)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/embeddings", self._embeddings)
        app.router.add_post("/api/embed", self._embed)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/models", self._models)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_get("/api/version", self._version)
        app.router.add_post("/api/show", self._show)
        app.router.add_get("/api/v1/models", self._lmstudio_models)
        for wire in self.wires:
            if wire.models_path and wire.models_path not in _LISTINGS:
                app.router.add_get(wire.models_path, self._listing(wire))
        # a runner of its own: open_connections reads its server
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        self.url = await self._serving.enter_async_context(serve_app(self._runner))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._serving.aclose()

    # -- scripting and inspection -------------------------------------------------------
    def script(self, model: str, *responses: str | Reply) -> None:
        """Queue answers for chat requests to ``model``: fault names or :class:`Reply`.

        Each request to ``model`` takes the next one; when they run out, :attr:`faults` and
        then ``"ok"`` apply again::

            upstream.script("m", "429", Reply(pieces=["Hi", "!"], finish="length"))
        """
        self._scripts.setdefault(model, deque()).extend(responses)

    @property
    def open_connections(self) -> int:
        """Client connections open to the server now (idle keep-alive ones included)."""
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    @property
    def bodies(self) -> list[Any]:
        """The JSON bodies of the chat requests received, in order."""
        return [r.json for r in self.chat_requests()]

    def chat_requests(self) -> list[ReceivedRequest]:
        """The chat requests received (on any wire's chat paths), in order."""
        return [r for r in self.received if r.wire is not None or (
            r.method == "POST" and isinstance(r.json, dict)
            and ("messages" in r.json or "prompt" in r.json or "inputs" in r.json)
            and r.path != "/chat_tokenize")]

    async def wait_idle(self, within: float = 5.0) -> bool:
        """Wait until no chat request is being answered; false if still busy after ``within`` s."""
        deadline = asyncio.get_running_loop().time() + within
        while self.active:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # -- middlewares ----------------------------------------------------------------------
    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
        route = self._route_of(request)
        model = None
        if route is not None:
            model = request.match_info.get("model") or route.wire.model_of(body)
        self.received.append(ReceivedRequest(request.method, request.path,
                                             dict(request.headers), body,
                                             route.wire.name if route else None, model))
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def _check_headers(self, request: web.Request, handler: Any) -> web.StreamResponse:
        for name, value in self.require_headers.items():
            if request.headers.get(name) != value:
                wire = self._wire_of(request)
                return web.json_response(
                    wire.error_body(401, f"missing or wrong {name} header"), status=401)
        response: web.StreamResponse = await handler(request)
        return response

    def _route_of(self, request: web.Request) -> _Route | None:
        return self._chat_routes.get(request.match_info.route.resource)

    def _wire_of(self, request: web.Request) -> Wire:
        """The wire whose error shape a request gets (by its route, else by its path)."""
        route = self._route_of(request)
        if route is not None:
            return route.wire
        if request.path.startswith("/api/"):
            return OLLAMA
        return TGI if request.path in ("/chat_tokenize", "/info") else OPENAI

    # -- simple routes -------------------------------------------------------------------
    def _model_names(self) -> list[str]:
        return self.models if self.models is not None else ["fault"]

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": name, "object": "model", "owned_by": "fault"}
            for name in self._model_names()]})

    def _listing(self, wire: Wire) -> Any:
        async def listing(_: web.Request) -> web.Response:
            return web.json_response(wire.models(self._model_names()))

        return listing

    async def _tags(self, _: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": name, "model": name, "size": 1}
                                             for name in self._model_names()]})

    async def _version(self, _: web.Request) -> web.Response:
        return web.json_response({"version": "0.0.0-fault"})

    async def _info(self, _: web.Request) -> web.Response:
        return web.json_response({"model_id": self._model_names()[0], "max_input_tokens": 2048,
                                  "max_total_tokens": 4096, "version": "0.0.0-fault"})

    async def _chat_tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        text = "".join(f"<|{m['role']}|>{m['content']}\n" for m in body.get("messages", []))
        return web.json_response({"tokenize_response": [
            {"id": 1, "text": "x", "start": 0, "stop": 1}] * 3, "templated_text": text})

    async def _show(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body.get("model") if isinstance(body, dict) else None
        if name not in self._model_names():
            return web.json_response({"error": f"model '{name}' not found"}, status=404)
        return web.json_response({"details": {"family": "fault", "format": "gguf"},
                                  "model_info": {}, "capabilities": ["completion"]})

    async def _lmstudio_models(self, _: web.Request) -> web.Response:
        return web.json_response({"models": [
            {"type": "llm", "key": name, "display_name": name, "loaded_instances": [],
             "max_context_length": 4096, "format": "gguf"} for name in self._model_names()]})

    def _vector(self, text: Any) -> list[float]:
        seed = sum(str(text).encode()) or 1
        return [((seed * (i + 7)) % 97) / 97.0 for i in range(self.embedding_dim)]

    def _unknown_model(self, model: Any, wire: Wire) -> web.Response | None:
        if self.models is None or model in self.models:
            return None
        return web.json_response(wire.error_body(404, f"model '{model}' not found"), status=404)

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        missing = self._unknown_model(body.get("model"), OPENAI)
        if missing is not None:
            return missing
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        return web.json_response({"object": "list", "model": body.get("model"), "data": [
            {"object": "embedding", "index": i, "embedding": self._vector(t)}
            for i, t in enumerate(texts)],
            "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)}})

    async def _embed(self, request: web.Request) -> web.Response:
        body = await request.json()
        missing = self._unknown_model(body.get("model"), OLLAMA)
        if missing is not None:
            return missing
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        return web.json_response({"model": body.get("model"),
                                  "embeddings": [self._vector(t) for t in texts],
                                  "prompt_eval_count": len(texts)})

    # -- chat ------------------------------------------------------------------------------
    def _chat_handler(self, route: _Route) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            self.requests += 1
            self.active += 1
            self.peak_active = max(self.peak_active, self.active)
            try:  # (tests wrap _answer with a two-argument spy)
                return await self._answer(request, route)
            except (asyncio.CancelledError, ConnectionResetError):
                self.disconnects += 1
                raise
            finally:
                self.active -= 1

        return handler

    def _next(self, model: Any) -> Reply:
        queue = self._scripts.get(model) if isinstance(model, str) else None
        item: str | Reply
        if queue:
            item = queue.popleft()
        elif self.replies:
            item = self.replies.popleft()
        elif self.faults:
            item = self.faults.popleft()
        else:
            item = "ok"
        return item if isinstance(item, Reply) else Reply(fault=item)

    async def _answer(self, request: web.Request, route: _Route) -> web.StreamResponse:
        body = await request.json()
        wire = route.wire
        model = request.match_info.get("model") or wire.model_of(body)
        if model is None:  # a server of one model, that takes no model name (TGI)
            model = self._model_names()[0]
        else:
            missing = self._unknown_model(model, wire)
            if missing is not None:
                return missing
        reply = self._next(model)
        answer = Answer(reply, self.chunks, model)
        limit = wire.max_tokens(body)
        if limit is not None:
            answer.cut(limit)
        fault = reply.fault
        if fault.startswith("redirect_"):
            return web.Response(status=int(fault.removeprefix("redirect_")),
                                headers={"Location": self.redirect_to + request.path_qs})
        if fault[:1].isdigit():
            code, _, retry_after = fault.partition(":")
            status = int(code)
            headers = {"Retry-After": retry_after or "2"} if retry_after or status in (
                429, 503) else {}
            return web.json_response(
                wire.error_body(status, wire.error_message(status, reply.message)),
                status=status, headers=headers)
        if fault.startswith("delay:"):
            await asyncio.sleep(float(fault.removeprefix("delay:")))
            fault = "ok"
        if fault == "hang":
            await asyncio.sleep(3600)
        streaming = route.stream
        if streaming is None:
            streaming = body.get("stream", wire.stream_default) if isinstance(body, dict) \
                else wire.stream_default
        if not streaming and fault == "ok":
            return web.json_response(wire.whole(answer))
        resp = web.StreamResponse(headers={"Content-Type": wire.content_type})
        await resp.prepare(request)
        if fault == "stall_headers":
            await asyncio.sleep(3600)
        for part in wire.start(answer):
            await resp.write(part)
        pieces = {"stall_mid": 2, "reset": 2, "malformed": 1, "oversize": 1,
                  "error_event": 2}.get(fault, answer.chunks)
        for i in range(pieces):
            await resp.write(wire.piece(answer, i))
            await asyncio.sleep(reply.delay)
        if fault == "stall_mid":
            await asyncio.sleep(3600)
        elif fault == "reset":
            self._reset(request)
            return resp
        elif fault == "malformed":
            await resp.write(wire.frame(b"{not json at all"))
        elif fault == "oversize":
            await resp.write(wire.line_prefix + b'{"x": "' + b"a" * self.oversize_bytes)
        elif fault == "error_event":
            await resp.write(wire.error_event(answer, wire.stream_error_message(answer)))
        elif fault != "no_end":
            for part in wire.end(answer):
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
