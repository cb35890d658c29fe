"""The telemetry layer with the real OpenTelemetry SDK: spans, attributes, nesting, metrics.

Spans go to an in-memory exporter and metrics to an in-memory reader; an OTLP/HTTP export to
a small receiver is decoded with ``opentelemetry-proto`` so the wire format is checked too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from modelplex import telemetry
from modelplex.chunks import StreamChunk, ToolCall, Usage
from modelplex.config import parse_config
from modelplex.errors import ConfigurationError, ProviderStatusError, RateLimitError
from modelplex.provider import Capabilities, ChatRequest, CommonOptions, Provider
from modelplex.routing import Deployment, Router
from modelplex.telemetry import TelemetryLayer, TelemetrySettings, telemetry_layer
from modelplex.testing import serve_app
from modelplex.types import ChatMessage
from modelplex.wrapping import LayerContext


class Scripted(Provider):
    """Answers with fixed chunks; fails with ``errors`` first (one per request)."""

    name = "openai"
    capabilities: ClassVar[Capabilities] = Capabilities(embeddings=True, tools=True)

    def __init__(self, words: tuple[str, ...] = ("Par", "is"), *, name: str = "openai",
                 errors: list[Exception] | None = None,
                 base_url: str = "https://api.openai.com/v1") -> None:
        self.name = name
        self.words = words
        self.errors = list(errors or [])
        self.base_url = base_url

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        if self.errors:
            raise self.errors.pop(0)
        for word in self.words[:-1]:
            yield StreamChunk(content=word)
        yield StreamChunk(content=self.words[-1], finish_reason="stop", model="gpt-4o-mini-2024",
                          usage=Usage(prompt_tokens=12, completion_tokens=2))

    async def embed(self, texts: Any, *, model: str, options: Any = None) -> list[list[float]]:
        if self.errors:
            raise self.errors.pop(0)
        return [[0.1, 0.2, 0.3] for _ in texts]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


@pytest.fixture
def tracer_provider(spans: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


@pytest.fixture
def global_tracing(tracer_provider: TracerProvider) -> Iterator[TracerProvider]:
    """``tracer_provider`` as the global one for the test (reset after it)."""
    from opentelemetry.util._once import Once

    old = trace._TRACER_PROVIDER
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(tracer_provider)
    yield tracer_provider
    trace._TRACER_PROVIDER = old
    trace._TRACER_PROVIDER_SET_ONCE = Once()


def layer(provider: Provider, tracer_provider: Any, meter_provider: Any = None, *,
          capture: bool = False, caller: str = "chat") -> TelemetryLayer:
    return TelemetryLayer(provider, settings=TelemetrySettings(capture_content=capture),
                          tracer_provider=tracer_provider, meter_provider=meter_provider,
                          caller=caller)


def request(model: str = "gpt-4o-mini", **options: Any) -> ChatRequest:
    return ChatRequest(model=model, messages=[ChatMessage.system("Be brief."),
                                              ChatMessage.user("Capital of France?")],
                       options=CommonOptions(**options), conversation_id="conv-1")


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    if data is None:
        return out
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
                out.setdefault(metric.name + ":unit", []).append(metric.unit)
    return out


# -- chat --------------------------------------------------------------------------------------
async def test_streamed_chat_is_one_client_span_with_the_conventions_attributes(
        tracer_provider: TracerProvider, spans: InMemorySpanExporter,
        meter_provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    top = layer(Scripted(), tracer_provider, meter_provider)
    chunks = [c async for c in top.stream_request(request(temperature=0.2, max_tokens=50,
                                                          top_p=0.9, seed=7, stop=["\n"]))]
    assert "".join(c.content for c in chunks) == "Paris"
    (span,) = spans.get_finished_spans()
    assert span.name == "chat gpt-4o-mini"
    assert span.kind is SpanKind.CLIENT
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.request.temperature"] == 0.2
    assert attrs["gen_ai.request.max_tokens"] == 50
    assert attrs["gen_ai.request.top_p"] == 0.9
    assert attrs["gen_ai.request.seed"] == 7
    assert attrs["gen_ai.request.stop_sequences"] == ("\n",)
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini-2024"
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.usage.input_tokens"] == 12
    assert attrs["gen_ai.usage.output_tokens"] == 2
    assert attrs["gen_ai.conversation.id"] == "conv-1"
    assert attrs["server.address"] == "api.openai.com"
    assert attrs["server.port"] == 443
    assert attrs["modelplex.cache_hit"] is False
    assert attrs["gen_ai.response.time_to_first_chunk"] >= 0
    assert "error.type" not in attrs
    # content is off by default: no message text anywhere
    assert not any(k.startswith(("gen_ai.input", "gen_ai.output.messages",
                                 "gen_ai.system_instructions")) for k in attrs)
    assert "Capital" not in json.dumps(attrs, default=str)
    # metrics: names, units, labels, one input and one output token point
    points = metric_points(reader)
    assert points["gen_ai.client.operation.duration:unit"] == ["s"]
    assert points["gen_ai.client.token.usage:unit"] == ["{token}"]
    tokens = {p.attributes["gen_ai.token.type"]: p for p in points["gen_ai.client.token.usage"]}
    assert tokens["input"].sum == 12 and tokens["output"].sum == 2
    assert list(tokens["input"].explicit_bounds) == list(telemetry.TOKEN_BUCKETS)
    (duration,) = points["gen_ai.client.operation.duration"]
    assert list(duration.explicit_bounds) == list(telemetry.DURATION_BUCKETS)
    assert dict(duration.attributes) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini-2024"}
    # server.address/port (Recommended) are on the span, not the labels: (model, provider,
    # status) keep each record's cost in the SDK down (docs/performance.md M8)
    assert points["gen_ai.client.operation.time_to_first_chunk"][0].count == 1
    assert points["gen_ai.client.operation.time_per_output_chunk"][0].count == 1
    assert "gen_ai.server.request.duration" not in points  # not the server


async def test_content_capture_on_records_the_messages_in_the_conventions_shape(
        tracer_provider: TracerProvider, spans: InMemorySpanExporter) -> None:
    top = layer(Scripted(), tracer_provider, capture=True)
    req = request()
    req.tools = [{"type": "function", "function": {"name": "capital", "description": "d",
                                                   "parameters": {"type": "object"}}}]
    _ = [c async for c in top.stream_request(req)]
    attrs = dict(spans.get_finished_spans()[0].attributes or {})
    assert json.loads(str(attrs["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "Capital of France?"}]}]
    assert json.loads(str(attrs["gen_ai.system_instructions"])) == [
        {"type": "text", "content": "Be brief."}]
    assert json.loads(str(attrs["gen_ai.output.messages"])) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Paris"}],
         "finish_reason": "stop"}]
    assert json.loads(str(attrs["gen_ai.tool.definitions"])) == [
        {"type": "function", "name": "capital", "description": "d",
         "parameters": {"type": "object"}}]


async def test_complete_request_is_traced_with_tool_calls_in_the_output(
        tracer_provider: TracerProvider, spans: InMemorySpanExporter) -> None:
    class Calls(Scripted):
        async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
            yield StreamChunk(tool_calls=[ToolCall("capital", {"country": "FR"}, id="c1")],
                              finish_reason="tool_calls",
                              usage=Usage(prompt_tokens=3, completion_tokens=4))

    top = layer(Calls(), tracer_provider, capture=True)
    response = await top.complete_request(request())
    assert response.tool_calls[0].name == "capital"
    (span,) = spans.get_finished_spans()
    attrs = dict(span.attributes or {})
    assert span.name == "chat gpt-4o-mini"
    assert attrs["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert json.loads(str(attrs["gen_ai.output.messages"]))[0]["parts"] == [
        {"type": "tool_call", "id": "c1", "name": "capital", "arguments": {"country": "FR"}}]
    assert "gen_ai.response.time_to_first_chunk" not in attrs  # not a stream


async def test_an_error_sets_error_type_and_the_status(
        tracer_provider: TracerProvider, spans: InMemorySpanExporter,
        meter_provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    err = ProviderStatusError("bad request: key sk-secret123456789012345", status_code=400,
                              provider="openai")
    top = layer(Scripted(errors=[err, err]), tracer_provider, meter_provider)
    with pytest.raises(ProviderStatusError):
        _ = [c async for c in top.stream_request(request())]
    with pytest.raises(ProviderStatusError):
        await top.complete_request(request())
    for span in spans.get_finished_spans():
        assert span.attributes["error.type"] == "ProviderStatusError"  # type: ignore[index]
        assert span.status.status_code is StatusCode.ERROR
    (duration,) = metric_points(reader)["gen_ai.client.operation.duration"]
    assert duration.attributes["error.type"] == "ProviderStatusError"
    assert duration.count == 2
    assert "gen_ai.client.token.usage" not in metric_points(reader)


async def test_a_stream_closed_early_ends_the_span_without_an_error(
        tracer_provider: TracerProvider, spans: InMemorySpanExporter) -> None:
    top = layer(Scripted(("a", "b", "c")), tracer_provider)
    stream = top.stream_request(request())
    assert (await anext(stream)).content == "a"
    await stream.aclose()
    (span,) = spans.get_finished_spans()
    assert span.attributes["modelplex.stopped_early"] is True  # type: ignore[index]
    assert span.status.status_code is StatusCode.UNSET


async def test_embeddings_span(tracer_provider: TracerProvider, spans: InMemorySpanExporter,
                               meter_provider: MeterProvider,
                               reader: InMemoryMetricReader) -> None:
    top = layer(Scripted(name="ollama", base_url="http://gpu-box:11434"), tracer_provider,
                meter_provider)
    vectors = await top.embed(["a", "b"], model="nomic-embed-text",
                              options={"encoding_format": "float"})
    assert len(vectors) == 2
    (span,) = spans.get_finished_spans()
    assert span.name == "embeddings nomic-embed-text"
    assert span.kind is SpanKind.CLIENT
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "embeddings"
    assert attrs["gen_ai.provider.name"] == "ollama"
    assert attrs["gen_ai.embeddings.dimension.count"] == 3
    assert attrs["gen_ai.request.encoding_formats"] == ("float",)
    assert attrs["server.address"] == "gpu-box" and attrs["server.port"] == 11434
    (duration,) = metric_points(reader)["gen_ai.client.operation.duration"]
    assert duration.attributes["gen_ai.operation.name"] == "embeddings"


async def test_an_in_process_model_is_internal(tracer_provider: TracerProvider,
                                               spans: InMemorySpanExporter) -> None:
    top = layer(Scripted(name="llamacpp"), tracer_provider)
    _ = [c async for c in top.stream_request(request("smollm2"))]
    (span,) = spans.get_finished_spans()
    assert span.kind is SpanKind.INTERNAL
    assert span.attributes["gen_ai.provider.name"] == "llamacpp"  # type: ignore[index]
    assert span.attributes["modelplex.cost"] == 0.0  # type: ignore[index]


async def test_the_server_adds_the_server_metrics(
        tracer_provider: TracerProvider, meter_provider: MeterProvider,
        reader: InMemoryMetricReader) -> None:
    top = layer(Scripted(), tracer_provider, meter_provider, caller="server")
    _ = [c async for c in top.stream_request(request())]
    points = metric_points(reader)
    assert points["gen_ai.server.request.duration"][0].count == 1
    (ttft,) = points["gen_ai.server.time_to_first_token"]
    assert list(ttft.explicit_bounds) == list(telemetry.TTFT_BUCKETS)


async def test_a_cache_hit_is_marked_and_counted(
        tracer_provider: TracerProvider, spans: InMemorySpanExporter,
        meter_provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    from modelplex.caches import MemoryCache
    from modelplex.caching import CachedProvider

    top = layer(CachedProvider(Scripted(), MemoryCache()), tracer_provider, meter_provider)
    for _ in range(2):
        _ = [c async for c in top.stream_request(request(temperature=0))]
    miss, hit = spans.get_finished_spans()
    assert miss.attributes["modelplex.cache_hit"] is False  # type: ignore[index]
    assert hit.attributes["modelplex.cache_hit"] is True  # type: ignore[index]
    assert hit.attributes["modelplex.cost"] == 0.0  # type: ignore[index]
    assert hit.attributes["server.address"] == "api.openai.com"  # type: ignore[index]
    points = metric_points(reader)
    assert [p.value for p in points["modelplex.cache.hits"]] == [1]
    assert {p.attributes["gen_ai.token.type"]: p.count
            for p in points["gen_ai.client.token.usage"]} == {"input": 1, "output": 1}


async def test_telemetry_that_fails_never_fails_the_call(
        tracer_provider: TracerProvider, spans: InMemorySpanExporter,
        caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def cost(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("price list unreadable")

    top = TelemetryLayer(Scripted(), tracer_provider=tracer_provider,
                         prices=Broken())  # type: ignore[arg-type]
    chunks = [c async for c in top.stream_request(request())]
    assert "".join(c.content for c in chunks) == "Paris"
    assert (await top.complete_request(request())).content == "Paris"
    assert len(spans.get_finished_spans()) == 2  # ended all the same
    assert "telemetry failed (RuntimeError: price list unreadable)" in caplog.text


# -- nesting -----------------------------------------------------------------------------------
async def test_router_attempts_are_child_spans_with_the_reason_they_failed(
        global_tracing: TracerProvider, spans: InMemorySpanExporter) -> None:
    from modelplex.config import RetryConfig

    flaky = Scripted(name="openai", errors=[RateLimitError("slow down", status_code=429,
                                                          provider="openai")])
    good = Scripted(name="anthropic", base_url="https://api.anthropic.com")
    router = Router("smart", [Deployment(flaky, "gpt-4o-mini", name="primary"),
                              Deployment(good, "claude-haiku", name="backup")],
                    strategy="round_robin", retries=RetryConfig(attempts=3, backoff=0))
    top = layer(router, global_tracing)
    _ = [c async for c in top.stream_request(request("smart"))]
    finished = {s.name: s for s in spans.get_finished_spans()}
    chat = finished["chat smart"]
    first = finished["modelplex.attempt primary"]
    second = finished["modelplex.attempt backup"]
    assert first.parent is not None and first.parent.span_id == chat.context.span_id
    assert second.parent is not None and second.parent.span_id == chat.context.span_id
    assert first.attributes["error.type"] == "RateLimitError"  # type: ignore[index]
    assert first.attributes["http.response.status_code"] == 429  # type: ignore[index]
    assert first.status.status_code is StatusCode.ERROR
    assert second.status.status_code is StatusCode.UNSET
    assert second.attributes["modelplex.route.attempt"] == 2  # type: ignore[index]
    attrs = dict(chat.attributes or {})
    assert attrs["gen_ai.provider.name"] == "anthropic"  # who answered
    assert attrs["modelplex.route.deployment"] == "backup"
    assert attrs["modelplex.route.attempts"] == 2
    # non-streaming through the router: the attempt spans nest the same way
    spans.clear()
    flaky.errors.append(RateLimitError("slow down", status_code=429, provider="openai"))
    await top.complete_request(request("smart"))
    names = [s.name for s in spans.get_finished_spans()]
    assert names.count("chat smart") == 1 and len(names) >= 2


async def test_a_router_of_one_deployment_shows_attempts_only_after_a_failure(
        global_tracing: TracerProvider, spans: InMemorySpanExporter) -> None:
    from modelplex.config import RetryConfig

    provider = Scripted(base_url="http://10.0.0.5:8080/v1")
    router = Router("openai:gpt-4o-mini", [Deployment(provider, "gpt-4o-mini")],
                    retries=RetryConfig(attempts=3, backoff=0))
    top = layer(router, global_tracing)
    _ = [c async for c in top.stream_request(request())]
    (chat,) = spans.get_finished_spans()  # a plain success: one span
    assert chat.attributes["server.address"] == "10.0.0.5"  # type: ignore[index]
    assert chat.attributes["server.port"] == 8080  # type: ignore[index]
    spans.clear()
    provider.errors.append(ProviderStatusError("busy", status_code=503, provider="openai"))
    _ = [c async for c in top.stream_request(request())]
    names = [s.name for s in spans.get_finished_spans()]
    assert names == ["modelplex.attempt openai:gpt-4o-mini"] * 2 + ["chat gpt-4o-mini"]
    first, second, _chat = spans.get_finished_spans()
    assert first.attributes["error.type"] == "ProviderStatusError"  # type: ignore[index]
    assert second.attributes["modelplex.route.attempt"] == 2  # type: ignore[index]
    assert second.attributes["server.address"] == "10.0.0.5"  # type: ignore[index]
    assert first.start_time < second.start_time  # type: ignore[operator]
    # a plain provider:model (Router.single) asked whole, not streamed: the same spans
    plain = layer(Router.single(provider, "gpt-4o-mini",
                                retries=RetryConfig(attempts=3, backoff=0)), global_tracing)
    spans.clear()
    await plain.complete_request(request())
    assert [s.name for s in spans.get_finished_spans()] == ["chat gpt-4o-mini"]
    spans.clear()
    provider.errors.append(ProviderStatusError("busy", status_code=503, provider="openai"))
    await plain.complete_request(request())
    names = [s.name for s in spans.get_finished_spans()]
    assert names == ["modelplex.attempt openai:gpt-4o-mini"] * 2 + ["chat gpt-4o-mini"]
    first, second, _chat = spans.get_finished_spans()
    assert first.attributes["error.type"] == "ProviderStatusError"  # type: ignore[index]
    assert second.attributes["modelplex.route.attempt"] == 2  # type: ignore[index]


async def test_a_fallback_shows_as_attempts_on_the_fallback(
        global_tracing: TracerProvider, spans: InMemorySpanExporter) -> None:
    from modelplex.config import RetryConfig

    down = ProviderStatusError("down", status_code=503, provider="openai")
    primary = Router("primary", [Deployment(Scripted(errors=[down]), "gpt-4o", name="a")],
                     retries=RetryConfig(attempts=1, backoff=0), fallbacks=[
                         Router("spare", [Deployment(Scripted(name="ollama"), "llama3.2",
                                                     name="b")])])
    top = layer(primary, global_tracing)
    _ = [c async for c in top.stream_request(request("primary"))]
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert finished["modelplex.attempt a"].attributes["error.type"] == "ProviderStatusError"
    assert finished["chat primary"].attributes["modelplex.route.fallback"] == "spare"
    assert finished["chat primary"].attributes["modelplex.cost"] == 0.0  # ollama: local


async def test_no_sdk_means_no_layer_and_no_helper_span() -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    ctx = LayerContext(spec="openai:gpt-4o", model="gpt-4o", provider_name="openai")
    assert telemetry_layer(Scripted(), ctx) is None
    with telemetry.tool_span("add") as span:
        assert span is None
    router = Router("r", [Deployment(Scripted(), "m")])
    assert telemetry.start_attempt(router, router.deployments[0], 1) is None


async def test_settings_from_config_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config({"telemetry": {"enabled": True, "capture_content": True}})
    assert TelemetrySettings.from_config(config, {}) == TelemetrySettings(True, True)
    assert TelemetrySettings.from_config(config, {"MODELPLEX_OTEL": "0"}).enabled is False
    assert TelemetrySettings.from_config(
        config, {"MODELPLEX_OTEL_CAPTURE_CONTENT": "no"}).capture_content is False
    assert TelemetrySettings.from_config(None, {"MODELPLEX_OTEL": "1"}).enabled is True
    assert TelemetrySettings.from_config(None, {}) == TelemetrySettings(None, False)
    with pytest.raises(ConfigurationError, match="MODELPLEX_OTEL='maybe'"):
        TelemetrySettings.from_config(None, {"MODELPLEX_OTEL": "maybe"})
    with pytest.raises(ConfigurationError, match=r"telemetry\.colour: unknown key"):
        TelemetrySettings.from_config(parse_config({"telemetry": {"colour": 1}}), {})
    with pytest.raises(ConfigurationError, match=r"telemetry\.enabled must be true or false"):
        TelemetrySettings.from_config(parse_config({"telemetry": {"enabled": "yes"}}), {})
    # MODELPLEX_OTEL=1 builds the layer even before an SDK is configured
    monkeypatch.setenv("MODELPLEX_OTEL", "1")
    ctx = LayerContext(spec=None, model="m", provider_name="openai")
    assert isinstance(telemetry_layer(Scripted(), ctx), TelemetryLayer)
    monkeypatch.setenv("MODELPLEX_OTEL", "0")
    assert telemetry_layer(Scripted(), ctx) is None


async def test_a_meter_provider_added_turns_the_layer_on(
        meter_provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    ctx = LayerContext(spec=None, model="m", provider_name="openai", caller="server")
    telemetry.add_meter_provider(meter_provider)
    try:
        top = telemetry_layer(Scripted(), ctx)
        assert isinstance(top, TelemetryLayer)
        _ = [c async for c in top.stream_request(request())]
    finally:
        telemetry.remove_meter_provider(meter_provider)
    assert metric_points(reader)["gen_ai.server.request.duration"][0].count == 1
    assert telemetry_layer(Scripted(), ctx) is None


async def test_tool_and_structured_spans_nest_under_the_current_span(
        global_tracing: TracerProvider, spans: InMemorySpanExporter) -> None:
    from modelplex.tools import ToolBox

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    box = ToolBox()
    box.add([add])
    tracer = global_tracing.get_tracer("test")
    with tracer.start_as_current_span("turn") as turn:
        result = await box.run_call(ToolCall("add", {"a": 1, "b": 2}, id="call_1"))
        failed = await box.run_call(ToolCall("add", {"a": 1}, id="call_2"))
    assert result.content == "3" and failed.error
    tool_spans = [s for s in spans.get_finished_spans() if s.name == "execute_tool add"]
    assert len(tool_spans) == 2
    ok, bad = tool_spans
    assert ok.kind is SpanKind.INTERNAL
    assert ok.parent is not None and ok.parent.span_id == turn.get_span_context().span_id
    assert dict(ok.attributes or {}) == {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "add",
        "gen_ai.tool.type": "function", "gen_ai.tool.call.id": "call_1",
        "gen_ai.tool.description": "Add two numbers."}
    assert bad.attributes["error.type"] == "ValidationError"  # type: ignore[index]


# -- OTLP over HTTP, decoded with opentelemetry-proto --------------------------------------------
async def test_otlp_http_export_reaches_a_collector_in_the_wire_format() -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    received: list[bytes] = []

    async def collect(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        received.append(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    async with serve_app(app) as url:
        provider = TracerProvider()
        exporter = OTLPSpanExporter(endpoint=url + "/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(exporter))
        top = layer(Scripted(), provider)
        _ = [c async for c in top.stream_request(request())]
        # the exporter is synchronous (requests): flush it off the event loop
        await asyncio.to_thread(provider.force_flush)
        await asyncio.to_thread(provider.shutdown)
    assert received
    decoded = ExportTraceServiceRequest()
    decoded.ParseFromString(received[0])
    (span,) = [s for rs in decoded.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert span.name == "chat gpt-4o-mini"
    assert span.kind == span.SPAN_KIND_CLIENT
    values = {a.key: a.value for a in span.attributes}
    assert values["gen_ai.provider.name"].string_value == "openai"
    assert values["gen_ai.usage.input_tokens"].int_value == 12
    reasons = values["gen_ai.response.finish_reasons"].array_value.values
    assert [v.string_value for v in reasons] == ["stop"]
    assert decoded.resource_spans[0].scope_spans[0].scope.name == "modelplex"


# -- no SDK: the layer's absence is the cost ------------------------------------------------
def test_import_modelplex_imports_no_opentelemetry() -> None:
    import subprocess
    import sys

    code = ("import sys, modelplex.manager, modelplex.routing, modelplex.tools;"
            "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', "
            "'genai_prices'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.strip()
    assert out == "[]"



# -- through ChatManager: structured re-ask and the tool loop ------------------------------------
class Turns(Provider):
    """Answers each request with the next scripted answer (a text or tool calls)."""

    name = "openai"
    capabilities: ClassVar[Capabilities] = Capabilities(tools=True)

    def __init__(self, answers: list[Any]) -> None:
        self.answers = list(answers)

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        answer = self.answers.pop(0)
        usage = Usage(prompt_tokens=1_000_000, completion_tokens=0)
        if isinstance(answer, str):
            yield StreamChunk(content=answer, finish_reason="stop", usage=usage)
        else:
            yield StreamChunk(tool_calls=answer, finish_reason="tool_calls", usage=usage)


def turns_plugins(answers: list[Any]) -> Any:
    from modelplex import hookimpl
    from modelplex.plugins import Plugins

    class Plugin:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(lambda **kw: Turns(answers), name="openai")

    plugins = Plugins(load_entrypoints=False)
    plugins.register(Plugin(), name="turns")
    return plugins


async def test_a_structured_output_reask_is_a_second_attempt_span(
        global_tracing: TracerProvider, spans: InMemorySpanExporter) -> None:
    from modelplex.manager import ChatManager

    plugins = turns_plugins(["not json at all", '{"city": "Paris"}'])
    async with ChatManager("openai:gpt-4o-mini", plugins=plugins) as chat:
        result = await chat.get_structured("Where?", {"type": "object", "required": ["city"],
                                                      "properties": {"city": {"type": "string"}}},
                                           mode="prompted")
    assert result.value == {"city": "Paris"} and result.attempts == 2
    attempts = [s for s in spans.get_finished_spans() if s.name == "modelplex.structured_output"]
    assert [s.attributes["modelplex.attempt"] for s in attempts] == [1, 2]  # type: ignore[index]
    assert attempts[0].attributes["modelplex.valid"] is False  # type: ignore[index]
    assert "modelplex.valid" not in (attempts[1].attributes or {})


async def test_the_tool_loop_costs_every_request() -> None:
    from modelplex.manager import ChatManager

    def capital(country: str) -> str:
        """The capital of a country."""
        return "Paris"

    plugins = turns_plugins([[ToolCall("capital", {"country": "France"}, id="c1")],
                             "It is Paris."])
    async with ChatManager("openai:gpt-4o-mini", plugins=plugins) as chat:
        chat.enable_function_calling([capital])
        meta = await chat.get_response_with_meta("Capital of France?")
    assert meta.content == "It is Paris." and len(meta.steps) == 1
    assert meta.cost is not None and meta.cost.known
    assert meta.cost.amount == pytest.approx(2 * 0.15)  # two requests of 1M input tokens


# -- the request path: every stack gets the layer through register_layers ------------------------
def _chain(provider: Any) -> list[str]:
    names = []
    while provider is not None:
        names.append(type(provider).__name__)
        provider = getattr(provider, "wrapped", None)
    return names


async def test_the_request_path_has_the_layer_only_when_telemetry_is_on(
        monkeypatch: pytest.MonkeyPatch, spans: InMemorySpanExporter,
        tracer_provider: TracerProvider) -> None:
    from opentelemetry.util._once import Once

    from modelplex.pipeline import open_model

    plugins = turns_plugins([])
    async with await open_model("openai:gpt-4o-mini", plugins=plugins,
                                config=parse_config({})) as lease:
        assert "TelemetryLayer" not in _chain(lease.provider)  # no SDK: no layer
    old = trace._TRACER_PROVIDER
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(tracer_provider)
    try:
        async with await open_model("openai:gpt-4o-mini", plugins=plugins,
                                    config=parse_config({})) as lease:
            chain = _chain(lease.provider)
            assert chain.index("TelemetryLayer") < chain.index("Router")
        monkeypatch.setenv("MODELPLEX_OTEL", "0")
        async with await open_model("openai:gpt-4o-mini", plugins=plugins,
                                    config=parse_config({})) as lease:
            assert "TelemetryLayer" not in _chain(lease.provider)
        off = parse_config({"telemetry": {"enabled": False}})
        monkeypatch.delenv("MODELPLEX_OTEL")
        async with await open_model("openai:gpt-4o-mini", plugins=plugins,
                                    config=off) as lease:
            assert "TelemetryLayer" not in _chain(lease.provider)
    finally:
        trace._TRACER_PROVIDER = old
        trace._TRACER_PROVIDER_SET_ONCE = Once()


async def test_chat_manager_calls_are_traced_with_the_conversation_and_cost(
        global_tracing: TracerProvider, spans: InMemorySpanExporter, tmp_path: Any) -> None:
    from modelplex.manager import ChatManager
    from modelplex.store.logs import LogStore

    plugins = turns_plugins(["Paris.", "Rome."])
    async with ChatManager("openai:gpt-4o-mini", plugins=plugins, conversation=True,
                           logs=tmp_path / "logs.db") as chat:
        _ = [c async for c in chat.send_message("Capital of France?")]
        meta = await chat.get_response_with_meta("And of Italy?")
        cid = chat.conversation_id
    chats = [s for s in spans.get_finished_spans() if s.name == "chat gpt-4o-mini"]
    assert len(chats) == 2
    for span in chats:
        attrs = dict(span.attributes or {})
        assert attrs["gen_ai.conversation.id"] == cid
        assert attrs["modelplex.cost"] == pytest.approx(0.15)
        assert span.kind is SpanKind.CLIENT
    assert meta.cost is not None and meta.cost.amount == pytest.approx(0.15)
    # a cleared history is a new conversation: the next span says so
    spans.clear()
    async with ChatManager("openai:gpt-4o-mini", plugins=turns_plugins(["A.", "B."]),
                           conversation=True, logs=tmp_path / "logs.db") as chat:
        await chat.get_response_with_meta("One?")
        first = chat.conversation_id
        chat.clear_history()
        await chat.get_response_with_meta("Two?")
        second = chat.conversation_id
    assert first != second
    ids = [s.attributes["gen_ai.conversation.id"]  # type: ignore[index]
           for s in spans.get_finished_spans() if s.name == "chat gpt-4o-mini"]
    assert ids == [first, second]
    store = LogStore(tmp_path / "logs.db")
    try:
        assert [e.cost for e in store.recent(limit=4)] == [pytest.approx(0.15)] * 4
    finally:
        store.close()


async def test_a_plugins_tracing_layer_goes_next_to_modelplexs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from modelplex import hookimpl
    from modelplex.pipeline import open_model
    from modelplex.wrapping import WrappingProvider

    class Mine(WrappingProvider):
        pass

    class Plugin:
        @hookimpl
        def register_layers(self, register: Any) -> None:
            register(lambda inner, ctx: Mine(inner), name="mine", after="telemetry")

    monkeypatch.setenv("MODELPLEX_OTEL", "1")
    plugins = turns_plugins([])
    plugins.register(Plugin(), name="my-tracing")
    async with await open_model("openai:gpt-4o-mini", plugins=plugins,
                                config=parse_config({})) as lease:
        assert _chain(lease.provider) == ["TelemetryLayer", "Mine", "Router"]
