"""Telemetry through the server: a client's ``traceparent`` is the parent of the provider
span, and ``/metrics`` holds the GenAI metrics after real requests (the request path's
telemetry layer, registered through ``register_layers``)."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

USER = [{"role": "user", "content": "Hi"}]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def spans(global_spans: InMemorySpanExporter) -> InMemorySpanExporter:
    """An in-memory exporter on the global tracer provider for the test (the root
    conftest's)."""
    return global_spans


async def test_a_clients_traceparent_is_the_parent_of_the_provider_span(
        spans: InMemorySpanExporter, serve: Any) -> None:
    server = await serve()
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x",
                                  max_retries=0) as client:
        reply = await client.chat.completions.create(model="fault:fault", messages=USER,
                                                     extra_headers=headers)
        assert reply.choices[0].message.content
        stream = await client.chat.completions.create(model="fault:fault", messages=USER,
                                                      stream=True, extra_headers=headers)
        _ = [c async for c in stream]
    chats = [s for s in spans.get_finished_spans() if s.name == "chat fault"]
    assert len(chats) == 2
    for span in chats:
        assert span.kind is SpanKind.CLIENT
        assert format(span.context.trace_id, "032x") == TRACE_ID
        assert span.parent is not None and span.parent.is_remote
        assert format(span.parent.span_id, "016x") == PARENT_ID
        assert span.attributes["gen_ai.provider.name"] == "fault"  # type: ignore[index]
        assert span.attributes["server.address"] == "127.0.0.1"  # type: ignore[index]
    # without a traceparent the span starts a trace of its own
    spans.clear()
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x",
                                  max_retries=0) as client:
        await client.chat.completions.create(model="fault:fault", messages=USER)
    (span,) = [s for s in spans.get_finished_spans() if s.name == "chat fault"]
    assert span.parent is None


async def test_metrics_hold_the_genai_metrics_after_requests(serve: Any, upstream: Any) -> None:
    server = await serve(models={"fast": "fault:fault"})
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x",
                                  max_retries=0) as client:
        await client.chat.completions.create(model="fast", messages=USER)
        stream = await client.chat.completions.create(
            model="fault:fault", messages=USER, stream=True,
            stream_options={"include_usage": True})
        _ = [c async for c in stream]
        upstream.faults.append("400")
        with pytest.raises(openai.APIError):
            await client.chat.completions.create(model="fault:fault", messages=USER)
    async with aiohttp.ClientSession() as session, \
            session.get(server.url + "/metrics") as resp:
        assert resp.status == 200
        families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    duration = families["gen_ai_client_operation_duration_seconds"]
    counts = {(s.labels["gen_ai_request_model"], s.labels.get("error_type", "")): s.value
              for s in duration.samples if s.name.endswith("_count")}
    assert counts[("fast", "")] == 1 and counts[("fault", "")] == 1
    assert [m for (m, err) in counts if err] == ["fault"]  # the failed one, with error.type
    buckets = [s for s in duration.samples if s.name.endswith("_bucket")]
    assert {s.labels["le"] for s in buckets} >= {"0.01", "81.92", "+Inf"}
    tokens = families["gen_ai_client_token_usage"]
    assert {s.labels["gen_ai_token_type"] for s in tokens.samples} == {"input", "output"}
    assert "gen_ai_server_request_duration_seconds" in families
    ttft = families["gen_ai_server_time_to_first_token_seconds"]
    assert any(s.value == 1 for s in ttft.samples if s.name.endswith("_count"))


async def _done_event(url: str, body: dict[str, Any]) -> dict[str, Any]:
    import json

    done: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session, \
            session.post(url + "/api/chat", json=body) as resp:
        assert resp.status == 200
        name = None
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name == "done":
                done = json.loads(line[6:])
    return done


async def test_the_rest_answer_says_what_it_cost(plugins: Any) -> None:
    from modelplex.config import parse_config
    from modelplex_server.app import create_app, start
    from modelplex_server.resolve import ModelResolver
    from modelplex_server.settings import ServerSettings

    config = parse_config({"prices": {"fault:*": {"input": 1.0, "output": 2.0}}})
    resolver = ModelResolver(config=config, plugins=plugins)
    server = await start(create_app(ServerSettings(port=0, health_interval=None),
                                    resolver=resolver))
    try:
        done = await _done_event(server.url, {"model": "fault:fault", "message": "Hi"})
        usage = done["usage"]
        expected = (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1e6
        assert done["cost"]["known"] and done["cost"]["source"] == "config"
        assert done["cost"]["amount"] == pytest.approx(expected)
        assert done["cost"]["currency"] == "USD"
        unknown = await _done_event(server.url, {"model": "tools:gpt-4o", "message": "Hi"})
        assert unknown["cost"] == {"amount": None, "currency": "USD", "known": False,
                                "source": None, "estimated": False}  # unknown, not 0
    finally:
        await server.stop()
