"""A real HTTP upstream on 127.0.0.1 that speaks provider wire formats and injects faults.

Plugin authors use it to prove their provider fails well::

    async with FaultyUpstream() as upstream:
        upstream.faults.append("stall_mid")          # the next request stalls mid-stream
        provider = MyProvider(base_url=upstream.url, ...)

Routes: ``/v1/chat/completions`` and ``/chat/completions`` answer OpenAI-style SSE (or JSON
without ``stream``), ``/api/chat`` Ollama-style NDJSON (or JSON with ``stream: false``),
``/v1/messages`` Anthropic-style SSE, ``/generate_stream`` and ``/generate`` Text Generation
Inference's native SSE and JSON (with its ``/chat_tokenize`` and ``/info``);
``/v1/embeddings`` and ``/api/embed`` answer embeddings;
``/v1/models``, ``/api/tags``, ``/api/v1/models`` list the models, ``/api/show`` and
``/api/version`` answer as Ollama does. ``routes={"/my/chat": "openai"}`` adds chat routes
for an API with its own paths.

What a chat request gets, in order: a 401 if ``require_headers`` are missing or wrong; a 404
(in the wire's own error shape) if ``models`` is set and does not hold the requested model;
else the next entry scripted for that model with :meth:`FaultyUpstream.script`, else the next
fault from :attr:`FaultyUpstream.faults`, else ``"ok"``. A ``max_tokens`` (``num_predict``
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
                  TGI's event with ``generated_text``)
``error_event``   send two chunks, then the provider's in-stream error object
``429`` ``500`` ``503`` ``529``   that status with the provider's error body
                  (429 and 503 carry ``Retry-After: 2``); any other status, e.g. ``401``,
                  ``404``, ``400``, works the same way; ``503:7`` sends ``Retry-After: 7``
``delay:0.05``    wait that many seconds, then answer normally
``redirect_301`` ``redirect_302`` ``redirect_303`` ``redirect_307`` ``redirect_308``
                  that redirect to :attr:`FaultyUpstream.redirect_to` plus the request's path
                  (start a second upstream there, on ``localhost`` for another host)

A :class:`Reply` scripts one answer in detail: its pieces, finish reason, token counts and the
delay between pieces (a slow stream, to test cancellation).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections import deque
from collections.abc import Collection, Mapping
from typing import Any

import attrs
from aiohttp import web

__all__ = ["PIECE", "FaultyUpstream", "ReceivedRequest", "Reply", "closed_port_url"]

PIECE = "tok "
"""The text of each streamed piece of a normal answer."""

#: The wire's own word for each modelplex finish reason.
_NATIVE_FINISH = {
    "anthropic": {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"},
    "tgi": {"stop": "eos_token"},
}


@attrs.define
class Reply:
    """One scripted answer.

    Attributes:
        pieces: the streamed text pieces (default: ``chunks`` times :data:`PIECE`).
        finish: the modelplex finish reason; the wire sends its own word for it
            (``length`` is ``max_tokens`` on the Anthropic wire).
        prompt_tokens / completion_tokens: the usage sent (default: 3 / the piece count).
        delay: seconds between pieces.
        fault: a fault to apply to this answer (see the module docs), default ``"ok"``.
        message: for a status fault, the error message in the body (e.g. one that echoes
            the API key, as some servers do).
    """

    pieces: list[str] | None = None
    finish: str = "stop"
    prompt_tokens: int = 3
    completion_tokens: int | None = None
    delay: float = 0.0
    fault: str = "ok"
    message: str | None = None


@attrs.define
class ReceivedRequest:
    """One request the upstream received: method, path, headers and JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any


def _find_max_tokens(body: Any) -> int | None:
    if not isinstance(body, dict):
        return None
    for key in ("max_tokens", "max_completion_tokens", "max_new_tokens"):
        if isinstance(body.get(key), int):
            return int(body[key])
    parameters = body.get("parameters")  # TGI's native API
    if isinstance(parameters, dict) and isinstance(parameters.get("max_new_tokens"), int):
        return int(parameters["max_new_tokens"])
    options = body.get("options")
    if isinstance(options, dict) and isinstance(options.get("num_predict"), int):
        return int(options["num_predict"])
    return None


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


def _ollama_line(content: str, done: bool = False, n: int = 0, reason: str = "stop",
                 prompt: int = 3) -> bytes:
    body: dict[str, Any] = {"model": "fault", "created_at": "2025-01-01T00:00:00Z",
                            "message": {"role": "assistant", "content": content}, "done": done}
    if done:
        body.update(done_reason=reason, prompt_eval_count=prompt, eval_count=n,
                    total_duration=1000, eval_duration=500)
    return json.dumps(body).encode() + b"\n"


def _anthropic_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _tgi_event(index: int, text: str, *, special: bool = False,
               generated: str | None = None, details: dict[str, Any] | None = None) -> bytes:
    body = {"index": index, "token": {"id": 100 + index, "text": text, "logprob": -0.5,
                                      "special": special},
            "generated_text": generated, "details": details}
    return b"data:" + json.dumps(body).encode() + b"\n\n"  # TGI writes no space after data:


class _Wire:
    """How one provider family frames an answer."""

    def __init__(self, kind: str, chunks: int, reply: Reply | None = None) -> None:
        self.kind = kind
        reply = reply or Reply()
        self.pieces = reply.pieces if reply.pieces is not None else [PIECE] * chunks
        self.chunks = len(self.pieces)
        self.finish = _NATIVE_FINISH.get(kind, {}).get(reply.finish, reply.finish)
        self.prompt_tokens = reply.prompt_tokens
        self.completion_tokens = (reply.completion_tokens if reply.completion_tokens is not None
                                  else self.chunks)

    def cut(self, limit: int) -> None:
        """Answer only ``limit`` pieces, ended by the token limit."""
        if limit < self.chunks:
            self.pieces = self.pieces[:limit]
            self.chunks = self.completion_tokens = limit
            self.finish = _NATIVE_FINISH.get(self.kind, {}).get("length", "length")

    @property
    def content_type(self) -> str:
        return "application/x-ndjson" if self.kind == "ollama" else "text/event-stream"

    def start(self) -> list[bytes]:
        if self.kind == "openai":
            return [_openai_event({"role": "assistant", "content": ""})]
        if self.kind == "anthropic":
            return [_anthropic_event("message_start", {"type": "message_start", "message": {
                "id": "msg_fault", "type": "message", "role": "assistant", "model": "fault",
                "content": [], "stop_reason": None,
                "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 1}}}),
                    _anthropic_event("content_block_start", {
                        "type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}})]
        return []

    def piece(self, i: int = 0) -> bytes:
        text = self.pieces[i] if i < len(self.pieces) else PIECE
        if self.kind == "openai":
            return _openai_event({"content": text})
        if self.kind == "anthropic":
            return _anthropic_event("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}})
        if self.kind == "tgi":
            return _tgi_event(i, text)
        return _ollama_line(text)

    def end(self) -> list[bytes]:
        n, prompt = self.completion_tokens, self.prompt_tokens
        if self.kind == "openai":
            usage = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1,
                     "model": "fault", "choices": [],
                     "usage": {"prompt_tokens": prompt, "completion_tokens": n,
                               "total_tokens": n + prompt}}
            return [_openai_event({}, self.finish),
                    b"data: " + json.dumps(usage).encode() + b"\n\n", b"data: [DONE]\n\n"]
        if self.kind == "anthropic":
            return [_anthropic_event("content_block_stop", {"type": "content_block_stop",
                                                            "index": 0}),
                    _anthropic_event("message_delta", {
                        "type": "message_delta", "delta": {"stop_reason": self.finish},
                        "usage": {"output_tokens": n}}),
                    _anthropic_event("message_stop", {"type": "message_stop"})]
        if self.kind == "tgi":  # the end-of-sequence token carries the text and details
            eos = self.finish == "eos_token"
            return [_tgi_event(self.chunks, "</s>", special=True,
                               generated="".join(self.pieces), details={
                                   "finish_reason": self.finish,
                                   "generated_tokens": n + 1 if eos else n, "seed": None,
                                   "input_length": prompt})]
        return [_ollama_line("", done=True, n=n, reason=self.finish, prompt=prompt)]

    def error_event(self) -> bytes:
        if self.kind == "openai":
            return b'data: {"error": {"message": "the model crashed", "type": "server_error"}}\n\n'
        if self.kind == "anthropic":
            return _anthropic_event("error", {"type": "error", "error": {
                "type": "overloaded_error", "message": "Overloaded"}})
        if self.kind == "tgi":
            return (b'data:{"error":"Request failed during generation: Server error: '
                    b'out of memory","error_type":"generation"}\n\n')
        return b'{"error": "an error was encountered while running the model"}\n'

    def error_body(self, status: int, message: str | None = None) -> dict[str, Any]:
        message = message or {
            400: "invalid request", 401: "invalid API key", 403: "forbidden",
            404: "model not found", 429: "rate limit exceeded", 500: "internal error",
            503: "server busy, please try again.", 529: "Overloaded"}.get(status, "error")
        if self.kind == "ollama":
            return {"error": message}
        if self.kind == "tgi":
            kind = {422: "validation", 424: "generation", 429: "overloaded"}.get(
                status, "incomplete_generation")
            return {"error": message, "error_type": kind}
        if self.kind == "anthropic":
            kind = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
                    529: "overloaded_error"}.get(status, "api_error")
            return {"type": "error", "error": {"type": kind, "message": message}}
        code = {404: "model_not_found", 401: "invalid_api_key"}.get(status)
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "code": code}}

    def whole(self) -> dict[str, Any]:
        text = "".join(self.pieces)
        n, prompt = self.completion_tokens, self.prompt_tokens
        if self.kind == "tgi":
            eos = self.finish == "eos_token"
            return {"generated_text": text, "details": {
                "finish_reason": self.finish, "generated_tokens": n + 1 if eos else n,
                "seed": None, "prefill": [],
                "tokens": [{"id": 100 + i, "text": piece, "logprob": -0.5, "special": False}
                           for i, piece in enumerate(self.pieces)]}}
        if self.kind == "ollama":
            return {"model": "fault", "created_at": "2025-01-01T00:00:00Z",
                    "message": {"role": "assistant", "content": text}, "done": True,
                    "done_reason": self.finish, "prompt_eval_count": prompt, "eval_count": n}
        if self.kind == "anthropic":
            return {"id": "msg_fault", "type": "message", "role": "assistant", "model": "fault",
                    "content": [{"type": "text", "text": text}], "stop_reason": self.finish,
                    "usage": {"input_tokens": prompt, "output_tokens": n}}
        return {"id": "chatcmpl-fault", "object": "chat.completion", "created": 1,
                "model": "fault", "choices": [{"index": 0, "message": {
                    "role": "assistant", "content": text}, "finish_reason": self.finish}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": n,
                          "total_tokens": n + prompt}}


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
        routes: extra chat routes, path to wire (``"openai"``, ``"ollama"``,
            ``"anthropic"``, ``"tgi"``).
        embedding_dim: length of the vectors the embeddings routes return.
        record: how many of the latest requests :attr:`received` keeps.

    Attributes:
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
                 routes: Mapping[str, str] | None = None, embedding_dim: int = 8,
                 record: int = 1000) -> None:
        self.chunks = chunks
        self.tail_delay = tail_delay
        self.oversize_bytes = oversize_bytes
        self.models = list(models) if models is not None else None
        self.require_headers = dict(require_headers or {})
        self.routes = dict(routes or {})
        self.embedding_dim = embedding_dim
        self.faults: deque[str] = deque()
        self.received: deque[ReceivedRequest] = deque(maxlen=record)
        self.requests = 0
        self.disconnects = 0
        self.active = 0
        self.peak_active = 0
        self.url = ""
        self.redirect_to = ""
        self._scripts: dict[str, deque[str | Reply]] = {}
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> FaultyUpstream:
        app = web.Application(middlewares=[self._record, self._check_headers])
        chat_routes = {"/v1/chat/completions": "openai", "/chat/completions": "openai",
                       "/api/chat": "ollama", "/v1/messages": "anthropic", **self.routes}
        for path, kind in chat_routes.items():
            app.router.add_post(path, self._chat_handler(kind))
        app.router.add_post("/generate_stream", self._chat_handler("tgi", stream=True))
        app.router.add_post("/generate", self._chat_handler("tgi", stream=False))
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

    def chat_requests(self) -> list[ReceivedRequest]:
        """The chat requests received, in order."""
        return [r for r in self.received if r.method == "POST" and isinstance(r.json, dict)
                and ("messages" in r.json or "prompt" in r.json or "inputs" in r.json)
                and r.path != "/chat_tokenize"]

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
        self.received.append(ReceivedRequest(request.method, request.path,
                                             dict(request.headers), body))
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def _check_headers(self, request: web.Request, handler: Any) -> web.StreamResponse:
        for name, value in self.require_headers.items():
            if request.headers.get(name) != value:
                kind = self._kind_of(request.path)
                return web.json_response(
                    _Wire(kind, 0).error_body(401, f"missing or wrong {name} header"),
                    status=401)
        response: web.StreamResponse = await handler(request)
        return response

    def _kind_of(self, path: str) -> str:
        if path in self.routes:
            return self.routes[path]
        if path.startswith("/api/"):
            return "ollama"
        if path in ("/generate_stream", "/generate", "/chat_tokenize", "/info"):
            return "tgi"
        return "anthropic" if path == "/v1/messages" else "openai"

    # -- simple routes -------------------------------------------------------------------
    def _model_names(self) -> list[str]:
        return self.models if self.models is not None else ["fault"]

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": name, "object": "model", "owned_by": "fault"}
            for name in self._model_names()]})

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

    def _unknown_model(self, body: Any, kind: str) -> web.Response | None:
        model = body.get("model") if isinstance(body, dict) else None
        if self.models is None or model in self.models:
            return None
        return web.json_response(_Wire(kind, 0).error_body(
            404, f"model '{model}' not found"), status=404)

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        missing = self._unknown_model(body, "openai")
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
        missing = self._unknown_model(body, "ollama")
        if missing is not None:
            return missing
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        return web.json_response({"model": body.get("model"),
                                  "embeddings": [self._vector(t) for t in texts],
                                  "prompt_eval_count": len(texts)})

    # -- chat ------------------------------------------------------------------------------
    def _chat_handler(self, kind: str, *, stream: bool | None = None) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            self.requests += 1
            self.active += 1
            self.peak_active = max(self.peak_active, self.active)
            try:
                if stream is None:  # (tests wrap _answer with a two-argument spy)
                    return await self._answer(request, kind)
                return await self._answer(request, kind, stream)
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
        elif self.faults:
            item = self.faults.popleft()
        else:
            item = "ok"
        return item if isinstance(item, Reply) else Reply(fault=item)

    async def _answer(self, request: web.Request, kind: str,
                      stream: bool | None = None) -> web.StreamResponse:
        body = await request.json()
        # a TGI server serves one model and takes no model name
        missing = None if kind == "tgi" else self._unknown_model(body, kind)
        if missing is not None:
            return missing
        model = body.get("model") if isinstance(body, dict) else None
        if kind == "tgi":  # scripts for the one model a TGI server serves
            model = self._model_names()[0]
        reply = self._next(model)
        wire = _Wire(kind, self.chunks, reply)
        limit = _find_max_tokens(body)
        if limit is not None:
            wire.cut(limit)
        fault = reply.fault
        if fault.startswith("redirect_"):
            return web.Response(status=int(fault.removeprefix("redirect_")),
                                headers={"Location": self.redirect_to + request.path_qs})
        if fault[:1].isdigit():
            code, _, retry_after = fault.partition(":")
            status = int(code)
            headers = {"Retry-After": retry_after or "2"} if retry_after or status in (
                429, 503) else {}
            return web.json_response(wire.error_body(status, reply.message), status=status,
                                     headers=headers)
        if fault.startswith("delay:"):
            await asyncio.sleep(float(fault.removeprefix("delay:")))
            fault = "ok"
        if fault == "hang":
            await asyncio.sleep(3600)
        streaming = body.get("stream", wire.kind == "ollama") if stream is None else stream
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
        for i in range(pieces):
            await resp.write(wire.piece(i))
            await asyncio.sleep(reply.delay)
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
