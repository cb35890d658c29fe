"""The OpenAI-compatible API: ``/v1/chat/completions`` and ``/v1/embeddings`` (``/v1/models``:
:mod:`modelplex_server.models_api`).

Requests go through the same path as every modelplex caller: the model id is resolved to a
provider (:class:`~modelplex_server.resolve.ModelResolver`), the provider validates the
request and streams :class:`~modelplex.chunks.StreamChunk` objects, and this module writes
them in OpenAI's wire format (protocols.md section 2). A stream's headers are sent only after
its first chunk arrived, so an error before it (unknown model, upstream down) is a proper
HTTP status; a later one is an SSE ``error`` event, as OpenAI sends it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from modelplex.chunks import ChatResponse, StreamChunk, ToolCall, Usage
from modelplex.errors import OptionsError
from modelplex.http import dumps
from modelplex.provider import ChatRequest, Provider
from modelplex.tokens import estimate_tokens
from modelplex.types import ChatMessage, MessageRole
from modelplex_server import usage_fields
from modelplex_server.errors import ApiError, error_body, from_exception
from modelplex_server.gateway import GATEWAY, KEY, Gateway
from modelplex_server.images import OPENAI_IMAGES, check_image_count, client_image
from modelplex_server.relay import answer_streamed, answer_whole
from modelplex_server.schemas import (
    ChatCompletionRequest,
    ChatMessageParam,
    EmbeddingRequest,
    check_option_stop,
    check_tool_choice,
    read_body,
)
from modelplex_server.settings import KeyConfig

__all__ = ["add_routes", "answer_chat", "answer_embeddings", "openai_usage", "to_chat_messages"]

_ROLES = {"system": MessageRole.SYSTEM, "developer": MessageRole.SYSTEM,
          "user": MessageRole.USER, "assistant": MessageRole.ASSISTANT,
          "tool": MessageRole.TOOL}
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
           "content_filter": "content_filter", "end_turn": "stop", "max_tokens": "length",
           "stop_sequence": "stop", "tool_use": "tool_calls"}
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
               "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


def _content(param: ChatMessageParam, index: int) -> tuple[str, tuple[str, ...]]:
    content = param.content
    if content is None or isinstance(content, str):
        return content or "", ()
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and isinstance(part.get("image_url"), dict) \
                and isinstance(part["image_url"].get("url"), str):
            url: str = part["image_url"]["url"]
            images.append(client_image(url, f"messages.{index}.content.{j}.image_url.url"))
        else:
            raise ApiError(400, f"unsupported content part of type {kind!r}: send 'text' or "
                                "'image_url' parts", param=f"messages.{index}.content.{j}")
    return "\n".join(texts), tuple(images)


def to_chat_messages(params: Sequence[ChatMessageParam], *,
                     field: str = "messages") -> list[ChatMessage]:
    """OpenAI messages as modelplex :class:`ChatMessage` objects (a 400 naming the bad one)."""
    out = []
    for i, param in enumerate(params):
        text, images = _content(param, i)
        calls: list[dict[str, Any]] = []
        for j, call in enumerate(param.tool_calls or ()):
            try:
                arguments = json.loads(call.function.arguments or "{}")
            except (ValueError, RecursionError):
                arguments = None
            if not isinstance(arguments, dict):
                raise ApiError(400, "tool call arguments must be a JSON object encoded as a "
                                    "string", param=f"{field}.{i}.tool_calls.{j}.function."
                                                    "arguments")
            calls.append({"id": call.id, "name": call.function.name, "arguments": arguments})
        try:
            out.append(ChatMessage(role=_ROLES[param.role], content=text, images=images,
                                   tool_calls=tuple(calls), tool_call_id=param.tool_call_id,
                                   name=param.name))
        except ValidationError as err:
            detail = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            raise ApiError(400, f"{field}.{i}: {detail}", param=f"{field}.{i}.content") from None
    return out


def _options(gateway: Gateway, provider: Any, body: ChatCompletionRequest) -> dict[str, Any]:
    common = {"temperature": body.temperature, "top_p": body.top_p,
              "max_tokens": body.max_completion_tokens or body.max_tokens,
              "stop": body.stop, "seed": body.seed, "presence_penalty": body.presence_penalty,
              "frequency_penalty": body.frequency_penalty, "user": body.user,
              "parallel_tool_calls": body.parallel_tool_calls}
    options = gateway.known_options(provider, common)
    check_option_stop(body.options)
    options.update(body.options or {})
    return options


def _response_format(body: ChatCompletionRequest) -> Any:
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return "json"
    if not fmt.json_schema or not isinstance(fmt.json_schema.get("schema"), dict):
        raise ApiError(400, "response_format json_schema needs json_schema.schema (an object)",
                       param="response_format.json_schema")
    return {"type": "json_schema", "json_schema": fmt.json_schema}


#: request fields the gateway cannot honour (an answer without them would silently lack what
#: the client asked for), with what to do instead
_UNSERVED = {
    "audio": "audio output is not served: leave out audio and modalities (answers are text)",
    "functions": "the deprecated functions parameter is not served: give them as tools "
                 "([{\"type\": \"function\", \"function\": {...}}])",
    "function_call": "the deprecated function_call parameter is not served: use tool_choice",
    "web_search_options": "web search is not served: leave out web_search_options"}


def refuse_unsupported(body: ChatCompletionRequest) -> None:
    """A clear 400 for what the gateway cannot answer: several choices, log probabilities,
    audio output, the deprecated ``functions``, web search."""
    for name, why in _UNSERVED.items():
        value = getattr(body, name)
        if value is not None and value != []:  # an empty functions list asks nothing
            raise ApiError(400, f"{name}: {why}", param=name, code="unsupported_parameter")
    if body.modalities is not None and set(body.modalities) - {"text"}:
        raise ApiError(400, f"modalities: only text is served (got {body.modalities!r:.80})",
                       param="modalities", code="unsupported_value")
    if body.n is not None and body.n > 1:
        raise ApiError(400, f"n={body.n} is not supported: this server answers one choice per "
                            "request; send the request n times instead", param="n",
                       code="unsupported_value")
    if body.logprobs or body.top_logprobs:
        param = "logprobs" if body.logprobs else "top_logprobs"
        raise ApiError(400, "logprobs are not supported: modelplex providers do not return "
                            "token log probabilities; leave logprobs and top_logprobs unset",
                       param=param, code="unsupported_parameter")


def _tool_call_dict(call: ToolCall, index: int) -> dict[str, Any]:
    return {"index": index, "id": call.id or f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}


def _usage(usage: Usage | None) -> dict[str, Any]:
    if usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return openai_usage(usage.prompt_tokens, usage.completion_tokens, usage)


def openai_usage(prompt: int, completion: int, usage: Any) -> dict[str, Any]:
    """Chat Completions' ``usage``, with ``prompt_tokens_details.cached_tokens`` and
    ``completion_tokens_details.reasoning_tokens`` when the provider reported them."""
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}
    read, thought = usage_fields.cache_read(usage), usage_fields.reasoning(usage)
    if read:
        out["prompt_tokens_details"] = {"cached_tokens": read}
    if thought:
        out["completion_tokens_details"] = {"reasoning_tokens": thought}
    return out


def _finish(reason: str | None, had_tools: bool) -> str:
    if had_tools and reason in (None, "stop", "tool_calls"):
        return "tool_calls"
    return _FINISH.get(reason or "stop", "stop")


class _ChunkWriter:
    """Formats chat.completion.chunk events; the per-chunk path is string concatenation."""

    def __init__(self, model_id: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        head = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": model_id}
        # '{"id":...,"model":"m","choices":[{"index":0,"delta":' + delta + tail
        self._head = b"data: " + dumps(head)[:-1] + b',"choices":[{"index":0,"delta":'
        self._tail = b',"logprobs":null,"finish_reason":null}]}\n\n'
        self._usage_head = b"data: " + dumps(head)[:-1] + b',"choices":[],"usage":'
        self.tool_index = 0

    def role(self) -> bytes:
        return self._head + b'{"role":"assistant","content":""}' + self._tail

    def content(self, text: str) -> bytes:
        return self._head + b'{"content":' + dumps(text) + b"}" + self._tail

    def chunk(self, chunk: StreamChunk) -> bytes:
        delta: dict[str, Any] = {}
        if chunk.content:
            delta["content"] = chunk.content
        if chunk.reasoning:
            delta["reasoning_content"] = chunk.reasoning
        if chunk.tool_calls:
            delta["tool_calls"] = [_tool_call_dict(call, self.tool_index + i)
                                   for i, call in enumerate(chunk.tool_calls)]
            self.tool_index += len(chunk.tool_calls)
        return self._head + dumps(delta) + self._tail if delta else b""

    def finish(self, reason: str) -> bytes:
        return (self._head + b"{}" + b',"logprobs":null,"finish_reason":'
                + dumps(reason) + b"}]}\n\n")

    def usage(self, usage: Usage | None) -> bytes:
        return self._usage_head + dumps(_usage(usage)) + b"}\n\n"


async def _stream_reply(request: web.Request, stream: AsyncIterator[StreamChunk],
                        first: StreamChunk | None, model_id: str,
                        include_usage: bool) -> web.StreamResponse:
    writer = _ChunkWriter(model_id)
    resp = web.StreamResponse(headers=SSE_HEADERS)
    await resp.prepare(request)
    write = resp.write
    last = first
    try:
        if first is not None:
            await write(writer.role() + writer.chunk(first))
            async for chunk in stream:
                last = chunk
                if chunk.reasoning is None and chunk.tool_calls is None:
                    if chunk.content:
                        await write(writer.content(chunk.content))
                else:
                    await write(writer.chunk(chunk))
        else:
            await write(writer.role())
    except ConnectionResetError:
        raise
    except Exception as err:  # after the headers: OpenAI's in-stream error event
        api = from_exception(err)
        await write(b"data: " + dumps(error_body(api)) + b"\n\n")
        await resp.write_eof()
        return resp
    tail = writer.finish(_finish(last.finish_reason if last else None, writer.tool_index > 0))
    if include_usage:
        tail += writer.usage(last.usage if last else None)
    await write(tail + DONE)
    await resp.write_eof()
    return resp


def _completion(reply: ChatResponse, model_id: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content or None,
                               "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [{k: v for k, v in _tool_call_dict(c, i).items() if k != "index"}
                                 for i, c in enumerate(reply.tool_calls)]
    elif message["content"] is None:
        message["content"] = ""
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": model_id,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": _finish(reply.finish_reason, bool(reply.tool_calls))}],
            "usage": _usage(reply.usage)}


async def _chat_request(gateway: Gateway, key: KeyConfig | None,
                        body: ChatCompletionRequest) -> tuple[Provider, ChatRequest]:
    """The provider answering ``body`` (after ``key``'s model check) and its request."""
    messages = to_chat_messages(body.messages)
    check_image_count(messages, OPENAI_IMAGES, "messages")
    provider, model = await gateway.resolve(key, body.model)
    tools = [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None
    check_tool_choice(tools, body.tool_choice)
    args: dict[str, Any] = {"model": model, "options": _options(gateway, provider, body),
                            "tools": tools, "tool_choice": body.tool_choice,
                            "response_format": _response_format(body)}
    chat = provider.build_request(messages, **args)
    strict = (body.response_format.json_schema or {}).get("strict") \
        if body.response_format else None
    if isinstance(strict, bool) and chat.response_format is not None:
        chat.response_format["strict"] = strict  # kept for providers that enforce it
    return provider, chat


async def answer_chat(gateway: Gateway, key: KeyConfig | None,
                      body: ChatCompletionRequest, *, slot: bool = False) -> dict[str, Any]:
    """The ``chat.completion`` object answering ``body`` for ``key`` (not streamed): what
    ``POST /v1/chat/completions`` answers (``slot``: in a gateway slot), and what a batch
    line of that endpoint gets (:mod:`modelplex_server.batch_runner`)."""
    provider, chat = await _chat_request(gateway, key, body)
    if slot:
        reply = await answer_whole(gateway, provider, chat)
    else:  # the provider's own non-streaming request
        reply = await provider.complete_request(chat)
    return _completion(reply, body.model)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``."""
    gateway = request.app[GATEWAY]
    body = await read_body(request, ChatCompletionRequest)
    refuse_unsupported(body)
    await gateway.check_rate(request.get(KEY))
    if not body.stream:
        answer = await answer_chat(gateway, request.get(KEY), body, slot=True)
        return web.Response(body=dumps(answer), content_type="application/json")
    provider, chat = await _chat_request(gateway, request.get(KEY), body)
    include = bool(body.stream_options and body.stream_options.include_usage)
    return await answer_streamed(gateway, provider, chat, lambda rest, first: _stream_reply(
        request, rest, first, body.model, include))


def _b64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _embedding_texts(body: EmbeddingRequest) -> list[str]:
    """The texts to embed; token ids are refused (no provider embeds them)."""
    value = body.input
    if isinstance(value, str):
        return [value]
    if not value:
        raise ApiError(400, "input must not be empty", param="input")
    if all(isinstance(item, str) for item in value):
        return [item for item in value if isinstance(item, str)]
    raise ApiError(400, "token ids as input are not supported: modelplex providers embed "
                        "text, so send the strings (a string or a list of strings)",
                   param="input", code="unsupported_value")


async def embeddings(request: web.Request) -> web.Response:
    """``POST /v1/embeddings``."""
    gateway = request.app[GATEWAY]
    body = await read_body(request, EmbeddingRequest)
    await gateway.check_rate(request.get(KEY))
    answer = await answer_embeddings(gateway, request.get(KEY), body, slot=True)
    return web.Response(body=dumps(answer), content_type="application/json")


async def answer_embeddings(gateway: Gateway, key: KeyConfig | None,
                            body: EmbeddingRequest, *, slot: bool = False) -> dict[str, Any]:
    """The embeddings list answering ``body`` for ``key``: what ``POST /v1/embeddings``
    answers (``slot``: in a gateway slot), and what a batch line of that endpoint gets."""
    texts = _embedding_texts(body)
    provider, model = await gateway.resolve(key, body.model)
    options: dict[str, Any] = {"dimensions": body.dimensions} if body.dimensions else {}
    if body.user is not None and "user" in provider.Options.model_fields:
        options["user"] = body.user
    try:
        with gateway.slot() if slot else contextlib.nullcontext():
            vectors = await provider.embed(texts, model=model, options=options or None)
    except OptionsError:
        if not body.dimensions:
            raise
        raise ApiError(400, f"dimensions is not supported by {body.model!r}: it gives "
                            "vectors of its own size; leave dimensions unset",
                       param="dimensions", code="unsupported_parameter") from None
    if body.dimensions and any(len(v) != body.dimensions for v in vectors):
        raise ApiError(400, f"dimensions={body.dimensions} is not supported by {body.model!r}: "
                            f"it gave vectors of {len(vectors[0])} numbers; leave dimensions "
                            "unset", param="dimensions", code="unsupported_parameter")
    encode = _b64 if body.encoding_format == "base64" else list
    tokens = sum(map(estimate_tokens, texts))
    data = [{"object": "embedding", "index": i, "embedding": encode(v)}
            for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": body.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def add_routes(app: web.Application) -> None:
    """Register the OpenAI-compatible routes."""
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
