"""The Messages API's message id, from replayed Anthropic traffic, on the final chunk, the
whole response and the telemetry span (the real OpenTelemetry SDK), with the cache tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from modelplex.provider import ChatRequest, CommonOptions
from modelplex.telemetry import TelemetryLayer
from modelplex.types import ChatMessage
from modelplex_anthropic.provider import AnthropicProvider

BASE = "https://api.anthropic.test"
MESSAGES_URL = BASE + "/v1/messages"
KEY = "sk-ant-api03-test-abcdefghijklmnopqrstuvwxyz"
SSE = {"Content-Type": "text/event-stream"}
DATA = Path(__file__).parent / "data"
RECORDED_ID = "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK"


def request() -> ChatRequest:
    return ChatRequest(model="claude-3-opus-latest", messages=[ChatMessage.user("Hello")],
                       options=CommonOptions(max_tokens=256))


def traced() -> tuple[AnthropicProvider, TelemetryLayer, InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    provider = AnthropicProvider(base_url=BASE, api_key=KEY)
    return provider, TelemetryLayer(provider, tracer_provider=tracer_provider), spans


async def test_a_stream_ends_with_the_message_id_on_the_span(mock: Any) -> None:
    mock.post(MESSAGES_URL, body=(DATA / "anthropic_basic_stream.sse").read_text("utf-8"),
              headers=SSE)
    provider, layer, spans = traced()
    try:
        chunks = [c async for c in layer.stream_request(request())]
    finally:
        await provider.aclose()
    assert chunks[-1].response_id == RECORDED_ID
    (span,) = spans.get_finished_spans()
    assert (span.attributes or {})["gen_ai.response.id"] == RECORDED_ID


async def test_a_whole_message_carries_its_id_and_cache_tokens_to_the_span(mock: Any) -> None:
    mock.post(MESSAGES_URL, payload={
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
        "model": "claude-3-opus-latest", "content": [{"type": "text", "text": "Hi!"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 21, "cache_creation_input_tokens": 188,
                  "cache_read_input_tokens": 1024, "output_tokens": 393}})
    provider, layer, spans = traced()
    try:
        response = await layer.complete_request(request())
    finally:
        await provider.aclose()
    assert response.response_id == "msg_013Zva2CMHLNnXjNJJKqJ2EF"
    (span,) = spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.response.id"] == "msg_013Zva2CMHLNnXjNJJKqJ2EF"
    assert attributes["gen_ai.usage.input_tokens"] == 21 + 188 + 1024
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 1024
    assert attributes["gen_ai.usage.cache_creation.input_tokens"] == 188
