"""Where the telemetry layer's metrics point: exemplars of the model call's own span (with the
real OpenTelemetry SDK, its in-memory span exporter and metric reader), and what layers over
one router share."""

from __future__ import annotations

import gc
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from modelplex.chunks import StreamChunk, Usage
from modelplex.config import RetryConfig
from modelplex.provider import Capabilities, ChatRequest, CommonOptions, Provider
from modelplex.routing import Deployment, Router
from modelplex.telemetry import TelemetryLayer
from modelplex.types import ChatMessage


class Words(Provider):
    """Three chunks, a whole answer and embeddings, from ``https://api.openai.com``."""

    name = "openai"
    capabilities: ClassVar[Capabilities] = Capabilities(embeddings=True)

    def __init__(self) -> None:
        self.base_url = "https://api.openai.com/v1"

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        yield StreamChunk(content="Pa")
        yield StreamChunk(content="r")
        yield StreamChunk(content="is", finish_reason="stop", model=request.model,
                          usage=Usage(prompt_tokens=4, completion_tokens=3))

    async def embed(self, texts: Any, *, model: str, options: Any = None) -> list[list[float]]:
        return [[0.1, 0.2] for _ in texts]


def request() -> ChatRequest:
    return ChatRequest(model="m", messages=[ChatMessage.user("Capital of France?")],
                       options=CommonOptions())


def routed(provider: Provider) -> Router:
    return Router("openai:m", [Deployment(provider, "m")],
                  retries=RetryConfig(attempts=1, backoff=0))


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    return {m.name: list(m.data.data_points) for rm in data.resource_metrics
            for sm in rm.scope_metrics for m in sm.metrics}


async def calls(top: TelemetryLayer) -> None:
    """A stream, a whole answer and embeddings through ``top``."""
    assert len([c async for c in top.stream_request(request())]) == 3
    await top.complete_request(request())
    await top.embed(["a"], model="e")


@pytest.mark.parametrize("over", ["router", "provider"])
async def test_each_record_has_an_exemplar_of_its_own_model_call_span(
        spans: tuple[TracerProvider, InMemorySpanExporter], over: str) -> None:
    # the SDK's default exemplar filter (trace_based): a record made in a sampled span's
    # context keeps an exemplar of it. The layer records in its own span's context, so the
    # exemplar is the model call's span, also with another span current around the call
    # (the server's, a caller's), and also with none (before, a ChatManager's had none).
    tracer_provider, exporter = spans
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    provider = Words()
    top = TelemetryLayer(routed(provider) if over == "router" else provider,
                         tracer_provider=tracer_provider, meter_provider=meters)
    try:
        await calls(top)
        with tracer_provider.get_tracer("caller").start_as_current_span("caller"):
            await calls(top)
        found = points(reader)
    finally:
        meters.shutdown()
    chat_spans = {s.context.span_id for s in exporter.get_finished_spans()
                  if s.name in ("chat m", "embeddings e")}
    assert len(chat_spans) == 6
    for name in ("gen_ai.client.operation.duration", "gen_ai.client.token.usage",
                 "gen_ai.client.operation.time_to_first_chunk",
                 "gen_ai.client.operation.time_per_output_chunk"):
        exemplars = [e for p in found[name] for e in p.exemplars]
        assert exemplars, name
        assert {e.span_id for e in exemplars} <= chat_spans, name
    # every call's duration has its own span's exemplar (one per bucket: they differ)
    durations = [e.span_id for p in found["gen_ai.client.operation.duration"]
                 for e in p.exemplars]
    assert set(durations) <= chat_spans


async def test_an_always_off_exemplar_filter_keeps_none(
        spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    tracer_provider, _ = spans
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader], exemplar_filter=AlwaysOffExemplarFilter())
    top = TelemetryLayer(routed(Words()), tracer_provider=tracer_provider,
                         meter_provider=meters)
    try:
        await calls(top)
        found = points(reader)
    finally:
        meters.shutdown()
    assert sum(p.count for p in found["gen_ai.client.operation.duration"]) == 3
    assert all(not p.exemplars for ps in found.values() for p in ps)


async def test_layers_over_one_router_share_its_shape_and_follow_a_new_tracer_provider(
        spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    # a ChatManager per conversation builds a layer per conversation over the same router:
    # what the layer derives from the router is made once; another tracer provider gets its own
    tracer_provider, exporter = spans
    router = routed(Words())
    first = TelemetryLayer(router, tracer_provider=tracer_provider)
    second = TelemetryLayer(router, tracer_provider=tracer_provider)
    assert first._shape is second._shape
    assert second._server == ("api.openai.com", 443)
    assert second._kind is trace.SpanKind.CLIENT
    other_exporter = InMemorySpanExporter()
    other = TracerProvider()
    other.add_span_processor(SimpleSpanProcessor(other_exporter))
    third = TelemetryLayer(router, tracer_provider=other)
    assert third._shape is not first._shape
    assert len([c async for c in third.stream_request(request())]) == 3
    assert len([c async for c in first.stream_request(request())]) == 3
    assert [s.name for s in other_exporter.get_finished_spans()] == ["chat m"]
    (chat,) = exporter.get_finished_spans()
    assert chat.attributes["server.address"] == "api.openai.com"  # type: ignore[index]
    assert chat.attributes["gen_ai.request.model"] == "m"  # type: ignore[index]
    # the attributes shared by the stack's spans are copied, never changed by a request
    assert "gen_ai.usage.output_tokens" not in first._shape.base("chat", "m")[1]
    other.shutdown()
    # the shape does not keep a closed router alive
    gone = weakref.ref(router)
    del router, first, second, third
    gc.collect()
    assert gone() is None
