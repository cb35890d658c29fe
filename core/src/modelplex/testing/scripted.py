"""A real HTTP upstream on 127.0.0.1 that answers from a script and records every request.

For testing conversations of several requests (re-asks, tool loops) over a provider's real
wire format::

    async with ScriptedUpstream() as upstream:
        upstream.replies.extend([Reply(tool_calls=[{"name": "add", "arguments": {"a": 1}}]),
                                 Reply("The sum is 3.")])
        provider = OpenAIProvider(base_url=upstream.url + "/v1")
        ...
        assert upstream.bodies[1]["messages"][-1]["role"] == "tool"

Routes: ``/v1/chat/completions`` (OpenAI SSE, or JSON without ``stream``) and ``/api/chat``
(Ollama NDJSON, or JSON with ``stream: false``). Each request takes the next :class:`Reply`;
with none left it answers 500 so a test never waits on a missing reply.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import attrs
from aiohttp import web

__all__ = ["Reply", "ScriptedUpstream"]


@attrs.define
class Reply:
    """One scripted answer: text streamed in ``pieces`` chunks, and tool calls.

    ``tool_calls`` are ``{"name", "arguments", "id"?}`` dicts (arguments as a dict, or as
    the exact text to send).
    """

    content: str = ""
    tool_calls: list[dict[str, Any]] = attrs.Factory(list)
    pieces: int = 3
    prompt_tokens: int = 7
    completion_tokens: int = 5


def _split(text: str, pieces: int) -> list[str]:
    if not text:
        return []
    size = max(1, -(-len(text) // max(pieces, 1)))
    return [text[i:i + size] for i in range(0, len(text), size)]


def _openai_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1,
            "model": "scripted", "choices": [{"index": 0, "delta": delta,
                                              "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _openai_calls(reply: Reply) -> list[dict[str, Any]]:
    return [{"index": i, "id": call.get("id") or f"call_s{i}", "type": "function",
             "function": {"name": call["name"], "arguments": call["arguments"] if isinstance(
                 call["arguments"], str) else json.dumps(call["arguments"])}}
            for i, call in enumerate(reply.tool_calls)]


def _ollama_line(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode() + b"\n"


class ScriptedUpstream:
    """The scripted server; an async context manager that starts and stops it.

    Attributes:
        replies: the answers of the next requests, taken one per request.
        bodies: the JSON body of every chat request received, in order.
    """

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.bodies: list[dict[str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> ScriptedUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/api/chat", self._ollama)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _next(self, request: web.Request) -> tuple[dict[str, Any], Reply | None]:
        body = await request.json()
        self.bodies.append(body)
        return body, (self.replies.popleft() if self.replies else None)

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body, reply = await self._next(request)
        if reply is None:
            return web.json_response({"error": {"message": "no scripted reply left",
                                                "type": "server_error"}}, status=500)
        finish = "tool_calls" if reply.tool_calls else "stop"
        usage = {"prompt_tokens": reply.prompt_tokens,
                 "completion_tokens": reply.completion_tokens,
                 "total_tokens": reply.prompt_tokens + reply.completion_tokens}
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
            if reply.tool_calls:
                message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"}
                                         for c in _openai_calls(reply)]
            return web.json_response({"id": "chatcmpl-scripted", "object": "chat.completion",
                                      "created": 1, "model": "scripted", "usage": usage,
                                      "choices": [{"index": 0, "message": message,
                                                   "finish_reason": finish}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_openai_chunk({"role": "assistant", "content": ""}))
        for piece in _split(reply.content, reply.pieces):
            await resp.write(_openai_chunk({"content": piece}))
        for call in _openai_calls(reply):  # the name first, then the arguments in two parts
            args = call["function"]["arguments"]
            half = len(args) // 2
            await resp.write(_openai_chunk({"tool_calls": [{
                "index": call["index"], "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": args[:half]}}]}))
            await resp.write(_openai_chunk({"tool_calls": [{
                "index": call["index"], "function": {"arguments": args[half:]}}]}))
        await resp.write(_openai_chunk({}, finish))
        usage_chunk = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk",
                       "created": 1, "model": "scripted", "choices": [], "usage": usage}
        await resp.write(b"data: " + json.dumps(usage_chunk).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _ollama(self, request: web.Request) -> web.StreamResponse:
        body, reply = await self._next(request)
        if reply is None:
            return web.json_response({"error": "no scripted reply left"}, status=500)
        calls = [{"id": c.get("id") or f"call_o{i}",
                  "function": {"index": i, "name": c["name"], "arguments": c["arguments"]}}
                 for i, c in enumerate(reply.tool_calls)]
        final = {"model": "scripted", "created_at": "2026-01-01T00:00:00Z",
                 "message": {"role": "assistant", "content": ""}, "done": True,
                 "done_reason": "stop", "prompt_eval_count": reply.prompt_tokens,
                 "eval_count": reply.completion_tokens, "total_duration": 1000,
                 "eval_duration": 500}
        if body.get("stream") is False:
            final["message"] = {"role": "assistant", "content": reply.content,
                                **({"tool_calls": calls} if calls else {})}
            return web.json_response(final)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for piece in _split(reply.content, reply.pieces):
            await resp.write(_ollama_line({
                "model": "scripted", "created_at": "2026-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": piece}, "done": False}))
        if calls:  # Ollama sends every call whole in one chunk
            await resp.write(_ollama_line({
                "model": "scripted", "created_at": "2026-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": "", "tool_calls": calls},
                "done": False}))
        await resp.write(_ollama_line(final))
        await resp.write_eof()
        return resp
