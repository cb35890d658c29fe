"""OpenTelemetry traces and metrics for every model call, in the GenAI semantic conventions.

The telemetry layer sits in the request path between recording and the response cache, so
``ChatManager``, the CLI, the server and batch runs all get it. It depends on
``opentelemetry-api`` only; the SDK and exporters are the application's choice
(``pip install 'modelplex[otel]'`` installs the SDK and the OTLP/HTTP exporter)::

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)        # before the first model is opened

Each call is one span named ``{gen_ai.operation.name} {gen_ai.request.model}`` (``chat
llama3.2``, ``embeddings nomic-embed-text``), kind ``CLIENT`` (``INTERNAL`` for a model run in
this process, llama.cpp), with the request parameters, the response model, id and finish
reasons, token usage (cache and reasoning tokens where the provider reports them), the
conversation id, the server address, the cost (``modelplex.cost``) and ``error.type`` on
failure. A router's attempts, a tool execution and a structured-output re-ask are spans of
their own (:func:`attempt_span`, :func:`tool_span`, :func:`step_span`). Message content is
recorded only when content capture is on (``capture_content``), never by default.

Metrics: ``gen_ai.client.token.usage``, ``gen_ai.client.operation.duration``,
``gen_ai.client.operation.time_to_first_chunk`` and ``time_per_output_chunk`` (one value per
stream: its mean gap between chunks, so the per-chunk work stays a counter), with the
conventions' units and bucket boundaries; in the server also ``gen_ai.server.request.duration``
and ``gen_ai.server.time_to_first_token``. Labels: operation, provider, model, server and
error type, never a user, key or message.

Turning it on and off: ``[telemetry]`` in the config file (``enabled``, ``capture_content``)
and ``MODELPLEX_OTEL=0/1``, ``MODELPLEX_OTEL_CAPTURE_CONTENT=0/1`` over it. By default the
layer is there only when an OpenTelemetry SDK tracer or meter provider is configured: with
none, no layer is built and a call costs nothing more (and ``opentelemetry`` is not even
imported).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

from modelplex import env
from modelplex.errors import ConfigurationError, redact
from modelplex.wrapping import LayerContext, WrappingProvider

if TYPE_CHECKING:
    from modelplex.chunks import ChatResponse, StreamChunk, Usage
    from modelplex.config import Config
    from modelplex.cost import Cost, PriceBook
    from modelplex.provider import ChatRequest, Provider

__all__ = [
    "DURATION_BUCKETS",
    "TOKEN_BUCKETS",
    "TTFT_BUCKETS",
    "TelemetryLayer",
    "TelemetrySettings",
    "add_meter_provider",
    "attempt_span",
    "enabled",
    "end_attempt",
    "note",
    "provider_name",
    "remove_meter_provider",
    "start_attempt",
    "step_span",
    "telemetry_layer",
    "tool_span",
]

#: ``gen_ai.client.token.usage`` buckets (the conventions' boundaries).
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)
#: duration, time-to-first-chunk and time-per-chunk buckets, in seconds.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)
#: ``gen_ai.server.time_to_first_token`` buckets, in seconds.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0)

#: modelplex provider names -> the conventions' ``gen_ai.provider.name`` where one exists.
PROVIDER_NAMES: Mapping[str, str] = {"openai": "openai", "anthropic": "anthropic"}
#: providers whose model runs in this process (their spans are INTERNAL, not CLIENT).
IN_PROCESS = frozenset({"llamacpp"})

_KEYS = frozenset({"enabled", "capture_content"})
log = logging.getLogger("modelplex.telemetry")
_warned = False
_SCOPE = "modelplex"


def provider_name(name: str) -> str:
    """``gen_ai.provider.name`` for a modelplex provider: the conventions' value where one
    exists (``openai``, ``anthropic``), the plugin's name otherwise (``ollama``)."""
    return PROVIDER_NAMES.get(name, name)


@attrs.frozen
class TelemetrySettings:
    """Whether the telemetry layer is built and what it records.

    ``enabled``: ``True`` always, ``False`` never, ``None`` (default) when an OpenTelemetry
    SDK tracer or meter provider is configured. ``capture_content``: record messages, system
    instructions and tool definitions in spans (off by default: they may hold personal data).
    """

    enabled: bool | None = None
    capture_content: bool = False

    @classmethod
    def from_config(cls, config: Config | None = None,
                    environ: Mapping[str, str] | None = None) -> TelemetrySettings:
        """The ``[telemetry]`` table of ``config``, with ``MODELPLEX_OTEL`` and
        ``MODELPLEX_OTEL_CAPTURE_CONTENT`` over it."""
        table: Mapping[str, Any] = config.telemetry if config is not None else {}
        unknown = sorted(set(table) - _KEYS)
        if unknown:
            raise ConfigurationError(f"telemetry.{unknown[0]}: unknown key; valid keys are "
                                     f"{', '.join(sorted(_KEYS))}")
        values: dict[str, bool | None] = {}
        for key in sorted(_KEYS):
            value = table.get(key)
            if value is not None and not isinstance(value, bool):
                raise ConfigurationError(f"telemetry.{key} must be true or false "
                                         f"(got {value!r})")
            values[key] = value
        on = env.otel(environ)
        capture = env.otel_capture_content(environ)
        return cls(enabled=on if on is not None else values["enabled"],
                   capture_content=bool(capture if capture is not None
                                        else values["capture_content"]))


# -- is an SDK there? ----------------------------------------------------------------------------
_meter_providers: list[Any] = []


def add_meter_provider(meter_provider: Any) -> None:
    """Record metrics to ``meter_provider`` too (besides the global one): the server's
    ``/metrics`` uses a private one. The layer is built while one is added."""
    if all(mp is not meter_provider for mp in _meter_providers):
        _meter_providers.append(meter_provider)


def remove_meter_provider(meter_provider: Any) -> None:
    """Stop recording to ``meter_provider``."""
    _meter_providers[:] = [mp for mp in _meter_providers if mp is not meter_provider]


def _sdk_tracer_provider() -> bool:
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:  # nobody imported the API: nobody configured a provider
        return False
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def _sdk_meter_provider() -> bool:
    metrics = sys.modules.get("opentelemetry.metrics")
    if metrics is None:
        return False
    provider = metrics.get_meter_provider()
    return type(provider).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")


def enabled(settings: TelemetrySettings) -> bool:
    """Whether a telemetry layer is worth building now."""
    if settings.enabled is not None:
        return settings.enabled
    return bool(_meter_providers) or _sdk_tracer_provider() or _sdk_meter_provider()


def telemetry_layer(inner: Provider, ctx: LayerContext) -> Provider | None:
    """The layer factory of the request path (``register_layers``): a
    :class:`TelemetryLayer` over ``inner``, or ``None`` when telemetry is off."""
    settings = TelemetrySettings.from_config(ctx.config)
    if not enabled(settings):
        return None
    return TelemetryLayer(inner, settings=settings, caller=ctx.caller, config=ctx.config,
                          conversation_id=getattr(ctx, "conversation_id", None))


# -- instruments ----------------------------------------------------------------------------------
class _Instruments:
    """The histograms and counters of one meter provider."""

    def __init__(self, meter: Any) -> None:
        hist = meter.create_histogram
        self.tokens = hist("gen_ai.client.token.usage", unit="{token}",
                           description="Number of input and output tokens used.",
                           explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
        self.duration = hist("gen_ai.client.operation.duration", unit="s",
                             description="GenAI operation duration.",
                             explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.first_chunk = hist("gen_ai.client.operation.time_to_first_chunk", unit="s",
                                description="Time to receive the first chunk of a stream.",
                                explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.per_chunk = hist("gen_ai.client.operation.time_per_output_chunk", unit="s",
                              description="Time per output chunk after the first (the mean "
                                          "of one stream).",
                              explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.server_duration = hist("gen_ai.server.request.duration", unit="s",
                                    description="GenAI server request duration.",
                                    explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.server_ttft = hist("gen_ai.server.time_to_first_token", unit="s",
                                description="Time to generate the first token.",
                                explicit_bucket_boundaries_advisory=TTFT_BUCKETS)
        self.cache = meter.create_counter("modelplex.cache.hits", unit="{request}",
                                          description="Answers served by the response cache "
                                                      "(the ratio: over the duration count).")
        self.cost = meter.create_counter("modelplex.client.cost", unit="{USD}",
                                         description="What the answers cost, where the price "
                                                     "is known (by currency).")


_instruments: dict[int, tuple[Any, _Instruments]] = {}


def _instruments_of(meter_provider: Any) -> _Instruments:
    found = _instruments.get(id(meter_provider))
    if found is None or found[0] is not meter_provider:
        from modelplex.__about__ import __version__

        meter = meter_provider.get_meter(_SCOPE, __version__)
        found = _instruments[id(meter_provider)] = (meter_provider, _Instruments(meter))
    return found[1]


def _all_instruments() -> list[_Instruments]:
    out = []
    if _sdk_meter_provider():
        from opentelemetry import metrics

        out.append(_instruments_of(metrics.get_meter_provider()))
    out.extend(_instruments_of(mp) for mp in _meter_providers)
    return out


# -- content, in the conventions' JSON shape ------------------------------------------------------
def _parts(message: Any) -> list[dict[str, Any]]:
    role = getattr(message.role, "value", message.role)
    parts: list[dict[str, Any]] = []
    if role == "tool":
        return [{"type": "tool_call_response", "id": message.tool_call_id,
                 "response": message.content}]
    if message.content:
        parts.append({"type": "text", "content": message.content})
    for call in message.tool_calls:
        parts.append({"type": "tool_call", "id": call.get("id"), "name": call.get("name"),
                      "arguments": call.get("arguments")})
    if message.images:
        parts.extend({"type": "blob", "modality": "image"} for _ in message.images)
    return parts


def input_messages(messages: Sequence[Any]) -> tuple[str, str | None]:
    """``(gen_ai.input.messages, gen_ai.system_instructions)`` as JSON text."""
    chat = []
    system = []
    for message in messages:
        role = getattr(message.role, "value", message.role)
        if role == "system":
            system.append({"type": "text", "content": message.content})
        else:
            chat.append({"role": role, "parts": _parts(message)})
    return (json.dumps(chat, ensure_ascii=False, default=str),
            json.dumps(system, ensure_ascii=False) if system else None)


def output_messages(content: str, reasoning: str | None, calls: Sequence[Any],
                    finish_reason: str | None) -> str:
    """``gen_ai.output.messages`` as JSON text."""
    parts: list[dict[str, Any]] = []
    if reasoning:
        parts.append({"type": "reasoning", "content": reasoning})
    if content:
        parts.append({"type": "text", "content": content})
    for call in calls:
        parts.append({"type": "tool_call", "id": call.id, "name": call.name,
                      "arguments": call.arguments})
    return json.dumps([{"role": "assistant", "parts": parts,
                        "finish_reason": finish_reason or "stop"}],
                      ensure_ascii=False, default=str)


def tool_definitions(tools: Sequence[Mapping[str, Any]]) -> str:
    """``gen_ai.tool.definitions`` as JSON text."""
    out = []
    for tool in tools:
        fn = tool.get("function", tool)
        out.append({"type": tool.get("type", "function"), "name": fn.get("name"),
                    "description": fn.get("description"), "parameters": fn.get("parameters")})
    return json.dumps(out, ensure_ascii=False, default=str)


# -- the layer ------------------------------------------------------------------------------------
_OPTION_ATTRIBUTES = {
    "max_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "seed": "gen_ai.request.seed",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
}


def _server_of(provider: Any) -> tuple[str | None, int | None]:
    """``server.address`` and ``server.port`` of the innermost provider, from its URL."""
    for attr in ("base_url", "host", "url"):
        value = getattr(provider, "__dict__", {}).get(attr)
        if isinstance(value, str) and "://" in value:
            parts = urlsplit(value)
            if parts.hostname:
                try:
                    port = parts.port
                except ValueError:
                    port = None
                return parts.hostname, port or (443 if parts.scheme == "https" else 80)
    return None, None


def _innermost(provider: Any) -> Any:
    for _ in range(16):
        inner = getattr(provider, "__dict__", {}).get("inner")
        if inner is None:
            return provider
        provider = inner
    return provider


def base_fallbacks(provider: Any) -> bool:
    """Whether the router under ``provider`` has fallbacks."""
    return bool(getattr(_innermost(provider), "fallbacks", None))


def error_type(err: BaseException) -> str:
    """``error.type``: the exception class (low-cardinality), ``_OTHER`` for no name."""
    return type(err).__name__ or "_OTHER"


class TelemetryLayer(WrappingProvider):
    """One OpenTelemetry span per call of ``inner``, and the GenAI metrics.

    Args:
        inner: the cache, router or provider below.
        settings: :class:`TelemetrySettings` (content capture).
        caller: who built the stack (``"server"`` adds the server metrics).
        config: the configuration whose ``prices`` give the cost.
        tracer_provider: a tracer provider instead of the global one.
        meter_provider: a meter provider instead of the global ones.
        prices: a :class:`~modelplex.cost.PriceBook` instead of the config's.
        conversation_id: the conversation of the stack's requests (a request's own wins).
    """

    def __init__(self, inner: Provider, *, settings: TelemetrySettings | None = None,
                 caller: str = "chat", config: Config | None = None,
                 tracer_provider: Any = None, meter_provider: Any = None,
                 prices: PriceBook | None = None, conversation_id: str | None = None) -> None:
        super().__init__(inner)
        self.conversation_id = conversation_id
        from opentelemetry import context, trace

        self._trace = trace
        self._context = context
        self._tracer = tracer_of(tracer_provider)
        self._meter_provider = meter_provider
        self.settings = settings or TelemetrySettings()
        self.caller = caller
        self._config = config
        self._prices = prices
        base = _innermost(inner)
        deployments = getattr(base, "deployments", None)
        self._routed = deployments is not None
        if deployments:  # a router: its first deployment's provider until one answers
            base = deployments[0].provider
        single = deployments is None or (len(deployments) == 1 and not base_fallbacks(inner))
        self._provider_key = base.name
        self._provider = provider_name(base.name)
        in_process = getattr(base, "in_process", None)
        if in_process is None:
            in_process = base.name in IN_PROCESS
        self._kind = trace.SpanKind.INTERNAL if in_process else trace.SpanKind.CLIENT
        self._server = _server_of(base) if single else (None, None)

    def _instruments(self) -> list[_Instruments]:
        if self._meter_provider is not None:
            return [_instruments_of(self._meter_provider)]
        return _all_instruments()

    def _price_book(self) -> PriceBook:
        if self._prices is None:
            from modelplex.cost import PriceBook, default_price_book

            self._prices = (PriceBook.from_config(self._config) if self._config is not None
                            else default_price_book())
        return self._prices

    # -- attributes ---------------------------------------------------------------------------
    def _base(self, operation: str, model: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {"gen_ai.operation.name": operation,
                                      "gen_ai.provider.name": self._provider,
                                      "gen_ai.request.model": model}
        address, port = self._server
        if address is not None:
            attributes["server.address"] = address
            attributes["server.port"] = port
        return attributes

    def _request_attributes(self, request: ChatRequest) -> dict[str, Any]:
        attributes = self._base("chat", request.model)
        for key, value in request.options.set_values().items():
            name = _OPTION_ATTRIBUTES.get(key)
            if name is not None and isinstance(value, int | float):
                attributes[name] = value
            elif key == "stop" and value:
                attributes["gen_ai.request.stop_sequences"] = list(value)
            elif key == "n" and value != 1:
                attributes["gen_ai.request.choice.count"] = value
        conversation = request.conversation_id or self.conversation_id
        if conversation:
            attributes["gen_ai.conversation.id"] = conversation
        if request.response_format is not None:
            attributes["gen_ai.output.type"] = "json"
        if self.settings.capture_content:
            messages, system = input_messages(request.messages)
            attributes["gen_ai.input.messages"] = messages
            if system is not None:
                attributes["gen_ai.system_instructions"] = system
            if request.tools:
                attributes["gen_ai.tool.definitions"] = tool_definitions(request.tools)
        return attributes

    def _metric_attributes(self, span_attributes: Mapping[str, Any],
                           response_model: str | None, error: str | None) -> dict[str, Any]:
        out = {k: span_attributes[k] for k in ("gen_ai.operation.name", "gen_ai.provider.name",
                                               "gen_ai.request.model", "server.address",
                                               "server.port") if k in span_attributes}
        if response_model:
            out["gen_ai.response.model"] = response_model
        if error is not None:
            out["error.type"] = error
        return out

    # -- the end of a call --------------------------------------------------------------------
    def _finish(self, span: Any, attributes: dict[str, Any], **kw: Any) -> None:
        """End the span and record the metrics; telemetry that fails never fails the call
        (it logs one warning)."""
        try:
            self._end(span, attributes, **kw)
        except Exception as err:
            global _warned
            if not _warned:
                _warned = True
                log.warning("telemetry failed (%s: %s); the call is not affected",
                            type(err).__name__, err)
            with contextlib.suppress(Exception):
                span.end()

    def _end(self, span: Any, attributes: dict[str, Any], *, start: float,
                first: float | None, chunks: int, last: Any, route: Any,
                err: BaseException | None, stopped: bool = False,
                content: str | None = None, reasoning: str | None = None,
                calls: Sequence[Any] = ()) -> None:
        end = time.perf_counter()
        usage: Usage | None = getattr(last, "usage", None)
        response_model = getattr(last, "model", None) or (
            route.provider_model if route is not None else None)
        provider = route.provider if route is not None else None
        ended: dict[str, Any] = {}
        set_attr = ended.__setitem__
        cost: Cost | None = None
        if route is not None:
            set_attr("gen_ai.provider.name", provider_name(route.provider))
            set_attr("modelplex.route.deployment", route.deployment)
            set_attr("modelplex.route.attempts", route.attempts)
            if route.group != route.model:
                set_attr("modelplex.route.fallback", route.group)
        if response_model:
            set_attr("gen_ai.response.model", response_model)
        response_id = getattr(last, "id", None) or getattr(last, "response_id", None)
        if isinstance(response_id, str):
            set_attr("gen_ai.response.id", response_id)
        finish = getattr(last, "finish_reason", None)
        if finish:
            set_attr("gen_ai.response.finish_reasons", [finish])
        cached = bool(usage is not None and usage.cached)
        if usage is not None:
            from modelplex.cost import token_details

            set_attr("gen_ai.usage.input_tokens", usage.prompt_tokens)
            set_attr("gen_ai.usage.output_tokens", usage.completion_tokens)
            read, write, reasoning_tokens = token_details(usage)
            if read:
                set_attr("gen_ai.usage.cache_read.input_tokens", read)
            if write:
                set_attr("gen_ai.usage.cache_creation.input_tokens", write)
            if reasoning_tokens:
                set_attr("gen_ai.usage.reasoning.output_tokens", reasoning_tokens)
            if usage.estimated:
                set_attr("modelplex.usage.estimated", True)
            model_name = response_model or attributes["gen_ai.request.model"]
            cost = self._price_book().cost(
                route.provider if route is not None else self._provider_key,
                model_name, usage)
            if cost.known and cost.amount is not None:
                set_attr("modelplex.cost", cost.amount)
                set_attr("modelplex.cost.currency", cost.currency)
            else:
                set_attr("modelplex.cost.known", False)
        set_attr("modelplex.cache_hit", cached)
        if first is not None:
            set_attr("gen_ai.response.time_to_first_chunk", first - start)
        if content is not None and self.settings.capture_content:
            set_attr("gen_ai.output.messages",
                     output_messages(content, reasoning, calls, finish))
        error = None
        if err is not None:
            error = error_type(err)
            set_attr("error.type", error)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR,
                                               redact(str(err))[:500]))
        elif stopped:
            set_attr("modelplex.stopped_early", True)
        span.set_attributes(ended)
        span.end()
        # -- metrics
        instruments = self._instruments()
        if not instruments:
            return
        labels = self._metric_attributes(attributes, response_model, error)
        if provider is not None:
            labels["gen_ai.provider.name"] = provider_name(provider)
        duration = end - start
        server = self.caller == "server"
        for inst in instruments:
            inst.duration.record(duration, labels)
            if server:
                inst.server_duration.record(duration, labels)
            if cached:
                inst.cache.add(1, labels)
            if first is not None:
                inst.first_chunk.record(first - start, labels)
                if server:
                    inst.server_ttft.record(first - start, labels)
                if chunks > 1:
                    inst.per_chunk.record((end - first) / (chunks - 1), labels)
            if usage is not None and not usage.estimated and not cached:
                inst.tokens.record(usage.prompt_tokens,
                                   {**labels, "gen_ai.token.type": "input"})
                inst.tokens.record(usage.completion_tokens,
                                   {**labels, "gen_ai.token.type": "output"})
            if cost is not None and cost.known and cost.amount:
                inst.cost.add(cost.amount, {**labels, "modelplex.cost.currency": cost.currency})

    # -- calls --------------------------------------------------------------------------------
    def stream_request(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """The inner stream inside a span (ended when the stream ends)."""
        return self._traced_stream(request)

    async def _traced_stream(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        trace = self._trace
        attributes = self._request_attributes(request)
        span = self._tracer.start_span(f"chat {request.model}", kind=self._kind,
                                       attributes=attributes)
        capture = self.settings.capture_content
        parts: list[StreamChunk] = []
        start = time.perf_counter()
        first: float | None = None
        chunks = 0
        last = route = err = None
        stopped = True
        stream = self.inner.stream_request(request)
        try:
            # the span is current while the first chunk is awaited: the router's attempts,
            # the cache lookup and the HTTP request start there, and nest under it
            token = self._context.attach(trace.set_span_in_context(span))
            try:
                chunk = await anext(stream, None)
            finally:
                self._context.detach(token)
            if chunk is not None:
                first = time.perf_counter()
                route = chunk.route
                chunks = 1
                last = chunk
                if capture:
                    parts.append(chunk)
                yield chunk
                async for chunk in stream:
                    chunks += 1
                    last = chunk
                    if capture:
                        parts.append(chunk)
                    yield chunk
            stopped = False
        except Exception as error:
            err, stopped = error, False
            raise
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()
            content = reasoning = None
            calls: list[Any] = []
            if capture and not stopped and err is None:
                content = "".join(c.content for c in parts)
                reasoning = "".join(c.reasoning for c in parts if c.reasoning) or None
                calls = [call for c in parts if c.tool_calls for call in c.tool_calls]
            self._finish(span, attributes, start=start, first=first, chunks=chunks,
                         last=last, route=route, err=err, stopped=stopped, content=content,
                         reasoning=reasoning, calls=calls)

    async def complete_request(self, request: ChatRequest) -> ChatResponse:
        """The inner provider's whole answer inside a span."""
        trace = self._trace
        attributes = self._request_attributes(request)
        span = self._tracer.start_span(f"chat {request.model}", kind=self._kind,
                                       attributes=attributes)
        start = time.perf_counter()
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False,
                                set_status_on_exception=False):
                response = await self.inner.complete_request(request)
        except Exception as err:
            self._finish(span, attributes, start=start, first=None, chunks=0, last=None,
                         route=None, err=err)
            raise
        self._finish(span, attributes, start=start, first=None, chunks=0, last=response,
                     route=response.route, err=None, content=response.content,
                     reasoning=response.reasoning, calls=response.tool_calls)
        return response

    async def embed(self, texts: Sequence[str], *, model: str,
                    options: Mapping[str, Any] | None = None) -> list[list[float]]:
        """The inner provider's embeddings inside an ``embeddings {model}`` span."""
        trace = self._trace
        attributes = self._base("embeddings", model)
        fmt = (options or {}).get("encoding_format")
        if isinstance(fmt, str):
            attributes["gen_ai.request.encoding_formats"] = [fmt]
        span = self._tracer.start_span(f"embeddings {model}", kind=self._kind,
                                       attributes=attributes)
        start = time.perf_counter()
        error: str | None = None
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False,
                                set_status_on_exception=False):
                vectors = await self.inner.embed(texts, model=model, options=options)
        except Exception as err:
            error = error_type(err)
            span.set_attribute("error.type", error)
            span.set_status(trace.Status(trace.StatusCode.ERROR, redact(str(err))[:500]))
            raise
        else:
            if vectors and vectors[0] is not None:
                span.set_attribute("gen_ai.embeddings.dimension.count", len(vectors[0]))
        finally:
            span.end()
            duration = time.perf_counter() - start
            for inst in self._instruments():
                inst.duration.record(duration, self._metric_attributes(attributes, None,
                                                                       error))
        return vectors


# -- spans of the work around model calls --------------------------------------------------------
_tracers: dict[int, tuple[Any, Any]] = {}


def tracer_of(tracer_provider: Any = None) -> Any:
    """modelplex's tracer from ``tracer_provider`` (default: the global one), made once."""
    from opentelemetry import trace

    if tracer_provider is None:
        tracer_provider = trace.get_tracer_provider()
    found = _tracers.get(id(tracer_provider))
    if found is None or found[0] is not tracer_provider:
        from modelplex.__about__ import __version__

        if len(_tracers) > 64:
            _tracers.clear()
        found = _tracers[id(tracer_provider)] = (
            tracer_provider, trace.get_tracer(_SCOPE, __version__,
                                              tracer_provider=tracer_provider))
    return found[1]


def _tracer() -> Any:
    """The global tracer when an SDK is configured (``None`` otherwise: no work at all)."""
    if not _sdk_tracer_provider():
        return None
    return tracer_of()


@contextlib.contextmanager
def _span(name: str, kind: str, attributes: Mapping[str, Any]) -> Iterator[Any]:
    tracer = _tracer()
    if tracer is None:
        yield None
        return
    from opentelemetry import trace

    with tracer.start_as_current_span(name, kind=getattr(trace.SpanKind, kind),
                                      attributes=dict(attributes), record_exception=False,
                                      set_status_on_exception=False) as span:
        try:
            yield span
        except Exception as err:
            _failed(span, err)
            raise


def _attempt_attributes(dep: Any, attempt: int) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "modelplex.route.deployment": dep.label,
        "gen_ai.provider.name": provider_name(dep.provider.name),
        "gen_ai.request.model": dep.model, "modelplex.route.attempt": attempt}
    address, port = _server_of(dep.provider)
    if address is not None:
        attributes["server.address"] = address
        attributes["server.port"] = port
    return attributes


@attrs.define(slots=True)
class _Attempt:
    """An attempt under way: the span is made when it ends (see :func:`start_attempt`)."""

    parent: Any
    start: int
    dep: Any
    attempt: int
    always: bool


def start_attempt(router: Any, dep: Any, attempt: int) -> _Attempt | None:
    """Note the start of one attempt of a routed request on deployment ``dep`` (``None`` when
    tracing is off); :func:`end_attempt` makes its ``modelplex.attempt {label}`` span, a child
    of the span current now. A router of one deployment without fallbacks (what a plain
    ``provider:model`` is) gets attempt spans only when an attempt failed, so a call that
    simply succeeds stays one span."""
    if not _sdk_tracer_provider():
        return None
    from opentelemetry import context

    always = len(router.deployments) > 1 or bool(router.fallbacks)
    return _Attempt(context.get_current(), time.time_ns(), dep, attempt, always)


def end_attempt(token: _Attempt | None, err: BaseException | None = None) -> None:
    """End an attempt from :func:`start_attempt` (``err``: why it failed)."""
    if token is None or (err is None and not token.always and token.attempt == 1):
        return
    span = tracer_of().start_span(f"modelplex.attempt {token.dep.label}",
                                   context=token.parent, start_time=token.start,
                                   attributes=_attempt_attributes(token.dep, token.attempt))
    if err is not None:
        _failed(span, err)
    span.end()


@contextlib.contextmanager
def attempt_span(router: Any, dep: Any, attempt: int) -> Iterator[None]:
    """:func:`start_attempt` and :func:`end_attempt` around a block (a non-streaming call)."""
    token = start_attempt(router, dep, attempt)
    try:
        yield
    except BaseException as err:
        end_attempt(token, err)
        raise
    end_attempt(token)


def _failed(span: Any, err: BaseException) -> None:
    from opentelemetry import trace

    span.set_attribute("error.type", error_type(err))
    status = getattr(err, "status_code", None)
    if isinstance(status, int):
        span.set_attribute("http.response.status_code", status)
    span.set_status(trace.Status(trace.StatusCode.ERROR, redact(str(err))[:500]))


def note(span: Any, key: str, value: Any) -> None:
    """Set an attribute on ``span`` if there is one (helpers yield ``None`` when tracing is
    off)."""
    if span is not None:
        span.set_attribute(key, value)


def tool_span(name: str, call_id: str | None = None, description: str | None = None,
              arguments: Any = None) -> Any:
    """An ``execute_tool {name}`` span around one tool execution (a context manager)."""
    attributes: dict[str, Any] = {"gen_ai.operation.name": "execute_tool",
                                  "gen_ai.tool.name": name, "gen_ai.tool.type": "function"}
    if call_id:
        attributes["gen_ai.tool.call.id"] = call_id
    if description:
        attributes["gen_ai.tool.description"] = description
    if arguments is not None and _capture_content():
        attributes["gen_ai.tool.call.arguments"] = json.dumps(arguments, default=str)
    return _span(f"execute_tool {name}", "INTERNAL", attributes)


def step_span(name: str, **attributes: Any) -> Any:
    """A span around a step of modelplex's own work (a structured-output attempt:
    ``step_span("modelplex.structured", attempt=2)``): attributes are prefixed
    ``modelplex.``."""
    return _span(name, "INTERNAL", {f"modelplex.{k}": v for k, v in attributes.items()
                                    if v is not None})


def _capture_content() -> bool:
    try:
        from modelplex.config import get_config

        return TelemetrySettings.from_config(get_config()).capture_content
    except ConfigurationError:
        return False
