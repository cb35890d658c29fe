"""The provider base class every provider plugin subclasses.

A provider turns a :class:`ChatRequest` into :class:`~modelplex.chunks.StreamChunk` objects.
Subclasses set :attr:`Provider.name`, :attr:`Provider.capabilities` and an ``Options`` model,
implement :meth:`Provider._stream`, and override whichever of ``_complete``, ``embed``,
``list_models``, ``show_model``, ``pull_model``, ``delete_model`` and ``health`` they support,
and ``submit_batch``, ``batch_status``, ``batch_results`` and ``cancel_batch`` when the
provider has a Batch API (:mod:`modelplex.batch.jobs`); the rest raise
:class:`~modelplex.errors.UnsupportedOperationError`.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import inspect
import typing
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar, Self

import annotated_types
import attrs
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from modelplex._foreign import foreign_error
from modelplex.chunks import ChatResponse, StreamChunk
from modelplex.errors import (
    ModelNotFoundError,
    ModelplexError,
    OptionsError,
    ProviderError,
    UnsupportedOperationError,
    did_you_mean,
)
from modelplex.types import ChatMessage, HealthStatus, ModelInfo, PullProgress

if typing.TYPE_CHECKING:
    from modelplex.batch.jobs import BatchItem, BatchJob, BatchRequest

__all__ = [
    "Capabilities",
    "ChatRequest",
    "CommonOptions",
    "Provider",
    "keep_partial",
    "normalize_response_format",
    "options_error",
    "range_text",
]


@attrs.frozen
class Capabilities:
    """What a provider can do; callers check these before asking.

    ``json_mode``: it can constrain answers to JSON (``response_format="json"``).
    ``json_schema``: it can constrain answers to a given JSON schema (Ollama ``format``,
    OpenAI ``response_format`` json_schema, a llama.cpp grammar); structured output then uses
    native mode by default. ``tools``: it sends tool definitions and returns tool calls.
    ``streaming``: its models stream; ``False`` for a provider whose models only answer whole:
    it implements ``_complete`` alone and the core streams the whole answer for it
    (:meth:`Provider.supports_streaming`, :meth:`~modelplex.chunks.ChatResponse.as_chunks`).
    """

    streaming: bool = True
    embeddings: bool = False
    tools: bool = False
    vision: bool = False
    json_mode: bool = False
    model_management: bool = False
    json_schema: bool = False


class CommonOptions(BaseModel):
    """Generation options every provider understands; providers subclass it to add their own.

    Unknown options are rejected (``extra="forbid"``). Only options the user set are sent.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    temperature: float | None = Field(default=None, ge=0.0, le=2.0,
                                      description="Sampling temperature, 0 to 2.")
    top_p: float | None = Field(default=None, ge=0.0, le=1.0,
                                description="Nucleus sampling mass, 0 to 1.")
    max_tokens: int | None = Field(default=None, gt=0,
                                   description="Most tokens to generate, > 0.")
    stop: list[str] | None = Field(default=None, description="Stop sequences.")
    seed: int | None = Field(default=None, description="Random seed for reproducible output.")

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads true as 1 and false as 0: `-o max_tokens true` must fail
        if isinstance(value, bool) and info.field_name in _numeric_fields(cls):
            raise ValueError("expected a number, not true/false")
        return value

    def set_values(self) -> dict[str, Any]:
        """The options the user set, as a dict."""
        if not self.__pydantic_fields_set__:  # none (most requests): no serializer call
            return {}
        return self.model_dump(exclude_unset=True, exclude_none=True)


_NUMERIC_FIELDS: dict[type[BaseModel], frozenset[str]] = {}


def _numeric_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of ``model`` that take numbers but not booleans (cached per class)."""
    found = _NUMERIC_FIELDS.get(model)
    if found is None:
        names = set()
        for name, field in model.model_fields.items():
            args = set(_flatten(field.annotation))
            if args & {int, float} and bool not in args:
                names.add(name)
        found = _NUMERIC_FIELDS[model] = frozenset(names)
    return found


def _flatten(annotation: Any) -> list[Any]:
    args = typing.get_args(annotation)
    if not args:
        return [annotation]
    return [leaf for arg in args for leaf in _flatten(arg)]


def range_text(field: Any) -> str | None:
    """The allowed range of a pydantic field as text (``between 0 and 2``, ``> 0``), or None."""
    low: Any = None
    high: Any = None
    low_incl = high_incl = True
    for meta in getattr(field, "metadata", []):
        if isinstance(meta, annotated_types.Ge):
            low = meta.ge
        elif isinstance(meta, annotated_types.Gt):
            low, low_incl = meta.gt, False
        elif isinstance(meta, annotated_types.Le):
            high = meta.le
        elif isinstance(meta, annotated_types.Lt):
            high, high_incl = meta.lt, False
    def num(value: Any) -> str:
        return str(int(value)) if float(value).is_integer() else str(value)

    lower = f"{'>=' if low_incl else '>'} {num(low)}" if low is not None else None
    upper = f"{'<=' if high_incl else '<'} {num(high)}" if high is not None else None
    if lower and upper:
        if low_incl and high_incl:
            return f"between {num(low)} and {num(high)}"
        return f"{lower} and {upper}"
    return lower or upper


def options_error(err: ValidationError, model: type[BaseModel], provider: str) -> OptionsError:
    """Turn a pydantic error on an options model into one readable :class:`OptionsError`."""
    messages = []
    for item in err.errors():
        field = ".".join(str(part) for part in item["loc"]) or "options"
        got = item.get("input")
        info = model.model_fields.get(str(item["loc"][0])) if item["loc"] else None
        if item["type"] == "extra_forbidden":
            valid = ", ".join(sorted(model.model_fields))
            messages.append(f"unknown option {field!r} for provider {provider!r}"
                            f"{did_you_mean(field, model.model_fields)}; "
                            f"valid options: {valid}")
            continue
        rng = range_text(info) if info is not None else None
        if rng and item["type"] in {"greater_than", "greater_than_equal", "less_than",
                                    "less_than_equal"}:
            messages.append(f"option {field!r} must be {rng} (got {got!r})")
        else:
            detail = item["msg"].removeprefix("Value error, ")
            messages.append(f"option {field!r}: {detail} (got {got!r})")
    return OptionsError("; ".join(messages))


def normalize_response_format(fmt: Any) -> dict[str, Any] | None:
    """Normalise a requested output format.

    Accepts ``"json"``, a JSON-schema dict, a pydantic model class, or an already normalised
    ``{"type": "json"}`` / ``{"type": "json_schema", "name", "schema"}`` dict.
    """
    if fmt is None:
        return None
    if fmt == "json" or fmt == {"type": "json"} or fmt == {"type": "json_object"}:
        return {"type": "json"}
    if isinstance(fmt, type) and issubclass(fmt, BaseModel):
        return {"type": "json_schema", "name": fmt.__name__, "schema": fmt.model_json_schema()}
    if isinstance(fmt, Mapping):
        if fmt.get("type") == "json_schema":
            inner = fmt.get("json_schema", fmt)
            return {"type": "json_schema", "name": inner.get("name", "response"),
                    "schema": inner.get("schema", {})}
        return {"type": "json_schema", "name": "response", "schema": dict(fmt)}
    raise OptionsError(f"response_format must be 'json', a JSON schema dict or a pydantic model "
                       f"class (got {fmt!r})")


async def keep_partial(stream: AsyncIterator[StreamChunk], provider: str | None = None
                       ) -> AsyncGenerator[StreamChunk, None]:
    """Pass a provider's chunks through; a :class:`ProviderError` gets the ones received.

    Any other exception that is not a :class:`ModelplexError` (an aiohttp error, a
    ``KeyError`` from an unexpected reply) is converted by
    :func:`modelplex._foreign.foreign_error` into a chained :class:`ProviderError` naming
    ``provider``, so callers only see modelplex errors. The conversion happens in the except
    clause: a stream that does not fail pays nothing for it.

    The stream is closed as soon as this one is (not when garbage collected). Plain text
    chunks are kept as their string: strings are not tracked by the garbage collector, so
    hundreds of concurrent streams do not make its collections slow.
    """
    received: list[StreamChunk | str] = []
    append = received.append
    try:
        async with contextlib.aclosing(stream) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                if chunk.reasoning is None and chunk.tool_calls is None:
                    append(chunk.content)
                else:
                    append(chunk)
                yield chunk
    except ProviderError as err:
        err.partial_chunks = _partial(received)
        raise
    except ModelplexError:
        raise
    except Exception as err:
        converted = foreign_error(err, provider)
        converted.partial_chunks = _partial(received)
        raise converted from err


def _partial(received: list[StreamChunk | str]) -> list[StreamChunk]:
    return [StreamChunk(content=item) if isinstance(item, str) else item for item in received]


#: The optional operations a subclass may override; the base class guards each override so
#: that a foreign exception escaping it becomes a chained ProviderError.
_GUARDED = ("_complete", "embed", "list_models", "show_model", "delete_model",
            "list_loaded_models", "health", "aclose", "submit_batch", "batch_status",
            "cancel_batch")


def _guard(method: Any) -> Any:
    """Wrap an async method so non-modelplex exceptions become chained ProviderErrors."""
    if getattr(method, "__modelplex_guarded__", False):
        return method

    @functools.wraps(method)
    async def guarded(self: Provider, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except ModelplexError:
            raise
        except Exception as err:
            raise foreign_error(err, self.name) from err

    guarded.__modelplex_guarded__ = True  # type: ignore[attr-defined]
    return guarded


def _guard_pull(method: Any) -> Any:
    """Wrap ``pull_model`` (which returns an async iterator) like :func:`_guard`."""
    if getattr(method, "__modelplex_guarded__", False):
        return method

    @functools.wraps(method)
    def guarded(self: Provider, *args: Any, **kwargs: Any) -> AsyncIterator[PullProgress]:
        return _guard_iter(method(self, *args, **kwargs), self.name)

    guarded.__modelplex_guarded__ = True  # type: ignore[attr-defined]
    return guarded


async def _guard_iter(events: AsyncIterator[PullProgress], provider: str
                      ) -> AsyncGenerator[PullProgress, None]:
    try:
        async with contextlib.aclosing(events) as items:  # type: ignore[type-var]
            async for item in items:
                yield item
    except ModelplexError:
        raise
    except Exception as err:
        raise foreign_error(err, provider) from err


def _completes(cls: type[Provider]) -> bool:
    """Whether the provider class answers whole itself (overrides ``_complete``)."""
    return cls._complete is not Provider._complete


async def _whole_as_stream(self: Provider, request: ChatRequest
                           ) -> AsyncGenerator[StreamChunk, None]:
    """The answer of ``_complete`` as a stream (a provider that implements ``_complete``
    alone, or a model whose provider says it does not stream)."""
    response = await self._complete(request)
    for chunk in response.as_chunks():
        yield chunk


@attrs.define(slots=True)
class ChatRequest:
    """Everything a provider needs for one chat request, validated.

    ``cache`` is for the cache layer (:mod:`modelplex.caching`): ``None`` follows its policy,
    ``False`` bypasses it, ``True`` caches even a non-deterministic request.
    ``conversation_id`` names the conversation the request belongs to, for the layers that
    record or trace it (never sent to a provider).
    """

    model: str
    messages: Sequence[ChatMessage]
    options: CommonOptions
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    cache: bool | None = None
    conversation_id: str | None = None


class Provider(abc.ABC):
    """Base class of every provider.

    Class attributes:
        name: the provider name users type before the colon (``ollama:llama3.2``).
        Options: the pydantic model of this provider's options (``extra="forbid"``).
        capabilities: a :class:`Capabilities`.
        default_model: the model used when the user names only the provider.

    Instances are async context managers; :meth:`aclose` frees connections and models.

    An exception that is not a :class:`~modelplex.errors.ModelplexError` escaping the stream,
    ``_complete`` or an optional operation a subclass overrides is converted into a chained
    :class:`~modelplex.errors.ProviderError` (see :mod:`modelplex._foreign`).
    """

    name: str
    Options: ClassVar[type[CommonOptions]] = CommonOptions
    capabilities: ClassVar[Capabilities] = Capabilities()
    default_model: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in _GUARDED:
            method = cls.__dict__.get(attr)
            if method is not None and inspect.iscoroutinefunction(method):
                setattr(cls, attr, _guard(method))
        if "_complete" in cls.__dict__ and getattr(cls._stream, "__isabstractmethod__", False):
            cls._stream = _whole_as_stream  # type: ignore[method-assign]
        pull = cls.__dict__.get("pull_model")
        if pull is not None and inspect.isfunction(pull):
            cls.pull_model = _guard_pull(pull)  # type: ignore[method-assign]
        results = cls.__dict__.get("batch_results")
        if results is not None and inspect.isfunction(results):
            cls.batch_results = _guard_pull(results)  # type: ignore[method-assign]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- requests ---------------------------------------------------------------------------
    def parse_options(self, options: Mapping[str, Any] | CommonOptions | None) -> CommonOptions:
        """Validate options into this provider's ``Options``; raise :class:`OptionsError`."""
        if isinstance(options, self.Options):
            return options
        if isinstance(options, CommonOptions):
            options = options.set_values()
        try:
            return self.Options.model_validate(dict(options or {}))
        except ValidationError as err:
            raise options_error(err, self.Options, self.name) from None

    def build_request(self, messages: Sequence[ChatMessage | Mapping[str, Any]], *, model: str,
                      options: Mapping[str, Any] | CommonOptions | None = None,
                      tools: list[dict[str, Any]] | None = None, tool_choice: Any = None,
                      response_format: Any = None) -> ChatRequest:
        """Validate the inputs of a chat call into a :class:`ChatRequest`."""
        msgs = [m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m)
                for m in messages]
        if not msgs:
            raise OptionsError("messages must not be empty: give at least one message")
        return ChatRequest(model=model or self.default_model or "", messages=msgs,
                           options=self.parse_options(options), tools=tools,
                           tool_choice=tool_choice,
                           response_format=normalize_response_format(response_format))

    def chat(self, messages: Sequence[ChatMessage | Mapping[str, Any]], *, model: str,
             options: Mapping[str, Any] | CommonOptions | None = None,
             tools: list[dict[str, Any]] | None = None, tool_choice: Any = None,
             response_format: Any = None) -> AsyncGenerator[StreamChunk, None]:
        """Stream an answer as :class:`StreamChunk` objects; the last carries usage.

        Inputs are validated before anything is sent. If the provider fails mid-stream the
        raised :class:`ProviderError` keeps the chunks already delivered
        (``err.partial_chunks``, ``err.partial_content``). Close the iterator (``aclose()``,
        or leave ``async with contextlib.aclosing(...)``) to stop generation early.
        """
        request = self.build_request(messages, model=model, options=options, tools=tools,
                                     tool_choice=tool_choice, response_format=response_format)
        return self.stream_request(request)

    def stream_request(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """Stream a validated request, keeping what was received on failure.

        A model that only answers whole (:meth:`supports_streaming` is false) is asked with
        ``_complete`` and its answer streamed (simulated streaming): the one place the core
        does it, under every layer and router of the request path.
        """
        if not self.supports_streaming(request.model) and _completes(type(self)):
            return keep_partial(_whole_as_stream(self, request), self.name)
        return keep_partial(self._stream(request), self.name)

    def supports_streaming(self, model: str) -> bool:
        """Whether ``model`` streams its answers (default: ``capabilities.streaming``).

        A provider some of whose models only answer whole overrides this (and implements
        ``_complete``); the core then asks those models for the whole answer and streams it,
        so every caller may stream any model.
        """
        return self.capabilities.streaming

    async def complete(self, messages: Sequence[ChatMessage | Mapping[str, Any]], *, model: str,
                       options: Mapping[str, Any] | CommonOptions | None = None,
                       tools: list[dict[str, Any]] | None = None, tool_choice: Any = None,
                       response_format: Any = None) -> ChatResponse:
        """The whole answer at once (equal to the joined stream)."""
        request = self.build_request(messages, model=model, options=options, tools=tools,
                                     tool_choice=tool_choice, response_format=response_format)
        return await self.complete_request(request)

    async def complete_request(self, request: ChatRequest) -> ChatResponse:
        """The whole answer to a validated request, without streaming.

        Callers that do not read a stream use this, so they cost what the provider's
        non-streaming request costs; layers (:class:`~modelplex.wrapping.WrappingProvider`)
        override it beside :meth:`stream_request`.
        """
        return await self._complete(request)

    @abc.abstractmethod
    def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        """Yield the chunks of one answer; implemented by every provider."""

    async def _complete(self, request: ChatRequest) -> ChatResponse:
        """Non-streaming answer; by default the collected stream."""
        chunks = [chunk async for chunk in self.stream_request(request)]
        return ChatResponse.from_chunks(chunks, model=request.model, provider=self.name)

    # -- optional operations ----------------------------------------------------------------
    def _unsupported(self, operation: str) -> UnsupportedOperationError:
        return UnsupportedOperationError(
            f"provider {self.name!r} does not support {operation}")

    async def embed(self, texts: Sequence[str], *, model: str,
                    options: Mapping[str, Any] | None = None) -> list[list[float]]:
        """One embedding vector per text."""
        raise self._unsupported("embeddings")

    async def list_models(self) -> list[ModelInfo]:
        """The models this provider can use now."""
        raise self._unsupported("listing models")

    async def show_model(self, name: str) -> ModelInfo:
        """Details of one model; by default looked up in :meth:`list_models`."""
        for info in await self.list_models():
            if name in (info.name, info.id):
                return info
        raise ModelNotFoundError(f"{self.name}: no model named {name!r}", status_code=404,
                                 provider=self.name)

    async def model_exists(self, name: str) -> bool:
        """Whether the provider has the model ``name`` (:meth:`show_model` finds it)."""
        try:
            await self.show_model(name)
        except ModelNotFoundError:
            return False
        return True

    def pull_model(self, name: str) -> AsyncIterator[PullProgress]:
        """Download a model, yielding progress events."""
        raise self._unsupported("pulling models")

    async def delete_model(self, name: str) -> None:
        """Delete a model."""
        raise self._unsupported("deleting models")

    async def list_loaded_models(self) -> list[ModelInfo]:
        """The models loaded in memory now."""
        raise self._unsupported("listing loaded models")

    def missing_setting(self) -> str | None:
        """What the user must set before this provider can answer, when it is not
        configured: the environment variable (or setting) to set, e.g.
        ``"ANTHROPIC_API_KEY"``; None when it is configured (the default).

        A provider that names one is never contacted to list models or check health (the
        registry reports it as not configured, the web page shows "not configured: set
        ANTHROPIC_API_KEY"), so a machine without a key never reaches out to a public API.
        Answer without I/O: it is asked before every listing and health check.
        """
        return None

    async def health(self) -> HealthStatus:
        """Whether the provider is usable; by default, whether it can list its models."""
        try:
            models = await self.list_models()
        except ProviderError as err:
            return HealthStatus(provider=self.name, healthy=False, detail=str(err))
        except UnsupportedOperationError:
            return HealthStatus(provider=self.name, healthy=True)
        return HealthStatus(provider=self.name, healthy=True, model_count=len(models))

    # -- the provider's Batch API (optional; see modelplex.batch.jobs) -----------------------
    #: most requests one job may hold (0: the provider has no Batch API)
    batch_max_requests: ClassVar[int] = 0
    #: most bytes of requests one job may hold (0: no limit)
    batch_max_bytes: ClassVar[int] = 0

    def _no_batch_api(self) -> UnsupportedOperationError:
        return UnsupportedOperationError(f"provider {self.name!r} has no Batch API; run "
                                         "without --provider-batch")

    @property
    def has_batch_api(self) -> bool:
        """Whether the provider overrides :meth:`submit_batch`."""
        return type(self).submit_batch is not Provider.submit_batch

    async def submit_batch(self, requests: Sequence[BatchRequest]) -> BatchJob:
        """Send ``requests`` as one job of the provider's Batch API (answered within a day,
        usually at half the price); returns the job as created."""
        raise self._no_batch_api()

    async def batch_status(self, job_id: str) -> BatchJob:
        """The job ``job_id`` as it is now."""
        raise self._no_batch_api()

    def batch_results(self, job_id: str) -> AsyncIterator[BatchItem]:
        """Each request's outcome of an ended job, read as needed (requests the job did not
        reach are items with ``error_type`` ``BatchExpiredError`` or
        ``BatchCancelledError``, when the provider reports them)."""
        raise self._no_batch_api()

    async def cancel_batch(self, job_id: str) -> BatchJob:
        """Ask the provider to stop the job; returns it as it is then."""
        raise self._no_batch_api()

    async def initialize(self) -> bool:
        """Whether the provider is ready: ``(await self.health()).healthy``.

        Providers connect on first use, so nothing needs opening first; seed code calls this
        before its first request (``await provider.initialize()``). Never raises for a
        provider that is down: it returns ``False`` (``health()`` says why).
        """
        return (await self.health()).healthy

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to free by default
        """Free connections, threads and loaded models."""
