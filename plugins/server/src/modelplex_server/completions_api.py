"""OpenAI's legacy completions: ``POST /v1/completions`` (prompt in, text out), for tools that
still use it.

The prompt is sent as one user message to the model (every modelplex provider chats), through
the same path as every route (the gateway resolves the model, keys and limits apply); the
answer comes back as a ``text_completion`` object, or streamed as ``text_completion`` chunks
ending with ``data: [DONE]`` (a usage chunk before it with
``stream_options.include_usage``). What cannot be answered that way is a clear 400: several
prompts, token ids, ``n``/``best_of`` above 1, ``echo``, ``suffix``, ``logprobs``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from pydantic import Field, ValidationError

from modelplex.chunks import StreamChunk
from modelplex.http import dumps
from modelplex.provider import ChatRequest, Provider
from modelplex.types import ChatMessage, MessageRole
from modelplex_server.errors import ApiError, error_body, from_exception
from modelplex_server.gateway import GATEWAY, KEY, Gateway
from modelplex_server.openai_api import DONE, SSE_HEADERS, openai_usage
from modelplex_server.relay import answer_streamed, answer_whole
from modelplex_server.schemas import StopList, StreamOptions, _Body, read_body
from modelplex_server.settings import KeyConfig

__all__ = ["CompletionRequest", "add_routes", "answer_completion"]

_FINISH = {"stop": "stop", "length": "length", "tool_calls": "stop",
           "content_filter": "content_filter"}


class CompletionRequest(_Body):
    """``POST /v1/completions``."""

    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: StopList | None = None
    seed: int | None = None
    user: str | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1)
    best_of: int | None = Field(default=None, ge=1)
    echo: bool | None = None
    suffix: str | None = None
    logprobs: int | None = Field(default=None, ge=0)


def _prompt(body: CompletionRequest) -> str:
    prompt = body.prompt
    if isinstance(prompt, str):
        return prompt
    texts = [p for p in prompt if isinstance(p, str)]
    if not texts or len(texts) != len(prompt):
        raise ApiError(400, "the prompt must be a string (or a list of one string): token "
                            "ids are not supported", param="prompt", code="unsupported_value")
    if len(texts) > 1:
        raise ApiError(400, f"{len(texts)} prompts in one request are not supported: send "
                            "one request per prompt", param="prompt", code="unsupported_value")
    return texts[0]


def _refuse_unsupported(body: CompletionRequest) -> None:
    for name, bad in (("n", (body.n or 1) > 1), ("best_of", (body.best_of or 1) > 1),
                      ("echo", bool(body.echo)), ("suffix", body.suffix is not None),
                      ("logprobs", body.logprobs is not None)):
        if bad:
            raise ApiError(400, f"{name} is not supported by this server's completions "
                                "(prompts are answered by the model's chat)", param=name,
                           code="unsupported_parameter")


class _Writer:
    def __init__(self, model_id: str) -> None:
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                "created": int(time.time()), "model": model_id}
        self._head = b"data: " + dumps(head)[:-1] + b',"choices":[{"text":'
        self._tail = b',"index":0,"logprobs":null,"finish_reason":null}]}\n\n'
        self._usage = b"data: " + dumps(head)[:-1] + b',"choices":[],"usage":'

    def text(self, text: str) -> bytes:
        return self._head + dumps(text) + self._tail

    def finish(self, reason: str) -> bytes:
        return (self._head + b'"","index":0,"logprobs":null,"finish_reason":'
                + dumps(reason) + b"}]}\n\n")

    def usage(self, usage: dict[str, int]) -> bytes:
        return self._usage + dumps(usage) + b"}\n\n"


def _usage(chunk: Any) -> dict[str, Any]:
    usage = getattr(chunk, "usage", None)
    prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
    return openai_usage(prompt, completion, usage)


async def _stream(request: web.Request, stream: AsyncIterator[StreamChunk],
                  first: StreamChunk | None, body: CompletionRequest) -> web.StreamResponse:
    writer = _Writer(body.model)
    resp = web.StreamResponse(headers=SSE_HEADERS)
    await resp.prepare(request)
    last = first
    try:
        if first is not None and first.content:
            await resp.write(writer.text(first.content))
        async for chunk in stream:
            last = chunk
            if chunk.content:
                await resp.write(writer.text(chunk.content))
    except ConnectionResetError:
        raise
    except Exception as err:  # after the headers: OpenAI's in-stream error event
        await resp.write(b"data: " + dumps(error_body(from_exception(err))) + b"\n\n")
        await resp.write_eof()
        return resp
    tail = writer.finish(_FINISH.get(last.finish_reason or "stop", "stop") if last else "stop")
    if body.stream_options and body.stream_options.include_usage:
        tail += writer.usage(_usage(last))
    await resp.write(tail + DONE)
    await resp.write_eof()
    return resp


async def _request(gateway: Gateway, key: KeyConfig | None,
                   body: CompletionRequest) -> tuple[Provider, ChatRequest]:
    """The provider answering ``body`` (after ``key``'s model check) and its request."""
    _refuse_unsupported(body)
    prompt = _prompt(body)
    try:
        message = ChatMessage(role=MessageRole.USER, content=prompt)
    except ValidationError as err:
        detail = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
        raise ApiError(400, f"prompt: {detail}", param="prompt") from None
    provider, model = await gateway.resolve(key, body.model)
    options = gateway.known_options(provider, {
        "max_tokens": body.max_tokens, "temperature": body.temperature, "top_p": body.top_p,
        "stop": body.stop, "seed": body.seed, "user": body.user,
        "presence_penalty": body.presence_penalty, "frequency_penalty": body.frequency_penalty})
    return provider, provider.build_request([message], model=model, options=options)


async def answer_completion(gateway: Gateway, key: KeyConfig | None,
                            body: CompletionRequest, *, slot: bool = False) -> dict[str, Any]:
    """The ``text_completion`` object answering ``body`` for ``key`` (not streamed): what
    ``POST /v1/completions`` answers (``slot``: in a gateway slot), and what a batch line of
    that endpoint gets."""
    provider, chat = await _request(gateway, key, body)
    if slot:
        reply = await answer_whole(gateway, provider, chat)
    else:
        reply = await provider.complete_request(chat)
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
            "created": int(time.time()), "model": body.model,
            "choices": [{"text": reply.content, "index": 0, "logprobs": None,
                         "finish_reason": _FINISH.get(reply.finish_reason or "stop", "stop")}],
            "usage": _usage(reply)}


async def completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/completions``."""
    gateway = request.app[GATEWAY]
    body = await read_body(request, CompletionRequest)
    _refuse_unsupported(body)
    _prompt(body)
    await gateway.check_rate(request.get(KEY))
    if not body.stream:
        answer = await answer_completion(gateway, request.get(KEY), body, slot=True)
        return web.Response(body=dumps(answer), content_type="application/json")
    provider, chat = await _request(gateway, request.get(KEY), body)
    return await answer_streamed(gateway, provider, chat,
                                 lambda rest, first: _stream(request, rest, first, body))


def add_routes(app: web.Application) -> None:
    """Register ``/v1/completions``."""
    app.router.add_post("/v1/completions", completions)
