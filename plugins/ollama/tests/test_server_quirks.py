"""Ollama wire cases beyond the documented transcripts' plain paths, replayed."""

from __future__ import annotations

import json
from types import ModuleType

import pytest
from aioresponses import aioresponses

from modelplex.chunks import ToolCall
from modelplex.errors import StreamError
from modelplex_ollama.connection import EndpointNotFoundError
from modelplex_ollama.provider import OllamaProvider

CHAT = "http://ollama.test:11434/api/chat"
USER = [{"role": "user", "content": "Weather in Tokyo and Paris?"}]
WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}]


async def test_tool_calls_finish_as_tool_calls(provider: OllamaProvider, mock: aioresponses,
                                               wire: ModuleType) -> None:
    # protocols.md 1.8 (b): the call in a done:false line, then done_reason "stop"
    mock.post(CHAT, body=wire.ndjson(*wire.CHAT_TOOL_STREAM))
    chunks = [c async for c in provider.chat(USER, model="llama3.2", tools=WEATHER)]
    assert chunks[-1].finish_reason == "tool_calls"
    tool_line = json.loads(wire.CHAT_TOOL_STREAM[0])
    mock.post(CHAT, body=json.dumps({**tool_line, "done": True, "done_reason": "stop"}))
    response = await provider.complete(USER, model="llama3.2", tools=WEATHER)
    assert response.tool_calls and response.finish_reason == "tool_calls"


async def test_parallel_calls_in_separate_lines(provider: OllamaProvider,
                                                mock: aioresponses) -> None:
    # recent servers give each call an id and its own line; arguments are objects
    line = {"model": "qwen3", "created_at": "2025-09-01T10:00:00Z", "done": False}
    mock.post(CHAT, body=b"".join(json.dumps(x).encode() + b"\n" for x in [
        {**line, "message": {"role": "assistant", "content": "", "thinking": "Two cities."}},
        {**line, "message": {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_k2j4h3g1", "function": {"index": 0, "name": "get_weather",
                                                 "arguments": {"city": "Tokyo"}}}]}},
        {**line, "message": {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_p9o8i7u6", "function": {"index": 1, "name": "get_weather",
                                                 "arguments": {"city": "Paris"}}}]}},
        {**line, "message": {"role": "assistant", "content": ""}, "done": True,
         "done_reason": "stop", "prompt_eval_count": 80, "eval_count": 40}]))
    chunks = [c async for c in provider.chat(USER, model="qwen3", tools=WEATHER)]
    calls = [call for c in chunks if c.tool_calls for call in c.tool_calls]
    assert calls == [ToolCall(name="get_weather", arguments={"city": "Tokyo"},
                              id="call_k2j4h3g1"),
                     ToolCall(name="get_weather", arguments={"city": "Paris"},
                              id="call_p9o8i7u6")]
    assert [c.reasoning for c in chunks if c.reasoning] == ["Two cities."]
    assert chunks[-1].finish_reason == "tool_calls"


async def test_length_after_a_tool_call_stays_length(provider: OllamaProvider,
                                                     mock: aioresponses,
                                                     wire: ModuleType) -> None:
    final = json.loads(wire.CHAT_TOOL_STREAM[1])
    mock.post(CHAT, body=wire.ndjson(wire.CHAT_TOOL_STREAM[0],
                                     {**final, "done_reason": "length"}))
    chunks = [c async for c in provider.chat(USER, model="llama3.2", tools=WEATHER)]
    assert chunks[-1].finish_reason == "length"


async def test_error_line_as_the_only_line(provider: OllamaProvider,
                                           mock: aioresponses) -> None:
    # an error before any output, after the 200 was sent (the runner crashed on load)
    mock.post(CHAT, body=b'{"error":"llama runner process has terminated: exit status 2"}\n')
    with pytest.raises(StreamError, match="llama runner process has terminated"):
        async for _ in provider.chat(USER, model="llama3.2"):
            pass


# recorded from llama.cpp's llama-server (this machine's build) for POST /api/chat, GET
# /api/tags and every other /api route: it speaks no Ollama API since 2026
LLAMA_SERVER_404 = '{"error":{"message":"File Not Found","type":"not_found_error","code":404}}'
# LM Studio's answer to a route it does not have (HTTP 200)
LM_STUDIO_200 = '{"error":"Unexpected endpoint or method. (GET /api/tags). Returning 200 anyway"}'


async def test_an_openai_compatible_server_is_named_as_such(provider: OllamaProvider,
                                                            mock: aioresponses) -> None:
    mock.post(CHAT, status=404, body=LLAMA_SERVER_404,
              headers={"Content-Type": "application/json; charset=utf-8"})
    with pytest.raises(EndpointNotFoundError, match="OpenAI-compatible server") as info:
        async for _ in provider.chat(USER, model="smollm2"):
            pass
    assert "pull" not in str(info.value)  # it is no missing model
    mock.get("http://ollama.test:11434/api/version", status=404, body=LLAMA_SERVER_404,
             headers={"Content-Type": "application/json; charset=utf-8"})
    health = await provider.health()
    assert not health.healthy and "OpenAI-compatible" in (health.detail or "")


async def test_a_listing_that_is_an_error_is_not_an_empty_list(provider: OllamaProvider,
                                                               mock: aioresponses) -> None:
    mock.get("http://ollama.test:11434/api/tags", body=LM_STUDIO_200,
             headers={"Content-Type": "application/json"})
    with pytest.raises(StreamError, match=r"Unexpected endpoint or method.*OpenAI-compatible"):
        await provider.list_models()
    mock.get("http://ollama.test:11434/api/tags", payload={"models": []})
    assert await provider.list_models() == []


async def test_an_openai_event_stream_from_api_chat(provider: OllamaProvider,
                                                    mock: aioresponses) -> None:
    # llama-server builds of May 2025 - April 2026 mapped /api/chat to their OpenAI handler
    mock.post(CHAT, body='data: {"choices":[{"finish_reason":null,"index":0,"delta":{"role":'
                         '"assistant","content":null}}],"object":"chat.completion.chunk"}\n\n'
                         "data: [DONE]\n\n",
              headers={"Content-Type": "text/event-stream"})
    with pytest.raises(EndpointNotFoundError, match=r"event stream.*OpenAI-compatible"):
        async for _ in provider.chat(USER, model="smollm2"):
            pass
