"""Anthropic's Messages API: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Point the ``anthropic`` SDK or Claude Code at the server (``ANTHROPIC_BASE_URL=http://HOST:PORT``)
and name any model id the server knows (``llamacpp:smollm2``, a named model). Requests go the
way every route's do (the model resolved by the gateway, the provider's validated request,
keys and limits); this module answers them, and :mod:`modelplex_server.anthropic_request`
reads them (protocols.md section 3):

* ``system`` (a string or text blocks) becomes the system message; content blocks ``text``,
  ``image`` (base64), ``tool_use`` (assistant) and ``tool_result`` (user) become modelplex
  messages; ``tools`` (``input_schema``) and ``tool_choice`` (``auto``, ``any``, ``none``,
  ``tool``) become function tools; ``max_tokens`` (required), ``stop_sequences``,
  ``temperature``, ``top_p``, ``top_k`` and ``metadata.user_id`` become options. With
  ``thinking`` enabled, the model's reasoning (thinking models) is answered as ``thinking``
  blocks (with an empty signature).
* Answers are ``message`` objects; streams are Anthropic's named SSE events
  (``message_start``, ``ping``, ``content_block_start/delta/stop``, ``message_delta`` with
  ``stop_reason`` and usage, ``message_stop``), and an error after the stream began is an
  ``error`` event.
* Every error on these paths, the middlewares' too (401, 413, unknown route), is Anthropic's
  ``{"type": "error", "error": {"type", "message"}, "request_id"}`` with the same status the
  other APIs answer, rewritten as the response is prepared (:func:`anthropic_errors`); the
  message starts with the field at fault (``messages.2.role: ...``).
* What Anthropic refuses is refused the same way, on ``count_tokens`` too (a 400
  ``invalid_request_error``, see :mod:`modelplex_server.anthropic_request`): a ``system``
  turn in ``messages``, a ``tool_result`` answering no ``tool_use`` of the turn before, and a
  ``thinking.budget_tokens`` that is not at least 1024 and less than ``max_tokens``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from modelplex.chunks import ChatResponse, StreamChunk, ToolCall, Usage
from modelplex.http import dumps
from modelplex.provider import ChatRequest, Provider
from modelplex.tokens import estimate_prompt_tokens
from modelplex_server import usage_fields
from modelplex_server.anthropic_request import (
    CountTokensRequest,
    MessagesBase,
    MessagesRequest,
    check_thinking,
    to_chat_messages,
    tools_of,
)
from modelplex_server.gateway import GATEWAY, KEY, Gateway
from modelplex_server.images import ANTHROPIC_IMAGES, check_image_count
from modelplex_server.openai_api import SSE_HEADERS
from modelplex_server.relay import answer_streamed, answer_whole, relay
from modelplex_server.schemas import check_tool_choice, read_body

__all__ = ["PATHS", "CountTokensRequest", "MessagesRequest", "add_routes", "anthropic_errors"]

PATHS = ("/v1/messages",)

#: Anthropic's error type for each HTTP status the server answers with.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
               408: "timeout_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 502: "api_error", 503: "overloaded_error",
               504: "timeout_error", 529: "overloaded_error"}
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
         "end_turn": "end_turn", "max_tokens": "max_tokens", "tool_use": "tool_use",
         "stop_sequence": "stop_sequence", "content_filter": "refusal", "refusal": "refusal"}


def _options(gateway: Gateway, provider: Provider, body: MessagesRequest) -> dict[str, Any]:
    return gateway.known_options(provider, {
        "max_tokens": body.max_tokens, "temperature": body.temperature, "top_p": body.top_p,
        "top_k": body.top_k, "stop": body.stop_sequences,
        "user": body.metadata.user_id if body.metadata else None,
        "parallel_tool_calls": False if body.tool_choice
        and body.tool_choice.disable_parallel_tool_use else None})


def _stop_reason(reason: str | None, had_tools: bool) -> str:
    if had_tools and reason in (None, "stop", "tool_calls"):
        return "tool_use"
    return _STOP.get(reason or "stop", "end_turn")


def _tool_id(call: ToolCall) -> str:
    return call.id or f"toolu_{uuid.uuid4().hex[:24]}"


def _usage(usage: Usage | None) -> dict[str, int]:
    """Anthropic's ``usage``: ``input_tokens`` excludes the cache reads and writes, which are
    given apart (``cache_read_input_tokens``, ``cache_creation_input_tokens``) when known."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    read, written = usage_fields.cache_read(usage), usage_fields.cache_written(usage)
    out = {"input_tokens": max(0, usage.prompt_tokens - read - written),
           "output_tokens": usage.completion_tokens}
    if read or written:
        out.update(cache_read_input_tokens=read, cache_creation_input_tokens=written)
    return out


def _message_body(reply: ChatResponse, model_id: str, thinking: bool) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if thinking and reply.reasoning:
        content.append({"type": "thinking", "thinking": reply.reasoning, "signature": ""})
    if reply.content:
        content.append({"type": "text", "text": reply.content})
    content.extend({"type": "tool_use", "id": _tool_id(c), "name": c.name, "input": c.arguments}
                   for c in reply.tool_calls)
    return {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant",
            "model": model_id, "content": content,
            "stop_reason": _stop_reason(reply.finish_reason, bool(reply.tool_calls)),
            "stop_sequence": None, "usage": _usage(reply.usage)}


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(data) + b"\n\n"


class _EventWriter:
    """Anthropic's stream: one open content block at a time, text deltas cheap to format."""

    def __init__(self, write: Any, thinking: bool) -> None:
        self.write = write
        self.thinking = thinking
        self.index = -1
        self.open: str | None = None  # "text", "thinking" or "tool_use"
        self.tools = 0
        self._text_head = b""

    async def reasoning(self, text: str) -> None:
        if not self.thinking:  # asked without thinking: the reasoning is left out
            return
        out = b""
        if self.open != "thinking":
            out = self._stop() + self._start({"type": "thinking", "thinking": "",
                                              "signature": ""})
            self.open = "thinking"
        await self.write(out + _event("content_block_delta", {
            "type": "content_block_delta", "index": self.index,
            "delta": {"type": "thinking_delta", "thinking": text}}))

    async def text(self, text: str) -> None:
        out = b""
        if self.open != "text":
            out = self._stop() + self._start({"type": "text", "text": ""})
            self.open = "text"
            self._text_head = (b'event: content_block_delta\ndata: {"type":"content_block_delta",'
                               b'"index":' + str(self.index).encode()
                               + b',"delta":{"type":"text_delta","text":')
        await self.write(out + self._text_head + dumps(text) + b"}}\n\n")

    async def tool(self, call: ToolCall) -> None:
        out = self._stop() + self._start({"type": "tool_use", "id": _tool_id(call),
                                          "name": call.name, "input": {}})
        out += _event("content_block_delta", {
            "type": "content_block_delta", "index": self.index,
            "delta": {"type": "input_json_delta", "partial_json": json.dumps(call.arguments)}})
        self.open = "tool_use"
        self.tools += 1
        await self.write(out)

    def _start(self, block: dict[str, Any]) -> bytes:
        self.index += 1
        return _event("content_block_start", {"type": "content_block_start",
                                              "index": self.index, "content_block": block})

    def _stop(self) -> bytes:
        if self.open is None:
            return b""
        out = b""
        if self.open == "thinking":  # as Anthropic closes a thinking block
            out = _event("content_block_delta", {
                "type": "content_block_delta", "index": self.index,
                "delta": {"type": "signature_delta", "signature": ""}})
        self.open = None
        return out + _event("content_block_stop", {"type": "content_block_stop",
                                                   "index": self.index})

    def end(self, last: StreamChunk | None) -> bytes:
        reason = _stop_reason(last.finish_reason if last else None, self.tools > 0)
        return (self._stop()
                + _event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": reason,
                                                     "stop_sequence": None},
                                           "usage": _usage(last.usage if last else None)})
                + _event("message_stop", {"type": "message_stop"}))


async def _stream(request: web.Request, stream: AsyncIterator[StreamChunk],
                  first: StreamChunk | None, model_id: str,
                  thinking: bool) -> web.StreamResponse:
    resp = web.StreamResponse(headers={**SSE_HEADERS, "request-id": _request_id(request)})
    await resp.prepare(request)
    start = {"type": "message_start", "message": {
        "id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant",
        "model": model_id, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0}}}
    await resp.write(_event("message_start", start) + _event("ping", {"type": "ping"}))
    writer = _EventWriter(resp.write, thinking)
    ended, last = await relay(resp, stream, first, writer, lambda api: _event(
        "error", error_body(api.status, api.message)))
    if ended:
        await resp.write(writer.end(last))
        await resp.write_eof()
    return resp


# -- handlers ------------------------------------------------------------------------------------
_REQUEST_ID: web.RequestKey[str] = web.RequestKey("anthropic_request_id", str)


def _request_id(request: web.Request) -> str:
    """The ``request-id`` of this request (made once)."""
    rid = request.get(_REQUEST_ID)
    if rid is None:
        rid = request[_REQUEST_ID] = f"req_{uuid.uuid4().hex[:24]}"
    return rid


async def _prepare(request: web.Request, body: MessagesBase,
                   options: Any) -> tuple[Gateway, Provider, ChatRequest]:
    gateway = request.app[GATEWAY]
    await gateway.check_rate(request.get(KEY))
    check_thinking(body.thinking, body.max_tokens if isinstance(body, MessagesRequest) else None,
                   interleaved="interleaved-thinking" in request.headers.get("anthropic-beta", ""))
    messages = to_chat_messages(body)
    check_image_count(messages, ANTHROPIC_IMAGES, "messages")
    tools, tool_choice = tools_of(body)
    check_tool_choice(tools, tool_choice)
    provider, model = await gateway.resolve(request, body.model)
    chat = provider.build_request(
        messages, model=model, options=options(gateway, provider) if options else None,
        tools=tools, tool_choice=tool_choice,
        response_format=body.response_format() if isinstance(body, MessagesRequest) else None)
    return gateway, provider, chat


async def messages(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages``."""
    body = await read_body(request, MessagesRequest)
    gateway, provider, chat = await _prepare(
        request, body, lambda g, p: _options(g, p, body))
    if not body.stream:
        reply = await answer_whole(gateway, provider, chat)
        return web.Response(body=dumps(_message_body(reply, body.model, body.shows_thinking)),
                            content_type="application/json",
                            headers={"request-id": _request_id(request)})
    return await answer_streamed(gateway, provider, chat, lambda rest, first: _stream(
        request, rest, first, body.model, body.shows_thinking))


async def count_tokens(request: web.Request) -> web.Response:
    """``POST /v1/messages/count_tokens``: the provider's count when it has one (Anthropic),
    else an estimate (:func:`modelplex.tokens.estimate_prompt_tokens`)."""
    body = await read_body(request, CountTokensRequest)
    gateway, provider, chat = await _prepare(request, body, None)
    counter = getattr(provider, "count_tokens", None)
    count: int | None = None
    if callable(counter):
        with gateway.slot():
            count = int(await counter(chat.messages, model=chat.model, tools=chat.tools))
    if count is None:
        count = estimate_prompt_tokens(chat.messages, chat.tools)
    return web.Response(body=dumps({"input_tokens": count}), content_type="application/json",
                        headers={"request-id": _request_id(request)})


# -- errors --------------------------------------------------------------------------------------
def error_body(status: int, message: str, request_id: str | None = None) -> dict[str, Any]:
    """Anthropic's error body for ``status``."""
    body: dict[str, Any] = {"type": "error", "error": {
        "type": ERROR_TYPES.get(status, "api_error" if status >= 500 else
                                "invalid_request_error"), "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def is_anthropic_path(path: str) -> bool:
    """Whether ``path`` belongs to the Messages API."""
    return any(path == p or path.startswith(p + "/") for p in PATHS)


async def anthropic_errors(request: web.Request, resp: web.StreamResponse) -> None:
    """Give an error answered on a Messages API path (by a handler or a middleware) in
    Anthropic's shape, keeping its status and headers (``Retry-After``)."""
    if resp.status < 400 or not isinstance(resp, web.Response) \
            or not is_anthropic_path(request.path) or not isinstance(resp.body, bytes):
        return
    try:
        data = json.loads(resp.body)
    except ValueError:
        return
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict) or data.get("type") == "error":
        return
    rid = _request_id(request)
    message, param = str(error.get("message", "")), error.get("param")
    if isinstance(param, str) and param and param not in message:  # name the field at fault
        message = f"{param}: {message}"
    body = dumps(error_body(resp.status, message, rid))
    resp.body = body
    resp.headers["Content-Length"] = str(len(body))
    resp.headers["request-id"] = rid


def add_routes(app: web.Application) -> None:
    """Register ``/v1/messages`` and ``/v1/messages/count_tokens`` (and their error shape)."""
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    app.on_response_prepare.append(anthropic_errors)
