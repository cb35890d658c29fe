"""Telemetry of streamed structured output (``stream_structured``), with the real
OpenTelemetry SDK and its in-memory exporter: one span per attempt, as ``get_structured``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from modelplex import hookimpl
from modelplex.chunks import StreamChunk, Usage
from modelplex.errors import ServerError
from modelplex.manager import ChatManager
from modelplex.plugins import Plugins
from modelplex.provider import Capabilities, ChatRequest, Provider

SCHEMA = {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}


class Pieces(Provider):
    """Streams each scripted answer in pieces of four characters; an exception fails."""

    name = "openai"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        pieces = [answer[i:i + 4] for i in range(0, len(answer), 4)] or [""]
        for piece in pieces[:-1]:
            yield StreamChunk(content=piece)
        yield StreamChunk(content=pieces[-1], finish_reason="stop",
                          usage=Usage(prompt_tokens=5, completion_tokens=5))


def plugins_for(answers: list[Any]) -> Plugins:
    class Plugin:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(lambda **kw: Pieces(answers), name="openai")

    plugins = Plugins(load_entrypoints=False)
    plugins.register(Plugin(), name="pieces")
    return plugins


@pytest.fixture
def spans(global_spans: InMemorySpanExporter) -> InMemorySpanExporter:
    """An in-memory exporter on the global tracer provider for the test (the root
    conftest's)."""
    return global_spans


async def test_each_streamed_attempt_is_a_span_with_the_model_call_under_it(
        spans: InMemorySpanExporter) -> None:
    plugins = plugins_for(["not json at all", '{"city": "Paris"}'])
    async with ChatManager("openai:gpt-4o-mini", plugins=plugins) as chat:
        updates = [u async for u in chat.stream_structured("Where?", SCHEMA, mode="prompted")]
    assert updates[-1].done and updates[-1].value == {"city": "Paris"}
    finished = spans.get_finished_spans()
    attempts = [s for s in finished if s.name == "modelplex.structured_output"]
    assert [s.attributes["modelplex.attempt"] for s in attempts] == [1, 2]  # type: ignore[index]
    assert attempts[0].attributes["modelplex.valid"] is False  # type: ignore[index]
    assert "modelplex.valid" not in (attempts[1].attributes or {})
    assert all(s.attributes["modelplex.streamed"] is True for s in attempts)  # type: ignore[index]
    calls = [s for s in finished if s.name == "chat gpt-4o-mini"]
    assert len(calls) == 2
    for call, attempt in zip(calls, attempts, strict=True):
        assert call.parent is not None
        assert call.parent.span_id == attempt.get_span_context().span_id
        assert call.end_time is not None and attempt.end_time is not None
        assert call.end_time <= attempt.end_time
    # the reader's own code never ran inside an attempt's span
    assert not trace.get_current_span().get_span_context().is_valid


async def test_a_failed_streamed_attempt_has_the_error_and_a_reader_that_stops_ends_it(
        spans: InMemorySpanExporter) -> None:
    error = ServerError("upstream down", status_code=500, provider="openai")
    async with ChatManager("openai:gpt-4o-mini", plugins=plugins_for([error]),
                           retries=0) as chat:
        with pytest.raises(ServerError):
            _ = [u async for u in chat.stream_structured("Where?", SCHEMA, mode="prompted")]
    (attempt,) = [s for s in spans.get_finished_spans()
                  if s.name == "modelplex.structured_output"]
    assert attempt.status.status_code is StatusCode.ERROR
    assert attempt.attributes["error.type"] == "ServerError"  # type: ignore[index]
    spans.clear()
    async with ChatManager("openai:gpt-4o-mini", plugins=plugins_for(['{"city": "Paris"}']),
                           ) as chat:
        stream = chat.stream_structured("Where?", SCHEMA, mode="prompted")
        await anext(stream)
        await stream.aclose()
    (attempt,) = [s for s in spans.get_finished_spans()
                  if s.name == "modelplex.structured_output"]
    assert attempt.status.status_code is StatusCode.UNSET


# -- the per-request work kept small: what a span and the metrics still say ---------------------
class Once(Provider):
    """One chunk per answer; fails first with ``errors``."""

    name = "openai"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, errors: list[Exception] | None = None) -> None:
        self.errors = errors or []
        self.base_url = "http://10.0.0.5:8080/v1"

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        if self.errors:
            raise self.errors.pop(0)
        yield StreamChunk(content="ok", finish_reason="stop", model=request.model,
                          usage=Usage(prompt_tokens=3, completion_tokens=1))


async def test_a_plain_model_answered_at_once_has_no_route_attributes_a_retried_one_has(
        spans: InMemorySpanExporter) -> None:
    from modelplex.config import RetryConfig
    from modelplex.errors import ProviderStatusError
    from modelplex.provider import CommonOptions
    from modelplex.routing import Deployment, Router
    from modelplex.telemetry import TelemetryLayer
    from modelplex.types import ChatMessage

    provider = Once()
    router = Router("openai:m", [Deployment(provider, "m")],
                    retries=RetryConfig(attempts=3, backoff=0))
    top = TelemetryLayer(router)
    request = ChatRequest(model="m", messages=[ChatMessage.user("hi")],
                          options=CommonOptions(temperature=0.5))
    _ = [c async for c in top.stream_request(request)]
    (chat,) = spans.get_finished_spans()
    attributes = dict(chat.attributes or {})
    assert not any(k.startswith("modelplex.route.") for k in attributes)
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.temperature"] == 0.5
    spans.clear()
    provider.errors.append(ProviderStatusError("busy", status_code=503, provider="openai"))
    _ = [c async for c in top.stream_request(request)]
    chat = spans.get_finished_spans()[-1]
    assert chat.attributes["modelplex.route.attempts"] == 2  # type: ignore[index]
    assert chat.attributes["modelplex.route.deployment"] == "openai:m"  # type: ignore[index]


async def test_metric_labels_follow_each_model_and_error_across_stacks() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from modelplex.errors import ProviderStatusError
    from modelplex.provider import CommonOptions
    from modelplex.telemetry import TelemetryLayer
    from modelplex.types import ChatMessage

    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    try:
        failing = Once([ProviderStatusError("busy", status_code=503, provider="openai")])
        for provider, model in ((Once(), "a"), (Once(), "b"), (Once(), "a"), (failing, "a")):
            top = TelemetryLayer(provider, meter_provider=meters)
            request = ChatRequest(model=model, messages=[ChatMessage.user("hi")],
                                  options=CommonOptions())
            with contextlib.suppress(ProviderStatusError):
                _ = [c async for c in top.stream_request(request)]
        data = reader.get_metrics_data()
        assert data is not None
        points = {}
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    points[metric.name] = list(metric.data.data_points)
    finally:
        meters.shutdown()
    durations = {(p.attributes["gen_ai.request.model"], p.attributes.get("error.type")): p.count
                 for p in points["gen_ai.client.operation.duration"]}
    assert durations == {("a", None): 2, ("b", None): 1, ("a", "ProviderStatusError"): 1}
    tokens = sorted((p.attributes["gen_ai.request.model"], p.attributes["gen_ai.token.type"],
                     p.sum) for p in points["gen_ai.client.token.usage"])
    assert tokens == [("a", "input", 6), ("a", "output", 2), ("b", "input", 3),
                      ("b", "output", 1)]


# -- over a router the layer does not wrap the stream: the router reports to it ----------------
class Chunks(Provider):
    """``n`` chunks; ``fail_after``: raise a server error after that many."""

    name = "openai"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, n: int, fail_after: int | None = None) -> None:
        self.n, self.fail_after = n, fail_after

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        for i in range(self.n):
            if i == self.fail_after:
                raise ServerError("upstream broke", status_code=500, provider="openai")
            last = i == self.n - 1
            yield StreamChunk(content="x", finish_reason="stop" if last else None,
                              model=request.model if last else None,
                              usage=Usage(prompt_tokens=3, completion_tokens=self.n)
                              if last else None)


async def test_over_a_router_the_stream_is_the_routers_own_and_the_span_still_ends(
        spans: InMemorySpanExporter) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from modelplex.config import RetryConfig
    from modelplex.provider import CommonOptions
    from modelplex.routing import Deployment, Router
    from modelplex.telemetry import TelemetryLayer
    from modelplex.types import ChatMessage

    def top(provider: Provider, meters: Any = None) -> TelemetryLayer:
        router = Router("openai:m", [Deployment(provider, "m")],
                        retries=RetryConfig(attempts=1, backoff=0))
        return TelemetryLayer(router, meter_provider=meters)

    request = ChatRequest(model="m", messages=[ChatMessage.user("hi")], options=CommonOptions())
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    try:
        stream = top(Chunks(5), meters).stream_request(request)
        # no generator of the layer's between the caller and the router, so no step per chunk
        assert stream.ag_code is Router._routed_stream.__code__  # type: ignore[attr-defined]
        assert len([c async for c in stream]) == 5
        assert trace.get_current_span() is trace.INVALID_SPAN  # its context was detached
        data = reader.get_metrics_data()
    finally:
        meters.shutdown()
    (chat,) = spans.get_finished_spans()
    assert chat.attributes["gen_ai.usage.output_tokens"] == 5  # type: ignore[index]
    assert chat.attributes["gen_ai.response.finish_reasons"] == ("stop",)  # type: ignore[index]
    assert "gen_ai.response.time_to_first_chunk" in (chat.attributes or {})
    assert data is not None
    names = {m.name: list(m.data.data_points) for rm in data.resource_metrics
             for sm in rm.scope_metrics for m in sm.metrics}
    assert names["gen_ai.client.operation.time_per_output_chunk"][0].count == 1
    assert names["gen_ai.client.operation.time_to_first_chunk"][0].count == 1
    # a reader that stops early, an error after the first chunk, an error before any
    spans.clear()
    stream = top(Chunks(5)).stream_request(request)
    await anext(stream)
    await stream.aclose()
    (chat,) = spans.get_finished_spans()
    assert chat.attributes["modelplex.stopped_early"] is True  # type: ignore[index]
    assert chat.status.status_code is StatusCode.UNSET
    for provider in (Chunks(5, fail_after=2), Chunks(5, fail_after=0)):
        spans.clear()
        with pytest.raises(Exception, match="upstream broke"):
            _ = [c async for c in top(provider).stream_request(request)]
        assert trace.get_current_span() is trace.INVALID_SPAN
        chat = next(s for s in spans.get_finished_spans() if s.name == "chat m")
        assert chat.status.status_code is StatusCode.ERROR
        assert "modelplex.stopped_early" not in (chat.attributes or {})
        assert chat.attributes["error.type"]  # type: ignore[index]
