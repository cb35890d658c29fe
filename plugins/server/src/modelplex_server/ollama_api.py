"""An Ollama-compatible API under ``/ollama`` (so it does not clash with seed 003's
``/api/chat``): point Ollama clients at ``http://HOST:PORT/ollama``.

Routes (protocols.md section 1): ``GET /ollama/api/version``, ``GET /ollama/api/tags``,
``POST /ollama/api/show``, ``POST /ollama/api/chat``, ``POST /ollama/api/generate``,
``POST /ollama/api/embed``. Streams are NDJSON (``stream`` defaults to true); usage is in the
last object (``done: true``); errors are ``{"error": "message"}`` with the HTTP status, or a
last ``{"error": ...}`` line when the stream had started; so are the refusals of the
middlewares before a handler runs (keys, the browser guard, an unknown route, a body over the
limit: :func:`ollama_errors` rewrites them as they are prepared). Model names are the server's model
ids (``llamacpp:smollm2``, named models).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import Field

from modelplex.chunks import StreamChunk, Usage
from modelplex.http import dumps
from modelplex.provider import Provider
from modelplex.types import ChatMessage, MessageRole, ModelInfo
from modelplex_server.__about__ import __version__
from modelplex_server.errors import ApiError, from_exception
from modelplex_server.gateway import GATEWAY, KEY, Gateway, first_chunk
from modelplex_server.images import client_image
from modelplex_server.schemas import _Body, read_body

__all__ = ["PREFIX", "add_routes", "ollama_errors"]

PREFIX = "/ollama"
_ROLES = {"system": MessageRole.SYSTEM, "user": MessageRole.USER,
          "assistant": MessageRole.ASSISTANT, "tool": MessageRole.TOOL}
_OPTION_NAMES = {"num_predict": "max_tokens"}
NDJSON = "application/x-ndjson"


class OllamaFunctionCall(_Body):
    """The function a tool call names, with its arguments as an object."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class OllamaToolCall(_Body):
    """A tool call in an assistant message of the history."""

    id: str | None = None
    function: OllamaFunctionCall


class OllamaMessage(_Body):
    """A message of ``/api/chat``: ``images`` are base64, tool-call arguments are objects."""

    role: str
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class OllamaChat(_Body):
    """``POST /api/chat``."""

    model: str
    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    stream: bool = True


class OllamaGenerate(_Body):
    """``POST /api/generate``."""

    model: str
    prompt: str = ""
    system: str | None = None
    images: list[str] | None = None
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    stream: bool = True


class OllamaEmbed(_Body):
    """``POST /api/embed``."""

    model: str
    input: str | list[str]


class OllamaShow(_Body):
    """``POST /api/show``."""

    model: str


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _error(err: BaseException) -> web.Response:
    api = from_exception(err)
    return web.Response(body=dumps({"error": api.message}), status=api.status,
                        content_type="application/json", headers=api.headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def ollama_errors(request: web.Request, resp: web.StreamResponse) -> None:
    """Give an error answered on an Ollama path by a middleware (OpenAI's shape) in Ollama's,
    ``{"error": "message"}``, keeping its status and headers (``Retry-After``)."""
    if resp.status < 400 or not isinstance(resp, web.Response) \
            or not request.path.startswith(PREFIX + "/") or not isinstance(resp.body, bytes):
        return
    try:
        data = json.loads(resp.body)
    except ValueError:
        return
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return
    body = dumps({"error": str(error.get("message", ""))})
    resp.body = body
    resp.headers["Content-Length"] = str(len(body))


def _ollama_errors(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status == 413:
                return _error(ApiError(413, "request body too large"))
            raise
        except ApiError as err:
            if err.close:  # answered and closed by the errors middleware
                raise
            return _error(err)
        except Exception as err:
            return _error(err)

    wrapped.__doc__ = handler.__doc__
    return wrapped


def _options(provider: Provider, gateway: Gateway, options: dict[str, Any] | None
             ) -> dict[str, Any]:
    mapped = {_OPTION_NAMES.get(k, k): v for k, v in (options or {}).items()}
    return gateway.known_options(provider, mapped)


def _format(fmt: str | dict[str, Any] | None) -> Any:
    if fmt in (None, ""):
        return None
    if fmt == "json" or isinstance(fmt, dict):
        return fmt
    raise ApiError(400, f'invalid format: "{fmt}"; expected "json" or a valid JSON Schema object',
                   param="format")


def _messages(params: list[OllamaMessage]) -> list[ChatMessage]:
    out = []
    for i, param in enumerate(params):
        role = _ROLES.get(param.role.lower())
        if role is None:
            raise ApiError(400, f"messages[{i}]: invalid role {param.role!r}")
        calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                 for c in param.tool_calls or ()]
        try:
            out.append(ChatMessage(role=role, content=param.content,
                                   images=tuple(client_image(img, f"messages[{i}].images")
                                                for img in param.images or ()),
                                   tool_calls=tuple(calls),
                                   tool_call_id=param.tool_call_id, name=param.tool_name))
        except ValueError as err:
            raise ApiError(400, f"messages[{i}]: {err}") from None
    if not out:
        raise ApiError(400, "messages must not be empty")
    return out


def _final(model: str, usage: Usage | None, reason: str | None, start: float,
           key: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "created_at": _now(), key: "", "done": True,
                            "done_reason": reason if reason in ("stop", "length") else "stop",
                            "total_duration": int((time.perf_counter() - start) * 1e9)}
    if key == "message":
        body["message"] = {"role": "assistant", "content": ""}
    if usage is not None:
        body.update(prompt_eval_count=usage.prompt_tokens, eval_count=usage.completion_tokens)
    return body


def _piece(model: str, chunk: StreamChunk, key: str) -> dict[str, Any] | None:
    if not (chunk.content or chunk.reasoning or chunk.tool_calls):
        return None
    if key == "response":
        out: dict[str, Any] = {"model": model, "created_at": _now(), "response": chunk.content,
                               "done": False}
        if chunk.reasoning:
            out["thinking"] = chunk.reasoning
        return out
    message: dict[str, Any] = {"role": "assistant", "content": chunk.content}
    if chunk.reasoning:
        message["thinking"] = chunk.reasoning
    if chunk.tool_calls:
        message["tool_calls"] = [{"id": c.id, "function": {"index": i, "name": c.name,
                                                           "arguments": c.arguments}}
                                 for i, c in enumerate(chunk.tool_calls)]
    return {"model": model, "created_at": _now(), "message": message, "done": False}


async def _answer(request: web.Request, model_id: str, messages: list[ChatMessage], *,
                  options: dict[str, Any] | None, fmt: Any, tools: list[dict[str, Any]] | None,
                  stream: bool, key: str) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    await gateway.check_rate(request.get(KEY))
    provider, model = await gateway.resolve(request, model_id)
    chat = provider.build_request(messages, model=model,
                                  options=_options(provider, gateway, options), tools=tools,
                                  response_format=_format(fmt))
    start = time.perf_counter()
    with gateway.slot():
        if not stream:  # the whole answer: the provider's own non-streaming request
            reply = await provider.complete_request(chat)
            body = _final(model_id, reply.usage, reply.finish_reason, start, key)
            if key == "message":
                body["message"]["content"] = reply.content
                if reply.tool_calls:
                    body["message"]["tool_calls"] = [
                        {"id": c.id, "function": {"index": i, "name": c.name,
                                                  "arguments": c.arguments}}
                        for i, c in enumerate(reply.tool_calls)]
            else:
                body["response"] = reply.content
            return web.Response(body=dumps(body), content_type="application/json")
        source = provider.stream_request(chat)
        async with contextlib.aclosing(source):
            first, rest = await first_chunk(source)
            resp = web.StreamResponse(headers={"Content-Type": NDJSON})
            await resp.prepare(request)
            last = first
            try:
                if first is not None:
                    piece = _piece(model_id, first, key)
                    if piece:
                        await resp.write(dumps(piece) + b"\n")
                    async for chunk in rest:
                        last = chunk
                        piece = _piece(model_id, chunk, key)
                        if piece:
                            await resp.write(dumps(piece) + b"\n")
                await resp.write(dumps(_final(model_id, last.usage if last else None,
                                              last.finish_reason if last else None, start,
                                              key)) + b"\n")
            except ConnectionResetError:
                raise
            except Exception as err:
                await resp.write(dumps({"error": from_exception(err).message}) + b"\n")
            await resp.write_eof()
            return resp


async def chat(request: web.Request) -> web.StreamResponse:
    """``POST /ollama/api/chat``."""
    body = await read_body(request, OllamaChat)
    return await _answer(request, body.model, _messages(body.messages), options=body.options,
                         fmt=body.format, tools=body.tools, stream=body.stream, key="message")


async def generate(request: web.Request) -> web.StreamResponse:
    """``POST /ollama/api/generate``."""
    body = await read_body(request, OllamaGenerate)
    messages = [ChatMessage.system(body.system)] if body.system else []
    try:
        messages.append(ChatMessage(role=MessageRole.USER, content=body.prompt,
                                    images=tuple(client_image(img, "images")
                                                 for img in body.images or ())))
    except ValueError:
        raise ApiError(400, "prompt must not be empty", param="prompt") from None
    return await _answer(request, body.model, messages, options=body.options, fmt=body.format,
                         tools=None, stream=body.stream, key="response")


async def embed(request: web.Request) -> web.StreamResponse:
    """``POST /ollama/api/embed``."""
    gateway = request.app[GATEWAY]
    body = await read_body(request, OllamaEmbed)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise ApiError(400, "input must not be empty", param="input")
    await gateway.check_rate(request.get(KEY))
    provider, model = await gateway.resolve(request, body.model)
    with gateway.slot():
        vectors = await provider.embed(texts, model=model)
    return web.Response(body=dumps({"model": body.model, "embeddings": vectors}),
                        content_type="application/json")


def _tag(info: ModelInfo) -> dict[str, Any]:
    return {"name": info.id, "model": info.id,
            "modified_at": (info.modified or datetime.fromtimestamp(0, UTC)).isoformat(),
            "size": info.size_bytes or 0, "digest": info.digest or "",
            "details": {"format": "gguf", "family": info.family or "",
                        "families": [info.family] if info.family else None,
                        "parameter_size": info.parameter_size or "",
                        "quantization_level": info.quantization or ""},
            "capabilities": info.capabilities}


async def tags(request: web.Request) -> web.StreamResponse:
    """``GET /ollama/api/tags``: every model id the caller may use."""
    gateway = request.app[GATEWAY]
    key = request.get(KEY)
    infos = [m.model_copy(update={"id": m.name}) if m.provider == "named" else m
             for m in await gateway.registry.list_models()]  # named models by their name
    models = [_tag(m) for m in infos if key is None or key.allows(m.id)]
    return web.Response(body=dumps({"models": models}), content_type="application/json")


async def show(request: web.Request) -> web.StreamResponse:
    """``POST /ollama/api/show``."""
    gateway = request.app[GATEWAY]
    body = await read_body(request, OllamaShow)
    provider, model = await gateway.resolve(request, body.model)
    if body.model in gateway.resolver.named_models:
        info = ModelInfo(id=body.model, name=body.model, provider="named",
                         details={"target": gateway.resolver.named_models[body.model]})
    else:
        info = await gateway.registry.get_model(provider.name, model)
    tag = _tag(info)
    model_info: dict[str, Any] = {"general.architecture": info.family or ""}
    if info.family and info.context_length:
        model_info[f"{info.family}.context_length"] = info.context_length
    if info.parameter_count:
        model_info["general.parameter_count"] = info.parameter_count
    return web.Response(body=dumps({"details": tag["details"], "model_info": model_info,
                                    "capabilities": info.capabilities,
                                    "modified_at": tag["modified_at"]}),
                        content_type="application/json")


async def version(request: web.Request) -> web.StreamResponse:
    """``GET /ollama/api/version``."""
    return web.Response(body=dumps({"version": f"0.0.0-modelplex-{__version__}"}),
                        content_type="application/json")


def add_routes(app: web.Application) -> None:
    """Register the Ollama-compatible routes under ``/ollama`` (and their error shape)."""
    r = app.router
    app.on_response_prepare.append(ollama_errors)
    r.add_get(PREFIX + "/api/version", _ollama_errors(version))
    r.add_get(PREFIX + "/api/tags", _ollama_errors(tags))
    r.add_post(PREFIX + "/api/show", _ollama_errors(show))
    r.add_post(PREFIX + "/api/chat", _ollama_errors(chat))
    r.add_post(PREFIX + "/api/generate", _ollama_errors(generate))
    r.add_post(PREFIX + "/api/embed", _ollama_errors(embed))
