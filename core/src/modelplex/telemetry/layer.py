"""The telemetry layer of the request path: one OpenTelemetry span per model call (chat, stream,
embeddings) and the GenAI metrics of it.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from modelplex.errors import redact
from modelplex.telemetry.attributes import (
    _OPTION_ATTRIBUTES,
    IN_PROCESS,
    _innermost,
    _server_of,
    base_fallbacks,
    error_type,
    input_messages,
    output_messages,
    provider_name,
    tool_definitions,
)
from modelplex.telemetry.metrics import _all_instruments, _Instruments, _instruments_of
from modelplex.telemetry.settings import TelemetrySettings, enabled, settings_for
from modelplex.telemetry.spans import tracer_of
from modelplex.wrapping import LayerContext, WrappingProvider

if TYPE_CHECKING:
    from modelplex.chunks import ChatResponse, StreamChunk, Usage
    from modelplex.config import Config
    from modelplex.cost import Cost, PriceBook
    from modelplex.provider import ChatRequest, Provider

log = logging.getLogger("modelplex.telemetry")
_warned = False
#: per-process caches of what every request or stack would otherwise compute again (a
#: ChatManager per conversation builds a stack per conversation over the same shared router):
#: what a layer derives from the stack below it (:class:`_Shape`), and the metric label sets
#: (a few per model; bounded).
_shapes: dict[int, _Shape] = {}
_labels: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {}
_token_details: Any = None
#: the span attributes that are also metric labels.
_METRIC_KEYS = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model")


class _Shape:
    """What a telemetry layer derives from the stack below it and the tracer provider: the
    tracer, the span kind, the provider's conventions name, the server address and whether
    the router has ``watched_stream``; and, per operation and model, the span name and the
    base attributes. Made once per router and tracer provider and shared by every layer over
    them (a ChatManager per conversation builds a layer per conversation); it holds the
    router weakly, so a closed router is not kept alive by it."""

    __slots__ = ("bases", "inner", "kind", "provider", "provider_key", "routed", "server",
                 "single", "tracer", "tracer_provider", "watchable")

    def __init__(self, inner: Provider, tracer_provider: Any) -> None:
        from opentelemetry import trace

        self.inner = weakref.ref(inner)
        self.tracer_provider = tracer_provider
        self.tracer = tracer_of(tracer_provider)
        base = _innermost(inner)
        deployments = getattr(base, "deployments", None)
        self.routed = deployments is not None
        if deployments:  # a router: its first deployment's provider until one answers
            base = deployments[0].provider
        self.single = deployments is None or (len(deployments) == 1
                                              and not base_fallbacks(inner))
        self.provider_key: str = base.name
        self.provider = provider_name(base.name)
        in_process = getattr(base, "in_process", None)
        if in_process is None:
            in_process = base.name in IN_PROCESS
        self.kind = trace.SpanKind.INTERNAL if in_process else trace.SpanKind.CLIENT
        self.server = _server_of(base) if self.single else (None, None)
        # a router right below (looked up on its class: a layer's __getattr__ forwards)
        self.watchable = getattr(type(inner), "watched_stream", None) is not None
        self.bases: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}

    def base(self, operation: str, model: str) -> tuple[str, dict[str, Any]]:
        """The span name and the attributes every ``operation`` span of ``model`` has (shared:
        copy before adding to it)."""
        found = self.bases.get((operation, model))
        if found is None:
            attributes: dict[str, Any] = {"gen_ai.operation.name": operation,
                                          "gen_ai.provider.name": self.provider,
                                          "gen_ai.request.model": model}
            address, port = self.server
            if address is not None:
                attributes["server.address"] = address
                attributes["server.port"] = port
            if len(self.bases) > 64:
                self.bases.clear()
            found = self.bases[(operation, model)] = (f"{operation} {model}", attributes)
        return found


def _shape_of(inner: Provider, tracer_provider: Any) -> _Shape:
    if tracer_provider is None:
        from opentelemetry import trace

        tracer_provider = trace.get_tracer_provider()
    found = _shapes.get(id(inner))
    if found is None or found.inner() is not inner or found.tracer_provider is not tracer_provider:
        if len(_shapes) > 256:
            _shapes.clear()
        found = _shapes[id(inner)] = _Shape(inner, tracer_provider)
    return found


def telemetry_layer(inner: Provider, ctx: LayerContext) -> Provider | None:
    """The layer factory of the request path (``register_layers``): a
    :class:`TelemetryLayer` over ``inner``, or ``None`` when telemetry is off."""
    settings = settings_for(ctx.config)  # parsed once per config and environment
    if not enabled(settings):
        return None
    return TelemetryLayer(inner, settings=settings, caller=ctx.caller, config=ctx.config,
                          conversation_id=getattr(ctx, "conversation_id", None))


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
        shape = self._shape = _shape_of(inner, tracer_provider)
        self._tracer = shape.tracer
        self._meter_provider = meter_provider
        self.settings = settings or TelemetrySettings()
        self.caller = caller
        self._config = config
        self._prices = prices
        self._routed = shape.routed
        self._provider_key = shape.provider_key
        self._provider = shape.provider
        self._kind = shape.kind
        self._single = shape.single
        self._server = shape.server
        self._watched: Callable[[ChatRequest, _Watch], AsyncGenerator[StreamChunk, None]] | None
        self._watched = (inner.watched_stream  # type: ignore[attr-defined]
                         if shape.watchable else None)

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
    def _base(self, operation: str, model: str) -> tuple[str, dict[str, Any]]:
        """The span name and a new dict of the attributes every such span has."""
        name, attributes = self._shape.base(operation, model)
        return name, dict(attributes)

    def _request_attributes(self, request: ChatRequest) -> tuple[str, dict[str, Any]]:
        """The span name and the attributes known when the request starts."""
        span_name, attributes = self._base("chat", request.model)
        options = request.options
        for key in options.model_fields_set:  # what the user set (no dump of every field)
            value = getattr(options, key, None)
            if value is None:
                continue
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
        return span_name, attributes

    def _metric_attributes(self, span_attributes: Mapping[str, Any],
                           response_model: str | None, error: str | None) -> dict[str, Any]:
        # (model, provider, status) and the operation: the conventions' required labels only.
        # ``server.address``/``server.port`` (Recommended) stay on the spans: the SDK cleans,
        # copies and hashes every label of every record, so each one costs on every request.
        out = {k: span_attributes[k] for k in _METRIC_KEYS if k in span_attributes}
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
                err: BaseException | None, context: Any, stopped: bool = False,
                content: str | None = None, reasoning: str | None = None,
                calls: Sequence[Any] = ()) -> None:
        """``context``: the span's context (the span current in it), which the metrics are
        recorded in: an exemplar (where the meter provider's exemplar filter takes one)
        points at this call's span, and the SDK does not look the current context up for
        each record."""
        end = time.perf_counter()
        usage: Usage | None = getattr(last, "usage", None)
        response_model = getattr(last, "model", None) or (
            route.provider_model if route is not None else None)
        provider = route.provider if route is not None else None
        ended: dict[str, Any] = {}
        set_attr = ended.__setitem__
        cost: Cost | None = None
        if route is not None:
            answered = provider_name(route.provider)
            if answered != self._provider:
                set_attr("gen_ai.provider.name", answered)
            # a plain provider:model (a router of one) that answered at once: nothing to add
            if not self._single or route.attempts != 1:
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
            global _token_details
            if _token_details is None:
                from modelplex.cost import token_details as _token_details
            token_details = _token_details
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
        key = (self._provider, attributes["gen_ai.request.model"], response_model, provider,
               error)
        found = _labels.get(key)
        if found is None:  # the SDK copies the labels it keeps: shared dicts are safe
            labels = self._metric_attributes(attributes, response_model, error)
            if provider is not None:
                labels["gen_ai.provider.name"] = provider_name(provider)
            if len(_labels) > 1024:
                _labels.clear()
            found = _labels[key] = (labels, {**labels, "gen_ai.token.type": "input"},
                                    {**labels, "gen_ai.token.type": "output"})
        labels, input_labels, output_labels = found
        duration = end - start
        server = self.caller == "server"
        for inst in instruments:
            inst.duration.record(duration, labels, context)
            if server:
                inst.server_duration.record(duration, labels, context)
            if cached:
                inst.cache.add(1, labels, context)
            if first is not None:
                inst.first_chunk.record(first - start, labels, context)
                if server:
                    inst.server_ttft.record(first - start, labels, context)
                if chunks > 1:
                    inst.per_chunk.record((end - first) / (chunks - 1), labels, context)
            if usage is not None and not usage.estimated and not cached:
                inst.tokens.record(usage.prompt_tokens, input_labels, context)
                inst.tokens.record(usage.completion_tokens, output_labels, context)
            if cost is not None and cost.known and cost.amount:
                inst.cost.add(cost.amount, {**labels, "modelplex.cost.currency": cost.currency},
                              context)

    # -- calls --------------------------------------------------------------------------------
    def stream_request(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """The inner stream inside a span (ended when the stream ends). Right over a router
        (what every stack has) without content capture, the router reports the stream to a
        :class:`_Watch` instead of this layer wrapping it: no generator step per chunk."""
        if self._watched is not None and not self.settings.capture_content:
            return self._watched(request, _Watch(self, request))
        return self._traced_stream(request)

    async def _traced_stream(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        name, attributes = self._request_attributes(request)
        span = self._tracer.start_span(name, kind=self._kind, attributes=attributes)
        context = self._trace.set_span_in_context(span)
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
            token = self._context.attach(context)
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
                if capture:
                    async for chunk in stream:
                        chunks += 1
                        last = chunk
                        parts.append(chunk)
                        yield chunk
                else:  # per chunk: a counter and the last chunk, nothing else
                    async for chunk in stream:
                        chunks += 1
                        last = chunk
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
                         last=last, route=route, err=err, context=context, stopped=stopped,
                         content=content, reasoning=reasoning, calls=calls)

    async def complete_request(self, request: ChatRequest) -> ChatResponse:
        """The inner provider's whole answer inside a span."""
        name, attributes = self._request_attributes(request)
        span = self._tracer.start_span(name, kind=self._kind, attributes=attributes)
        context = self._trace.set_span_in_context(span)
        start = time.perf_counter()
        try:
            token = self._context.attach(context)
            try:
                response = await self.inner.complete_request(request)
            finally:
                self._context.detach(token)
        except Exception as err:
            self._finish(span, attributes, start=start, first=None, chunks=0, last=None,
                         route=None, err=err, context=context)
            raise
        self._finish(span, attributes, start=start, first=None, chunks=0, last=response,
                     route=response.route, err=None, context=context,
                     content=response.content, reasoning=response.reasoning,
                     calls=response.tool_calls)
        return response

    async def embed(self, texts: Sequence[str], *, model: str,
                    options: Mapping[str, Any] | None = None) -> list[list[float]]:
        """The inner provider's embeddings inside an ``embeddings {model}`` span."""
        trace = self._trace
        name, attributes = self._base("embeddings", model)
        fmt = (options or {}).get("encoding_format")
        if isinstance(fmt, str):
            attributes["gen_ai.request.encoding_formats"] = [fmt]
        span = self._tracer.start_span(name, kind=self._kind, attributes=attributes)
        context = trace.set_span_in_context(span)
        start = time.perf_counter()
        error: str | None = None
        try:
            token = self._context.attach(context)
            try:
                vectors = await self.inner.embed(texts, model=model, options=options)
            finally:
                self._context.detach(token)
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
                                                                       error), context)
        return vectors


class _Watch:
    """One stream's telemetry, reported by the router below (``Router.watched_stream``): the
    span begins when the stream starts and is current until the first chunk (the attempts,
    the cache lookup and the HTTP request nest under it), and ends with the stream."""

    __slots__ = ("attributes", "chunks", "context", "first_at", "layer", "request", "route",
                 "span", "start", "token")

    def __init__(self, layer: TelemetryLayer, request: ChatRequest) -> None:
        self.layer = layer
        self.request = request
        self.chunks = 0
        self.first_at: float | None = None
        self.route: Any = None
        self.token: Any = None

    def begin(self) -> None:
        layer = self.layer
        name, self.attributes = layer._request_attributes(self.request)
        self.span = span = layer._tracer.start_span(name, kind=layer._kind,
                                                    attributes=self.attributes)
        self.start = time.perf_counter()
        self.context = context = layer._trace.set_span_in_context(span)
        self.token = layer._context.attach(context)

    def _detach(self) -> None:
        token, self.token = self.token, None
        if token is not None:
            self.layer._context.detach(token)

    def first(self, chunk: StreamChunk) -> None:
        self.first_at = time.perf_counter()
        self.chunks = 1
        self.route = chunk.route
        self._detach()

    def end(self, last: StreamChunk | None, err: BaseException | None, done: bool) -> None:
        self._detach()
        self.layer._finish(self.span, self.attributes, start=self.start, first=self.first_at,
                           chunks=self.chunks, last=last, route=self.route, err=err,
                           context=self.context, stopped=not done and err is None)
