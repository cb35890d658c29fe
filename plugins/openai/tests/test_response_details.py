"""The upstream's response id and prompt-cache tokens, from replayed OpenAI traffic, on the
final chunk, the whole response and the telemetry span (the real OpenTelemetry SDK)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from modelplex.chunks import Usage
from modelplex.cost import PriceBook
from modelplex.provider import ChatRequest, CommonOptions
from modelplex.telemetry import TelemetryLayer
from modelplex.types import ChatMessage
from modelplex_openai.provider import OpenAIProvider
from modelplex_openai.wire import OpenAIUsage, usage_from

BASE = "https://api.openai.test/v1"
CHAT = BASE + "/chat/completions"
SSE = {"Content-Type": "text/event-stream"}
DATA = Path(__file__).parent / "data"
RECORDED_ID = "chatcmpl-ABfw1e5abtU8OwGr15vOreYVb2MiF"
# usage with prompt-cache details, as OpenAI documents it (prompt caching guide)
CACHED_USAGE = {"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
                "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 64, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0}}


def cached_stream() -> str:
    """The recorded JSON stream with the usage event of a prompt-cache hit."""
    events = (DATA / "openai_json_stream.sse").read_text(encoding="utf-8").split("\n\n")
    out = []
    for event in events:
        if event.startswith("data: {") and '"usage"' in event:
            obj = json.loads(event[6:])
            obj["usage"] = CACHED_USAGE
            event = "data: " + json.dumps(obj)
        out.append(event)
    return "\n\n".join(out)


def request() -> ChatRequest:
    return ChatRequest(model="gpt-4o", messages=[ChatMessage.user("Weather in SF as JSON?")],
                       options=CommonOptions())


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def traced(spans: InMemorySpanExporter) -> tuple[OpenAIProvider, TelemetryLayer]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    provider = OpenAIProvider(base_url=BASE, api_key="sk-test-0123456789abcdef")
    prices = PriceBook({"openai:*": {"input": 2.5, "output": 10.0, "cache_read": 1.25}},
                       use_genai_prices=False)
    return provider, TelemetryLayer(provider, tracer_provider=tracer_provider, prices=prices)


def test_usage_details_become_cache_read_and_reasoning_tokens() -> None:
    usage = usage_from(CACHED_USAGE, None, [], 0)
    assert isinstance(usage, OpenAIUsage)
    assert (usage.prompt_tokens, usage.completion_tokens) == (2006, 300)
    assert (usage.cache_read_tokens, usage.reasoning_tokens) == (1920, 64)
    # no details (or zeros): the plain Usage, equal to what it was before
    plain = usage_from({"prompt_tokens": 79, "completion_tokens": 14,
                        "completion_tokens_details": {"reasoning_tokens": 0}}, None, [], 0)
    assert plain == Usage(prompt_tokens=79, completion_tokens=14)


async def test_a_stream_ends_with_the_response_id_and_cache_tokens_on_the_span(
        mock: Any, spans: InMemorySpanExporter) -> None:
    mock.post(CHAT, body=cached_stream(), headers=SSE)
    provider, layer = traced(spans)
    try:
        chunks = [c async for c in layer.stream_request(request())]
    finally:
        await provider.aclose()
    assert chunks[-1].response_id == RECORDED_ID
    assert isinstance(chunks[-1].usage, OpenAIUsage)
    assert chunks[-1].usage.cache_read_tokens == 1920
    (span,) = spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.response.id"] == RECORDED_ID
    assert attributes["gen_ai.usage.input_tokens"] == 2006
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 1920
    assert attributes["gen_ai.usage.reasoning.output_tokens"] == 64
    # cache reads at their own price: 86 plain input + 1920 cached + 300 output tokens
    expected = (86 * 2.5 + 1920 * 1.25 + 300 * 10.0) / 1e6
    assert attributes["modelplex.cost"] == pytest.approx(expected)


async def test_a_whole_answer_carries_the_response_id_to_the_span(
        mock: Any, spans: InMemorySpanExporter) -> None:
    mock.post(CHAT, payload={
        "id": RECORDED_ID, "object": "chat.completion", "created": 1727346169,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "{}",
                                             "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": CACHED_USAGE})
    provider, layer = traced(spans)
    try:
        response = await layer.complete_request(request())
    finally:
        await provider.aclose()
    assert response.response_id == RECORDED_ID
    assert isinstance(response.usage, OpenAIUsage)
    (span,) = spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.response.id"] == RECORDED_ID
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 1920


async def test_a_server_without_ids_gives_none(mock: Any) -> None:
    stream = (DATA / "openai_json_stream.sse").read_text(encoding="utf-8").replace(
        f'"id":"{RECORDED_ID}",', "")
    mock.post(CHAT, body=stream, headers=SSE)
    provider = OpenAIProvider(base_url=BASE, api_key="sk-test-0123456789abcdef")
    try:
        chunks = [c async for c in provider.stream_request(request())]
    finally:
        await provider.aclose()
    assert chunks[-1].response_id is None
    assert chunks[-1].usage == Usage(prompt_tokens=79, completion_tokens=14)
