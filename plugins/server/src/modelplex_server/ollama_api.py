"""An Ollama-compatible API under ``/ollama`` (so it does not clash with seed 003's
``/api/chat``): point Ollama clients at ``http://HOST:PORT/ollama``.

Routes (protocols.md section 1): ``GET /ollama/api/version``, ``POST /ollama/api/chat``,
``POST /ollama/api/generate``, ``POST /ollama/api/embed``, ``POST /ollama/api/embeddings``
(the legacy one), and the model routes of :mod:`modelplex_server.ollama_models` (tags, show,
ps, pull, and the refused push/create/copy/delete). An empty ``messages`` list (or ``prompt``)
is Ollama's load request: ``done_reason`` ``load`` (``unload`` with ``keep_alive`` 0) once
the model is found. Tool results may name their call by ``tool_name`` alone (as Ollama
clients send them); calls without an ``id`` get one. Streams are NDJSON (``stream``
defaults to true); usage is in the last object (``done: true``); errors are ``{"error":
"message"}`` with the HTTP status, or a last ``{"error": ...}`` line when the stream had
started; so are the refusals of the middlewares before a handler runs (keys, the browser
guard, an unknown route, a body over the limit: :func:`ollama_errors` rewrites them as they
are prepared). Model names are the server's model ids (``llamacpp:smollm2``, named models);
an unknown one is Ollama's 404 ``model "NAME" not found``. Generate answers its ``context``
and takes it back (:mod:`modelplex_server.ollama_context`); what cannot be honoured is a 400
naming the field, never ignored: ``raw: true``, a ``template``, ``logprobs: true``, and
``truncate``/``shift`` false for a provider without them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from pydantic import Field

from modelplex.chunks import StreamChunk, Usage
from modelplex.errors import ModelplexError
from modelplex.http import dumps
from modelplex.provider import Provider
from modelplex.types import ChatMessage, MessageRole
from modelplex_server.__about__ import __version__
from modelplex_server.errors import ApiError, from_exception
from modelplex_server.gateway import GATEWAY, KEY, Gateway, first_chunk
from modelplex_server.images import ANTHROPIC_IMAGES, check_image_count, client_image
from modelplex_server.ollama_context import context_of, history_of
from modelplex_server.ollama_models import add_model_routes, resolve
from modelplex_server.schemas import (
    MAX_EMBED_INPUTS,
    MAX_TOOLS,
    _Body,
    at_most,
    check_option_stop,
    read_body,
)

__all__ = ["PREFIX", "add_routes", "ollama_errors"]

PREFIX = "/ollama"
log = logging.getLogger("modelplex.server")
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


class _Asking(_Body):
    """What ``/api/chat`` and ``/api/generate`` both take."""

    model: str
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    stream: bool = True
    keep_alive: int | float | str | None = None
    think: bool | str | None = None
    truncate: bool | None = None  # passed to providers that have it (Ollama's)
    shift: bool | None = None  # likewise
    logprobs: bool | None = None  # true: refused (providers give no log probabilities)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)  # used only with logprobs


class OllamaChat(_Asking):
    """``POST /api/chat``."""

    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: Annotated[list[dict[str, Any]], at_most(MAX_TOOLS, "tools")] | None = None


class OllamaGenerate(_Asking):
    """``POST /api/generate``: ``context`` (:mod:`modelplex_server.ollama_context`) is
    answered and taken back; ``raw: true`` and a ``template`` are refused (the provider's own
    chat template applies: a prompt cannot be sent as it is)."""

    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    images: list[str] | None = None
    template: str | None = None
    raw: bool | None = None
    context: list[int] | None = None


class OllamaEmbed(_Body):
    """``POST /api/embed`` (``options`` are passed to providers that have them; ``truncate:
    false`` is refused)."""

    model: str
    input: Annotated[str | list[str], at_most(MAX_EMBED_INPUTS, "inputs")]
    dimensions: int | None = None
    truncate: bool | None = None
    options: dict[str, Any] | None = None
    keep_alive: int | float | str | None = None


class OllamaEmbeddings(_Body):
    """``POST /api/embeddings`` (legacy: one ``prompt``, one ``embedding``)."""

    model: str
    prompt: str = ""


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
        except RequestPayloadError:  # a body that cannot be read: the errors middleware closes
            raise
        except Exception as err:
            if not isinstance(err, ModelplexError):  # a defect: keep its traceback in the log
                log.exception("unexpected error on %s %s", request.method, request.path)
            return _error(err)

    wrapped.__doc__ = handler.__doc__
    return wrapped


def _options(provider: Provider, gateway: Gateway, options: dict[str, Any] | None,
             think: bool | str | None = None, **top: Any) -> dict[str, Any]:
    """The provider options of ``options`` and the top-level fields ``top`` (``truncate``,
    ``shift``: Ollama's provider has them), those the provider does not have left out; a
    400 naming a top-level field set false for a provider without it (it cannot promise to
    fail rather than truncate or shift: llama.cpp truncates what it embeds). ``think`` goes
    to providers that have it (an Ollama model thinks or not, at a level); for others it only
    says whether the reasoning is shown."""
    check_option_stop(options)
    mapped = {_OPTION_NAMES.get(k, k): v for k, v in (options or {}).items()}
    known = gateway.known_options(provider, {**mapped, **top, "think": think})
    for name, value in top.items():
        if value is False and name not in known:
            raise ApiError(400, f"{name}: false cannot be honoured by provider "
                                f"{provider.name!r}, which has no such setting: leave out "
                                f"{name} (its default, true, is what the provider does or "
                                "it fails)", param=name)
    return known


def _check_asking(body: _Asking) -> None:
    """A 400 naming what a body asks that cannot be answered here: ``logprobs`` (providers
    give none), and for generate ``raw`` and ``template`` (the provider's own chat template
    applies)."""
    if body.logprobs:
        raise ApiError(400, "logprobs: modelplex's providers give no log probabilities: leave "
                            "out logprobs (or set it false)", param="logprobs")
    if isinstance(body, OllamaGenerate) and body.raw:
        raise ApiError(400, "raw: modelplex answers generate through the model's own chat "
                            "template and cannot send a prompt as it is: leave out raw and "
                            "send the prompt without template tokens", param="raw")
    if isinstance(body, OllamaGenerate) and body.template:
        raise ApiError(400, "template: modelplex answers generate through the model's own "
                            "chat template and takes no other: leave out template",
                       param="template")


def _format(fmt: str | dict[str, Any] | None) -> Any:
    if fmt in (None, ""):
        return None
    if fmt == "json" or isinstance(fmt, dict):
        return fmt
    raise ApiError(400, f'invalid format: "{fmt}"; expected "json" or a valid JSON Schema object',
                   param="format")


def _messages(params: list[OllamaMessage]) -> list[ChatMessage]:
    """The history as modelplex messages. Ollama clients send tool calls without ``id`` and
    tool results with only ``tool_name``: a call gets ``call_I_J`` (message I, call J), and a
    result without ``tool_call_id`` answers the first unanswered call of its ``tool_name``
    (or the first unanswered call, with no name)."""
    out = []
    unanswered: list[tuple[str, str]] = []  # (id, name) of the calls not answered yet
    for i, param in enumerate(params):
        role = _ROLES.get(param.role.lower())
        if role is None:
            raise ApiError(400, f"messages[{i}]: invalid role {param.role!r}")
        ids = [c.id or f"call_{i}_{j}" for j, c in enumerate(param.tool_calls or ())]
        calls = [{"id": ident, "name": c.function.name, "arguments": c.function.arguments}
                 for ident, c in zip(ids, param.tool_calls or (), strict=True)]
        unanswered += [(ident, c.function.name)
                       for ident, c in zip(ids, param.tool_calls or (), strict=True)]
        call_id, name = param.tool_call_id, param.tool_name
        if role is MessageRole.TOOL:
            if call_id is None:
                match = next((u for u in unanswered if name in (None, u[1])), None)
                if match is not None:
                    call_id, name = match[0], name or match[1]
            unanswered = [u for u in unanswered if u[0] != call_id]
        try:
            out.append(ChatMessage(role=role, content=param.content,
                                   images=tuple(client_image(img, f"messages[{i}].images")
                                                for img in param.images or ()),
                                   tool_calls=tuple(calls),
                                   tool_call_id=call_id, name=name))
        except ValueError as err:
            raise ApiError(400, f"messages[{i}]: {err}") from None
    return out


def _unloads(keep_alive: int | float | str | None) -> bool:
    """``keep_alive`` 0 (``0``, ``"0"``, ``"0s"``, ``"0m"``...): Ollama's unload request."""
    if isinstance(keep_alive, str):
        return keep_alive.strip().rstrip("smh") in ("0", "0.0")
    return keep_alive is not None and keep_alive == 0


async def _load(request: web.Request, model_id: str, keep_alive: int | float | str | None,
                stream: bool, key: str) -> web.StreamResponse:
    """Ollama's answer to an empty ``messages``/``prompt``: the model is found (else 404);
    ``done_reason`` ``load``, or ``unload`` for ``keep_alive`` 0."""
    await resolve(request, model_id)
    body: dict[str, Any] = {"model": model_id, "created_at": _now(), key: "", "done": True,
                            "done_reason": "unload" if _unloads(keep_alive) else "load"}
    if key == "message":
        body["message"] = {"role": "assistant", "content": ""}
    if stream:
        return web.Response(body=dumps(body) + b"\n", content_type=NDJSON)
    return web.Response(body=dumps(body), content_type="application/json")


def _final(model: str, usage: Usage | None, reason: str | None, start: float,
           key: str, first: float | None = None) -> dict[str, Any]:
    """The last object (``done: true``). Durations are nanoseconds: ``prompt_eval_duration``
    is the time to the first piece and ``eval_duration`` the time from it to the end (a whole
    answer has no first piece: its ``eval_duration`` is its whole time); nothing is loaded
    per request (``load_duration`` 0)."""
    end = time.perf_counter()
    body: dict[str, Any] = {"model": model, "created_at": _now(), key: "", "done": True,
                            "done_reason": reason if reason in ("stop", "length") else "stop",
                            "total_duration": int((end - start) * 1e9), "load_duration": 0,
                            "prompt_eval_duration": int(((first or start) - start) * 1e9),
                            "eval_duration": int((end - (first or start)) * 1e9)}
    if key == "message":
        body["message"] = {"role": "assistant", "content": ""}
    if usage is not None:
        body.update(prompt_eval_count=usage.prompt_tokens, eval_count=usage.completion_tokens)
    return body


def _piece(model: str, chunk: StreamChunk, key: str, think: bool) -> dict[str, Any] | None:
    if not (chunk.content or (think and chunk.reasoning) or chunk.tool_calls):
        return None
    if key == "response":
        out: dict[str, Any] = {"model": model, "created_at": _now(), "response": chunk.content,
                               "done": False}
        if think and chunk.reasoning:
            out["thinking"] = chunk.reasoning
        return out
    message: dict[str, Any] = {"role": "assistant", "content": chunk.content}
    if think and chunk.reasoning:
        message["thinking"] = chunk.reasoning
    if chunk.tool_calls:
        message["tool_calls"] = [{"id": c.id, "function": {"index": i, "name": c.name,
                                                           "arguments": c.arguments}}
                                 for i, c in enumerate(chunk.tool_calls)]
    return {"model": model, "created_at": _now(), "message": message, "done": False}


async def _answer(request: web.Request, asked: _Asking, messages: list[ChatMessage], *,
                  tools: list[dict[str, Any]] | None, key: str) -> web.StreamResponse:
    """Answer ``messages`` as ``asked`` says; a generate's (``key`` "response") last object
    holds its ``context``."""
    gateway = request.app[GATEWAY]
    await gateway.check_rate(request.get(KEY))
    model_id, stream = asked.model, asked.stream
    provider, model = await resolve(request, model_id)
    shows_thinking = asked.think is not False  # think: false hides what the model reasons
    options = _options(provider, gateway, asked.options, asked.think,
                       truncate=asked.truncate, shift=asked.shift)
    check_image_count(messages, ANTHROPIC_IMAGES, "messages" if key == "message" else "images")
    chat = provider.build_request(messages, model=model, options=options, tools=tools,
                                  response_format=_format(asked.format))
    remember = key == "response"
    start = time.perf_counter()
    with gateway.slot():
        if not stream:  # the whole answer: the provider's own non-streaming request
            reply = await provider.complete_request(chat)
            body = _final(model_id, reply.usage, reply.finish_reason, start, key)
            if remember:
                body["context"] = context_of(messages, reply.content)
            reasoning = reply.reasoning if shows_thinking else None
            if key == "message":
                body["message"]["content"] = reply.content
                if reasoning:
                    body["message"]["thinking"] = reasoning
                if reply.tool_calls:
                    body["message"]["tool_calls"] = [
                        {"id": c.id, "function": {"index": i, "name": c.name,
                                                  "arguments": c.arguments}}
                        for i, c in enumerate(reply.tool_calls)]
            else:
                body["response"] = reply.content
                if reasoning:
                    body["thinking"] = reasoning
            return web.Response(body=dumps(body), content_type="application/json")
        source = provider.stream_request(chat)
        async with contextlib.aclosing(source):
            first, rest = await first_chunk(source)
            resp = web.StreamResponse(headers={"Content-Type": NDJSON})
            await resp.prepare(request)
            last = first
            first_at = time.perf_counter() if first is not None else None
            texts: list[str] = []
            try:
                if first is not None:
                    texts.append(first.content)
                    piece = _piece(model_id, first, key, shows_thinking)
                    if piece:
                        await resp.write(dumps(piece) + b"\n")
                    async for chunk in rest:
                        last = chunk
                        texts.append(chunk.content)
                        piece = _piece(model_id, chunk, key, shows_thinking)
                        if piece:
                            await resp.write(dumps(piece) + b"\n")
                end = _final(model_id, last.usage if last else None,
                             last.finish_reason if last else None, start, key, first_at)
                if remember:
                    end["context"] = context_of(messages, "".join(texts))
                await resp.write(dumps(end) + b"\n")
            except ConnectionResetError:
                raise
            except Exception as err:
                if not isinstance(err, ModelplexError):  # a defect: keep its traceback
                    log.exception("unexpected error on %s %s", request.method, request.path)
                await resp.write(dumps({"error": from_exception(err).message}) + b"\n")
            await resp.write_eof()
            return resp


async def chat(request: web.Request) -> web.StreamResponse:
    """``POST /ollama/api/chat``."""
    body = await read_body(request, OllamaChat)
    messages = _messages(body.messages)
    if not messages:
        return await _load(request, body.model, body.keep_alive, body.stream, "message")
    _check_asking(body)
    return await _answer(request, body, messages, tools=body.tools, key="message")


async def generate(request: web.Request) -> web.StreamResponse:
    """``POST /ollama/api/generate``."""
    body = await read_body(request, OllamaGenerate)
    if not body.prompt and not body.images:
        return await _load(request, body.model, body.keep_alive, body.stream, "response")
    _check_asking(body)
    if body.suffix:  # Ollama's answer for a model without fill-in-the-middle
        await resolve(request, body.model)
        raise ApiError(400, f'"{body.model}" does not support insert: modelplex answers '
                            "generate through chat; leave out suffix and put the text around "
                            "the gap in the prompt", param="suffix")
    history = history_of(body.context or ())
    if body.system:  # the request's system prompt wins over the context's
        history = [ChatMessage.system(body.system),
                   *(m for m in history if m.role is not MessageRole.SYSTEM)]
    messages = history
    try:
        messages.append(ChatMessage(role=MessageRole.USER, content=body.prompt,
                                    images=tuple(client_image(img, "images")
                                                 for img in body.images or ())))
    except ValueError:
        raise ApiError(400, "prompt must not be empty", param="prompt") from None
    return await _answer(request, body, messages, tools=None, key="response")


def _shortened(vector: list[float], dimensions: int | None) -> list[float]:
    """Ollama's ``dimensions``: the first ``dimensions`` values, scaled to length 1 again."""
    if dimensions is None or dimensions >= len(vector):
        return vector
    head = vector[:dimensions]
    norm = math.sqrt(sum(v * v for v in head))
    return [v / norm for v in head] if norm else head


async def _vectors(request: web.Request, model_id: str, texts: list[str],
                   options: dict[str, Any] | None = None) -> list[list[float]]:
    gateway = request.app[GATEWAY]
    await gateway.check_rate(request.get(KEY))
    provider, model = await resolve(request, model_id)
    known = _options(provider, gateway, options)
    with gateway.slot():
        return await provider.embed(texts, model=model, options=known or None)


async def embed(request: web.Request) -> web.StreamResponse:
    """``POST /ollama/api/embed``."""
    body = await read_body(request, OllamaEmbed)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise ApiError(400, "input must not be empty", param="input")
    if body.dimensions is not None and body.dimensions < 1:
        raise ApiError(400, f"dimensions must be a positive number, not {body.dimensions}",
                       param="dimensions")
    start = time.perf_counter()
    if body.truncate is False:  # providers embed through options, which carry no truncate
        raise ApiError(400, "truncate: false cannot be honoured: modelplex's providers "
                            "truncate an input longer than the model's context, or fail, as "
                            "each does; leave out truncate", param="truncate")
    vectors = await _vectors(request, body.model, texts, body.options)
    return web.Response(body=dumps({
        "model": body.model, "embeddings": [_shortened(v, body.dimensions) for v in vectors],
        "total_duration": int((time.perf_counter() - start) * 1e9), "load_duration": 0}),
        content_type="application/json")


async def embeddings(request: web.Request) -> web.StreamResponse:
    """``POST /ollama/api/embeddings`` (legacy): ``{"embedding": [...]}`` for ``prompt``
    (an empty prompt: an empty vector, as Ollama answers)."""
    body = await read_body(request, OllamaEmbeddings)
    vector = (await _vectors(request, body.model, [body.prompt]))[0] if body.prompt else []
    if not body.prompt:
        await resolve(request, body.model)
    return web.Response(body=dumps({"embedding": vector}), content_type="application/json")


async def version(request: web.Request) -> web.StreamResponse:
    """``GET /ollama/api/version``."""
    return web.Response(body=dumps({"version": f"0.0.0-modelplex-{__version__}"}),
                        content_type="application/json")


def add_routes(app: web.Application) -> None:
    """Register the Ollama-compatible routes under ``/ollama`` (and their error shape)."""
    r = app.router
    app.on_response_prepare.append(ollama_errors)
    r.add_get(PREFIX + "/api/version", _ollama_errors(version))
    r.add_post(PREFIX + "/api/chat", _ollama_errors(chat))
    r.add_post(PREFIX + "/api/generate", _ollama_errors(generate))
    r.add_post(PREFIX + "/api/embed", _ollama_errors(embed))
    r.add_post(PREFIX + "/api/embeddings", _ollama_errors(embeddings))
    add_model_routes(app, _ollama_errors, PREFIX)
