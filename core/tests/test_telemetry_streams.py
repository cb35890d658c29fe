"""Telemetry of streamed structured output (``stream_structured``), with the real
OpenTelemetry SDK and its in-memory exporter: one span per attempt, as ``get_structured``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
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
def spans() -> Iterator[InMemorySpanExporter]:
    """An in-memory exporter on the global tracer provider for the test (reset after it)."""
    from opentelemetry.util._once import Once

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    old = trace._TRACER_PROVIDER
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(provider)
    yield exporter
    trace._TRACER_PROVIDER = old
    trace._TRACER_PROVIDER_SET_ONCE = Once()


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
