"""Wire cases of the Messages API beyond the SDK's recorded fixtures, replayed.

Server tools (web search, code execution, MCP connectors) run on Anthropic's side but stream
their input like a client tool; a compatible server may send a tool's whole input in its
start block; a gateway may answer a stream request with plain JSON.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aioresponses import aioresponses

from modelplex.chunks import ToolCall
from modelplex.errors import StreamError
from modelplex_anthropic.provider import AnthropicProvider

BASE = "https://api.anthropic.test"
URL = BASE + "/v1/messages"
SSE = {"Content-Type": "text/event-stream"}
ASK = [{"role": "user", "content": "What's the weather in New York?"}]


@pytest.fixture
async def provider(clean_env: pytest.MonkeyPatch) -> AsyncIterator[AnthropicProvider]:
    p = AnthropicProvider(base_url=BASE, api_key="sk-ant-api03-test-0123456789abcdef")
    yield p
    await p.aclose()


def events(*pairs: tuple[str, str]) -> str:
    return "".join(f"event: {name}\ndata: {data}\n\n" for name, data in pairs)


START = ("message_start", '{"type":"message_start","message":{"id":"msg_01","type":"message",'
         '"role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,'
         '"usage":{"input_tokens":2679,"output_tokens":3}}}')
STOP = ("message_stop", '{"type":"message_stop"}')


async def test_web_search_server_tool_streams_without_a_tool_call(
        provider: AnthropicProvider, mock: aioresponses) -> None:
    # the web search tool's stream (Messages API docs, "Streaming" of the web search tool)
    mock.post(URL, body=events(
        START,
        ("content_block_start", '{"type":"content_block_start","index":0,"content_block":'
                                '{"type":"text","text":""}}'),
        ("content_block_delta", '{"type":"content_block_delta","index":0,"delta":'
                                '{"type":"text_delta","text":"I\'ll check the weather."}}'),
        ("content_block_stop", '{"type":"content_block_stop","index":0}'),
        ("content_block_start", '{"type":"content_block_start","index":1,"content_block":'
                                '{"type":"server_tool_use","id":"srvtoolu_014hJH82Qum7Td6UV8'
                                'gDXThB","name":"web_search","input":{}}}'),
        ("content_block_delta", '{"type":"content_block_delta","index":1,"delta":'
                                '{"type":"input_json_delta","partial_json":""}}'),
        ("content_block_delta", '{"type":"content_block_delta","index":1,"delta":'
                                '{"type":"input_json_delta","partial_json":"{\\"query\\": '
                                '\\"weather NYC today\\"}"}}'),
        ("content_block_stop", '{"type":"content_block_stop","index":1}'),
        ("content_block_start", '{"type":"content_block_start","index":2,"content_block":'
                                '{"type":"web_search_tool_result","tool_use_id":"srvtoolu_014'
                                'hJH82Qum7Td6UV8gDXThB","content":[{"type":"web_search_result",'
                                '"title":"Weather in New York City","url":"https://weather.com'
                                '/nyc","encrypted_content":"Ev0DCioIAxgC","page_age":null}]}}'),
        ("content_block_stop", '{"type":"content_block_stop","index":2}'),
        ("content_block_start", '{"type":"content_block_start","index":3,"content_block":'
                                '{"type":"text","text":""}}'),
        ("content_block_delta", '{"type":"content_block_delta","index":3,"delta":'
                                '{"type":"citations_delta","citation":{"type":'
                                '"web_search_result_location","cited_text":"Sunny, 21C",'
                                '"url":"https://weather.com/nyc","title":"Weather",'
                                '"encrypted_index":"Eo8BCioIAhgB"}}}'),
        ("content_block_delta", '{"type":"content_block_delta","index":3,"delta":'
                                '{"type":"text_delta","text":" It is sunny, 21C."}}'),
        ("content_block_stop", '{"type":"content_block_stop","index":3}'),
        ("message_delta", '{"type":"message_delta","delta":{"stop_reason":"end_turn",'
                          '"stop_sequence":null},"usage":{"output_tokens":510,'
                          '"server_tool_use":{"web_search_requests":1}}}'),
        STOP), headers=SSE)
    chunks = [c async for c in provider.chat(ASK, model="claude-sonnet-4-5")]
    assert "".join(c.content for c in chunks) == "I'll check the weather. It is sunny, 21C."
    final = chunks[-1]
    assert final.tool_calls is None  # Anthropic ran the search: nothing for us to run
    assert final.finish_reason == "stop"
    assert final.usage is not None and final.usage.completion_tokens == 510


async def test_tool_input_in_the_start_block_without_deltas(
        provider: AnthropicProvider, mock: aioresponses) -> None:
    # compatible servers (gateways translating from other APIs) send the whole input at once
    mock.post(URL, body=events(
        START,
        ("content_block_start", '{"type":"content_block_start","index":0,"content_block":'
                                '{"type":"tool_use","id":"toolu_1","name":"get_weather",'
                                '"input":{"location":"New York"}}}'),
        ("content_block_stop", '{"type":"content_block_stop","index":0}'),
        ("message_delta", '{"type":"message_delta","delta":{"stop_reason":"tool_use"},'
                          '"usage":{"output_tokens":20}}'),
        STOP), headers=SSE)
    chunks = [c async for c in provider.chat(ASK, model="m")]
    assert chunks[-1].tool_calls == [ToolCall(name="get_weather", id="toolu_1",
                                              arguments={"location": "New York"})]
    assert chunks[-1].finish_reason == "tool_calls"


async def test_a_json_error_with_200_instead_of_a_stream(provider: AnthropicProvider,
                                                         mock: aioresponses) -> None:
    # a gateway answering the stream request with HTTP 200 and the API's error body
    mock.post(URL, body='{"type":"error","error":{"type":"overloaded_error",'
                        '"message":"Overloaded"},"request_id":"req_011"}',
              headers={"Content-Type": "application/json"})
    with pytest.raises(StreamError, match="overloaded_error: Overloaded") as info:
        async for _ in provider.chat(ASK, model="m"):
            pass
    assert info.value.retriable


async def test_an_openai_shaped_error_with_200(provider: AnthropicProvider,
                                               mock: aioresponses) -> None:
    # a gateway in front of several APIs answers in OpenAI's error shape
    mock.post(URL, body='{"error":{"message":"No capacity for claude-sonnet-4-5",'
                        '"type":"server_error","code":503}}',
              headers={"Content-Type": "application/json"})
    with pytest.raises(StreamError, match="No capacity for claude-sonnet-4-5"):
        async for _ in provider.chat(ASK, model="claude-sonnet-4-5"):
            pass


async def test_request_betas_add_to_the_providers(clean_env: pytest.MonkeyPatch,
                                                  mock: aioresponses) -> None:
    mock.post(URL, payload={"id": "msg_1", "type": "message", "role": "assistant",
                            "model": "m", "content": [{"type": "text", "text": "Hi"}],
                            "stop_reason": "end_turn",
                            "usage": {"input_tokens": 3, "output_tokens": 1}})
    async with AnthropicProvider(base_url=BASE, api_key="sk-ant-api03-test-0123456789",
                                 betas=["context-1m-2025-08-07"]) as p:
        await p.complete(ASK, model="m", options={"betas": ["extended-cache-ttl-2025-04-11",
                                                           "context-1m-2025-08-07"]})
    [call] = [c for calls in mock.requests.values() for c in calls]
    assert call.kwargs["headers"]["anthropic-beta"] == \
        "context-1m-2025-08-07,extended-cache-ttl-2025-04-11"


async def test_tool_choice_without_tools_is_not_sent(provider: AnthropicProvider,
                                                     mock: aioresponses) -> None:
    # the API answers 400 "tool_choice may only be specified while providing tools"
    mock.post(URL, payload={"id": "msg_1", "type": "message", "role": "assistant",
                            "model": "m", "content": [{"type": "text", "text": "Hi"}],
                            "stop_reason": "end_turn",
                            "usage": {"input_tokens": 3, "output_tokens": 1}})
    await provider.complete(ASK, model="m", tool_choice="auto",
                            options={"disable_parallel_tool_use": True})
    [call] = [c for calls in mock.requests.values() for c in calls]
    assert "tool_choice" not in json.loads(call.kwargs["data"])


async def test_blocks_are_bounded(provider: AnthropicProvider, mock: aioresponses) -> None:
    block = ('{"type":"content_block_start","index":%d,"content_block":{"type":"tool_use",'
             '"id":"toolu_%d","name":"f","input":{}}}')
    mock.post(URL, body=events(START, *(("content_block_start", block % (n, n))
                                        for n in range(300)), STOP), headers=SSE)
    with pytest.raises(StreamError, match="more than 256"):
        async for _ in provider.chat(ASK, model="m"):
            pass


async def test_count_tokens_answers_that_are_not_counts(provider: AnthropicProvider,
                                                        mock: aioresponses) -> None:
    count = BASE + "/v1/messages/count_tokens"
    # a compatible server without the route, behind a web UI that answers every path
    mock.post(count, body="<!doctype html><html><head><title>Open WebUI</title></head></html>",
              headers={"Content-Type": "text/html"})
    mock.post(count, payload={"tokens": 12})
    with pytest.raises(StreamError, match="not valid JSON: Open WebUI"):
        await provider.count_tokens(ASK, model="m")
    with pytest.raises(StreamError, match="gave no input_tokens"):
        await provider.count_tokens(ASK, model="m")
