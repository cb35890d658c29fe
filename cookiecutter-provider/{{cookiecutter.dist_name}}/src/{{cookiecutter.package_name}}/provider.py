{%- set wire = cookiecutter.wire_format -%}
{%- set cls = cookiecutter.class_prefix -%}
{%- set embeddings = cookiecutter.embeddings == "yes" -%}
{%- if wire == "in-process" -%}
"""{{ cls }}Provider: {{ cookiecutter.display_name }}, running in this process.

Replace :meth:`{{ cls }}Provider._generate` with the call into your library or model; the
rest (options, usage, finish reasons, cancellation) already follows the modelplex rules.
"""

from __future__ import annotations

import asyncio
{%- if embeddings %}
import hashlib
{%- endif %}
{%- if embeddings %}
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar
{%- else %}
from collections.abc import AsyncIterator
from typing import ClassVar
{%- endif %}

from pydantic import Field

from modelplex.chunks import StreamChunk, Usage
from modelplex.errors import ModelNotFoundError
from modelplex.provider import Capabilities, ChatRequest, CommonOptions, Provider
from modelplex.types import ModelInfo

__all__ = ["{{ cls }}Options", "{{ cls }}Provider"]

MODELS = ("{{ cookiecutter.default_model }}",)


class {{ cls }}Options(CommonOptions):
    """The common options plus {{ cookiecutter.display_name }}'s own (only those set are used)."""

    top_k: int | None = Field(default=None, ge=1, le=500,
                              description="Sample from the k most likely tokens, 1 to 500.")


class {{ cls }}Provider(Provider):
    """{{ cookiecutter.display_name }} in-process.

    Args:
        delay: seconds between chunks (an example of keyword configuration: users set it
            with ``create_provider("{{ cookiecutter.provider_name }}", delay=...)`` or in the
            ``[providers.{{ cookiecutter.provider_name }}]`` table of the config file).
    """

    name = "{{ cookiecutter.provider_name }}"
    Options: ClassVar[type[CommonOptions]] = {{ cls }}Options
    capabilities: ClassVar[Capabilities] = Capabilities(streaming=True{% if embeddings %}, embeddings=True{% endif %})
    default_model = "{{ cookiecutter.default_model }}"

    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay

    def _generate(self, request: ChatRequest) -> list[str]:
        """The answer's pieces. Placeholder: echoes the last message, one word per piece."""
        words = request.messages[-1].content.split()
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        if request.model not in MODELS:
            raise ModelNotFoundError(
                f"{self.name}: no model named {request.model!r}; available: "
                f"{', '.join(MODELS)}", status_code=404, provider=self.name)
        options = request.options.set_values()
        pieces = self._generate(request)
        limit = options.get("max_tokens") or len(pieces)
        for piece in pieces[:limit]:
            await asyncio.sleep(self.delay)  # a real model yields to the event loop here
            yield StreamChunk(content=piece, model=request.model)
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        yield StreamChunk(finish_reason="length" if limit < len(pieces) else "stop",
                          usage=Usage(prompt_tokens=prompt_tokens,
                                      completion_tokens=min(limit, len(pieces))),
                          model=request.model)

    async def list_models(self) -> list[ModelInfo]:
        """The models this provider serves."""
        return [ModelInfo(id=f"{self.name}:{m}", name=m, provider=self.name,
                          capabilities=["chat"]) for m in MODELS]
{%- if embeddings %}

    async def embed(self, texts: Sequence[str], *, model: str,
                    options: Mapping[str, Any] | None = None) -> list[list[float]]:
        """One vector per text. Placeholder: a hash of the text, 16 dimensions."""
        if model not in MODELS:
            raise ModelNotFoundError(f"{self.name}: no model named {model!r}",
                                     status_code=404, provider=self.name)
        return [[b / 255 for b in hashlib.sha256(t.encode()).digest()[:16]] for t in texts]
{%- endif %}
{%- else %}
{%- set paths = {
    "openai-sse": {"chat": "/chat/completions", "models": "/models", "embed": "/embeddings",
                   "url": "http://127.0.0.1:8000/v1", "style": "OpenAI-compatible SSE"},
    "ndjson": {"chat": "/api/chat", "models": "/api/tags", "embed": "/api/embed",
               "url": "http://127.0.0.1:11434", "style": "newline-delimited JSON"},
    "sse-events": {"chat": "/v1/messages", "models": "/v1/models", "embed": "/v1/embeddings",
                   "url": "http://127.0.0.1:8000", "style": "named SSE events"},
    "sse-no-end": {"chat": "/models/{model}:streamGenerateContent?alt=sse",
                   "models": "/models", "embed": "", "url": "http://127.0.0.1:8000/v1beta",
                   "style": "SSE without an end marker"},
}[wire] -%}
"""{{ cls }}Provider: {{ cookiecutter.display_name }} over HTTP, streamed as {{ paths.style }}.

Built on modelplex's HTTP kit: :class:`~modelplex.http_provider.HttpProvider` (the
configuration keywords, headers and API key, one :class:`~modelplex.http.HttpClient` per
instance with its connection pool, timeouts and HTTP statuses mapped to modelplex errors, the
key redacted everywhere, ``repr`` and ``aclose``), :mod:`modelplex.streams` (JSON events,
end-of-stream and in-stream error detection) and :mod:`modelplex.finish` (finish reasons).
Nothing per chunk validates or logs.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping{% if embeddings %}, Sequence{% endif %}
from typing import Any, ClassVar
{%- if wire == "sse-no-end" %}
from urllib.parse import quote
{%- endif %}

from pydantic import Field, SecretStr

from modelplex.chunks import StreamChunk, Usage
from modelplex.errors import AuthenticationError, ProviderError{% if embeddings %}, StreamError{% endif %}
from modelplex.finish import normalize_finish_reason
from modelplex.http import Timeouts, extract_error_message
from modelplex.http_provider import HttpProvider
from modelplex.provider import Capabilities, ChatRequest, CommonOptions
{%- if wire == "ndjson" %}
from modelplex.streams import ndjson_json
{%- elif wire == "sse-events" %}
from modelplex.streams import dispatch, sse_json
{%- elif wire == "sse-no-end" %}
from modelplex.streams import sse_json
{%- else %}
from modelplex.streams import sse_json
{%- endif %}
{%- if wire == "openai-sse" %}
from modelplex.tokens import CHARS_PER_TOKEN, estimate_prompt_tokens
{%- endif %}
from modelplex.types import ModelInfo

__all__ = ["{{ cls }}Options", "{{ cls }}Provider"]

DEFAULT_BASE_URL = "{{ paths.url }}"
#: The environment variables read when ``api_key`` / ``base_url`` are not configured, as the
#: first-party providers read theirs (OPENAI_API_KEY, ANTHROPIC_API_KEY, OLLAMA_HOST, ...).
API_KEY_ENV = "{{ cookiecutter.api_key_env }}"
BASE_URL_ENV = "{{ cookiecutter.base_url_env }}"
{%- if wire == "sse-no-end" %}
#: The streaming chat path: the model is in it, the body names none.
CHAT_PATH = "{{ paths.chat }}"
{%- endif %}


class {{ cls }}Options(CommonOptions):
    """The common options plus {{ cookiecutter.display_name }}'s own (only those set are sent)."""

    top_k: int | None = Field(default=None, ge=1, le=500,
                              description="Sample from the k most likely tokens, 1 to 500.")


class {{ cls }}Provider(HttpProvider):
    """{{ cookiecutter.display_name }}'s chat API.

    Configuration is keyword arguments (:class:`~modelplex.http_provider.HttpProvider`
    takes them): ``base_url`` (default ``${{ cookiecutter.base_url_env }}``, else
    ``{{ paths.url }}``), ``api_key`` (default ``${{ cookiecutter.api_key_env }}``; sent as
    {% if wire == "sse-events" %}``x-api-key``{% elif wire == "sse-no-end" %}``x-goog-api-key``{% else %}``Authorization: Bearer``{% endif %}; never shown in errors or reprs), ``headers`` (every value
    masked in errors and reprs, as a credential), ``timeouts`` (passed to
    :class:`~modelplex.http.HttpClient` as given: seconds, a mapping of ``connect``,
    ``first_byte``, ``between_chunks`` and ``total``, or a :class:`~modelplex.http.Timeouts`;
    an unknown key is a :class:`~modelplex.errors.ConfigurationError` naming it),
    ``verify_tls`` and ``default_model``. Users write them in the config
    file's ``[providers.{{ cookiecutter.provider_name }}]`` table, or pass them to
    ``create_provider("{{ cookiecutter.provider_name }}", ...)`` or
    ``ChatManager(..., provider_config=...)``. A provider with more settings defines
    ``__init__(self, *, my_setting=..., **kwargs)`` and passes ``**kwargs`` on to
    ``super().__init__``.
    """

    name = "{{ cookiecutter.provider_name }}"
    Options: ClassVar[type[CommonOptions]] = {{ cls }}Options
    capabilities: ClassVar[Capabilities] = Capabilities(streaming=True{% if embeddings %}, embeddings=True{% endif %})
    default_model = "{{ cookiecutter.default_model }}"
    default_base_url: ClassVar[str] = DEFAULT_BASE_URL
{%- if wire == "sse-events" %}
    api_key_header: ClassVar[str] = "x-api-key"  # the key's header; no "Bearer " before it
    api_key_prefix: ClassVar[str] = ""
{%- elif wire == "sse-no-end" %}
    api_key_header: ClassVar[str] = "x-goog-api-key"  # the key's header; no "Bearer "
    api_key_prefix: ClassVar[str] = ""
{%- endif %}
    #: added to the error when nothing answers at the base URL ({url} is filled in)
    connect_hint: ClassVar[str | None] = (
        "No {{ cookiecutter.display_name }} server answers at {url}: start it, or set "
        "base_url in [providers.{{ cookiecutter.provider_name }}] to where it runs")

    def __init__(self, *, base_url: str | None = None, api_key: str | SecretStr | None = None,
                 headers: Mapping[str, str] | None = None,
                 timeouts: Timeouts | Mapping[str, Any] | float | None = None,
                 verify_tls: bool = True, default_model: str | None = None) -> None:
        env = os.environ  # the conventional variables, when the keywords are not given
        super().__init__(base_url=base_url or env.get(BASE_URL_ENV) or None,
                         api_key=api_key if api_key is not None else env.get(API_KEY_ENV),
                         headers=headers, timeouts=timeouts, verify_tls=verify_tls,
                         default_model=default_model)

    def _status_error(self, status: int, body: Any,
                      headers: Mapping[str, str]) -> ProviderError | None:
        """A refused key says which variable to set; other statuses get the default mapping."""
        if status not in (401, 403):
            return None
        hint = (f"check the key in {API_KEY_ENV}" if self.api_key is not None
                else f"no API key was sent: set {API_KEY_ENV}")
        message = extract_error_message(body) or "not authorized"  # secrets already redacted
        return AuthenticationError(f"{self.name}: {message}; {hint}", status_code=status,
                                   body=body, provider=self.name)
{%- if wire == "openai-sse" %}

    # -- chat -------------------------------------------------------------------------------
    def _body(self, request: ChatRequest) -> dict[str, Any]:
        # the common option names are OpenAI's; top_k is sent as is
        return {"model": request.model, "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": m.role.value, "content": m.content}
                             for m in request.messages],
                **request.options.set_values()}

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        finish: str | None = None
        usage: Any = None
        length = 0
        http = self.http
        async with http.stream("POST", "{{ paths.chat }}", self._body(request)) as resp:
            async for _event, obj in sse_json(resp, provider=self.name,
                                              max_line_bytes=http.max_line_bytes,
                                              secrets=http.secrets):
                for choice in obj.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        length += len(text)
                        yield StreamChunk(content=text)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                if obj.get("usage"):
                    usage = obj["usage"]
        yield StreamChunk(finish_reason=normalize_finish_reason(finish),
                          usage=self._usage(usage, request, length), model=request.model)

    def _usage(self, usage: Any, request: ChatRequest, length: int) -> Usage:
        if usage:
            return Usage(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                         completion_tokens=int(usage.get("completion_tokens") or 0))
        # the server reported no usage: modelplex's one estimate (about 4 characters a token)
        return Usage(prompt_tokens=estimate_prompt_tokens(request.messages),
                     completion_tokens=-(-length // CHARS_PER_TOKEN), estimated=True)

    # -- models -----------------------------------------------------------------------------
    async def list_models(self) -> list[ModelInfo]:
        """The models of ``GET {{ paths.models }}``."""
        data = await self.http.request_json("GET", "{{ paths.models }}")
        return [ModelInfo(id=f"{self.name}:{m['id']}", name=m["id"], provider=self.name)
                for m in (data or {}).get("data") or []]
{%- elif wire == "ndjson" %}

    # -- chat -------------------------------------------------------------------------------
    def _body(self, request: ChatRequest) -> dict[str, Any]:
        options = request.options.set_values()
        if "max_tokens" in options:  # this API's name for it
            options["num_predict"] = options.pop("max_tokens")
        return {"model": request.model, "stream": True, "options": options,
                "messages": [{"role": m.role.value, "content": m.content}
                             for m in request.messages]}

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        http = self.http
        async with http.stream("POST", "{{ paths.chat }}", self._body(request)) as resp:
            async for obj in ndjson_json(resp, provider=self.name,
                                         max_line_bytes=http.max_line_bytes,
                                         secrets=http.secrets):
                text = (obj.get("message") or {}).get("content")
                if text:
                    yield StreamChunk(content=text)
                if obj.get("done"):  # the last object: ndjson_json stops after it
                    yield StreamChunk(
                        finish_reason=normalize_finish_reason(obj.get("done_reason")),
                        usage=Usage(prompt_tokens=int(obj.get("prompt_eval_count") or 0),
                                    completion_tokens=int(obj.get("eval_count") or 0)),
                        model=obj.get("model") or request.model)

    # -- models -----------------------------------------------------------------------------
    async def list_models(self) -> list[ModelInfo]:
        """The models of ``GET {{ paths.models }}``."""
        data = await self.http.request_json("GET", "{{ paths.models }}")
        return [ModelInfo(id=f"{self.name}:{m['name']}", name=m["name"], provider=self.name,
                          size_bytes=m.get("size"))
                for m in (data or {}).get("models") or []]
{%- elif wire == "sse-no-end" %}

    # -- chat -------------------------------------------------------------------------------
    def _body(self, request: ChatRequest) -> dict[str, Any]:
        # the common options under this API's names, in its generationConfig
        config = {_CONFIG_NAMES.get(k, k): v for k, v in request.options.set_values().items()}
        system = [m.content for m in request.messages if m.role.value == "system"]
        body: dict[str, Any] = {"generationConfig": config, "contents": [
            {"role": "model" if m.role.value == "assistant" else "user",
             "parts": [{"text": m.content}]}
            for m in request.messages if m.role.value != "system"]}
        if system:
            body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
        return body

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        finish: str | None = None
        usage: dict[str, Any] = {}
        http = self.http
        path = CHAT_PATH.format(model=quote(request.model, safe=""))
        async with http.stream("POST", path, self._body(request)) as resp:
            # no end marker: the event with a finish reason is the last (is_end); a body that
            # ends before it, or an {"error": ...} event, raises StreamError
            async for _event, obj in sse_json(resp, provider=self.name,
                                              max_line_bytes=http.max_line_bytes,
                                              done=None, is_end=_finished,
                                              secrets=http.secrets):
                for candidate in obj.get("candidates") or ():
                    for part in (candidate.get("content") or {}).get("parts") or ():
                        if part.get("text"):
                            yield StreamChunk(content=part["text"])
                    finish = candidate.get("finishReason") or finish
                usage = obj.get("usageMetadata") or usage
        yield StreamChunk(finish_reason=normalize_finish_reason(finish),
                          usage=Usage(prompt_tokens=int(usage.get("promptTokenCount") or 0),
                                      completion_tokens=int(
                                          usage.get("candidatesTokenCount") or 0)),
                          model=request.model)

    # -- models -----------------------------------------------------------------------------
    async def list_models(self) -> list[ModelInfo]:
        """The models of ``GET {{ paths.models }}`` (named ``models/NAME`` there)."""
        data = await self.http.request_json("GET", "{{ paths.models }}")
        names = [m["name"].removeprefix("models/") for m in (data or {}).get("models") or []]
        return [ModelInfo(id=f"{self.name}:{n}", name=n, provider=self.name) for n in names]
{%- else %}

    # -- chat -------------------------------------------------------------------------------
    def _body(self, request: ChatRequest) -> dict[str, Any]:
        options = request.options.set_values()
        options.pop("seed", None)  # this API has no seed
        if "stop" in options:  # this API's name for it
            options["stop_sequences"] = options.pop("stop")
        options.setdefault("max_tokens", 1024)  # required by this API
        system = [m.content for m in request.messages if m.role.value == "system"]
        body: dict[str, Any] = {
            "model": request.model, "stream": True, **options,
            "messages": [{"role": m.role.value, "content": m.content}
                         for m in request.messages if m.role.value != "system"]}
        if system:
            body["system"] = "\n\n".join(system)
        return body

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        answer = _Answer(request.model)
        http = self.http
        async with http.stream("POST", "{{ paths.chat }}", self._body(request)) as resp:
            events = sse_json(resp, provider=self.name, max_line_bytes=http.max_line_bytes,
                              done=None, end_events=("message_stop",), secrets=http.secrets)
            async for chunk in dispatch(events, answer.handlers):
                yield chunk

    # -- models -----------------------------------------------------------------------------
    async def list_models(self) -> list[ModelInfo]:
        """The models of ``GET {{ paths.models }}``."""
        data = await self.http.request_json("GET", "{{ paths.models }}")
        return [ModelInfo(id=f"{self.name}:{m['id']}", name=m["id"], provider=self.name)
                for m in (data or {}).get("data") or []]
{%- endif %}
{%- if embeddings %}

    # -- embeddings -------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str], *, model: str,
                    options: Mapping[str, Any] | None = None) -> list[list[float]]:
        """One vector per text, in one request."""
        texts = list(texts)
        data = await self.http.request_json("POST", "{{ paths.embed }}",
                                            {"model": model or self.default_model,
                                             "input": texts})
{%- if wire == "ndjson" %}
        vectors = (data or {}).get("embeddings") or []
{%- else %}
        items = sorted((data or {}).get("data") or [], key=lambda item: item.get("index", 0))
        vectors = [item["embedding"] for item in items]
{%- endif %}
        if len(vectors) != len(texts):
            raise StreamError(f"{self.name}: asked for {len(texts)} embeddings, got "
                              f"{len(vectors)}", provider=self.name)
        return [[float(x) for x in vector] for vector in vectors]
{%- endif %}
{%- if wire == "sse-no-end" %}


#: The common options' names in this API's generationConfig.
_CONFIG_NAMES = {"max_tokens": "maxOutputTokens", "top_p": "topP", "top_k": "topK",
                 "stop": "stopSequences"}


def _finished(obj: Any) -> bool:
    """Whether an event is the answer's last: the one with a finish reason."""
    return any(c.get("finishReason") for c in obj.get("candidates") or ())
{%- endif %}
{%- if wire == "sse-events" %}


class _Answer:
    """The state of one streamed answer and a handler per event name."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.prompt_tokens = 0
        self.handlers = {"message_start": self.start, "content_block_delta": self.delta,
                         "message_delta": self.finish}

    def start(self, obj: Any) -> None:
        self.prompt_tokens = int(obj["message"]["usage"].get("input_tokens") or 0)

    def delta(self, obj: Any) -> StreamChunk | None:
        text = obj["delta"].get("text")
        return StreamChunk(content=text) if text else None

    def finish(self, obj: Any) -> StreamChunk:
        return StreamChunk(finish_reason=normalize_finish_reason(obj["delta"].get("stop_reason")),
                           usage=Usage(prompt_tokens=self.prompt_tokens,
                                       completion_tokens=int(obj["usage"]["output_tokens"])),
                           model=self.model)
{%- endif %}
{%- endif %}
