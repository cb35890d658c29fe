"""Wire cases of real OpenAI-compatible servers beyond OpenAI's own recordings, replayed.

Each transcript is what a named server sends (protocols.md, the server's source or issues
quoting its traffic); each test failed before the plugin handled the case.
"""

from __future__ import annotations

import pytest
from aioresponses import aioresponses

from modelplex.chunks import ToolCall
from modelplex.errors import BadRequestError, ServerBusyError, StreamError
from modelplex.testing.pytest_plugin import Sent
from modelplex_openai.provider import OpenAIProvider

BASE = "https://api.openai.test/v1"
CHAT = BASE + "/chat/completions"
SSE = {"Content-Type": "text/event-stream"}
MESSAGES = [{"role": "user", "content": "Weather in Sydney and Paris?"}]


def sse(*events: str) -> str:
    return "".join(f"data: {event}\n\n" for event in events)


async def test_parallel_tool_calls_without_index_stay_apart(provider: OpenAIProvider,
                                                            mock: aioresponses) -> None:
    # Gemini's OpenAI-compatible API: one call per chunk, each with its id, no `index`,
    # a Google extra, and finish_reason "stop" after tool calls
    mock.post(CHAT, body=sse(
        '{"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"id":"fc-1",'
        '"type":"function","function":{"name":"get_weather","arguments":"{\\"city\\":'
        '\\"Sydney\\"}"},"extra_content":{"google":{"thought_signature":"EjQK"}}}]}}]}',
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"fc-2","type":"function",'
        '"function":{"name":"get_time","arguments":"{\\"tz\\":\\"CET\\"}"}}]}}]}',
        '{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
        '"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}',
        "[DONE]"), headers=SSE)
    chunks = [c async for c in provider.chat(MESSAGES, model="gemini-2.5-flash")]
    final = chunks[-1]
    assert final.tool_calls == [
        ToolCall(name="get_weather", arguments={"city": "Sydney"}, id="fc-1"),
        ToolCall(name="get_time", arguments={"tz": "CET"}, id="fc-2")]
    assert final.finish_reason == "tool_calls"


async def test_indexless_fragments_continue_the_open_call(provider: OpenAIProvider,
                                                          mock: aioresponses) -> None:
    # proxies that drop `index`: the id on the first fragment only, arguments in pieces;
    # several calls in one chunk without index are told apart by their ids
    mock.post(CHAT, body=sse(
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"call_a","type":"function",'
        '"function":{"name":"get_weather","arguments":""}}]}}]}',
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":'
        '"{\\"city\\":"}}]}}]}',
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":'
        '"\\"Paris\\"}"}}]}}]}',
        '{"choices":[{"index":0,"delta":{"tool_calls":['
        '{"id":"call_b","function":{"name":"get_time","arguments":"{}"}},'
        '{"id":"call_c","function":{"name":"get_date","arguments":"{}"}}]}}]}',
        '{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}',
        "[DONE]"), headers=SSE)
    chunks = [c async for c in provider.chat(MESSAGES, model="m")]
    assert chunks[-1].tool_calls == [
        ToolCall(name="get_weather", arguments={"city": "Paris"}, id="call_a"),
        ToolCall(name="get_time", arguments={}, id="call_b"),
        ToolCall(name="get_date", arguments={}, id="call_c")]


async def test_indexed_parallel_calls_interleaved(provider: OpenAIProvider,
                                                  mock: aioresponses) -> None:
    # OpenAI / vLLM: two calls by index, fragments interleaved, the index on every fragment
    mock.post(CHAT, body=sse(
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1",'
        '"type":"function","function":{"name":"a","arguments":""}}]}}]}',
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_2",'
        '"type":"function","function":{"name":"b","arguments":"{\\"y\\""}}]}}]}',
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":'
        '{"arguments":"{\\"x\\":1}"}}]}}]}',
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":'
        '{"arguments":":2}"}}]}}]}',
        '{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}',
        "[DONE]"), headers=SSE)
    chunks = [c async for c in provider.chat(MESSAGES, model="m")]
    assert chunks[-1].tool_calls == [ToolCall(name="a", arguments={"x": 1}, id="call_1"),
                                     ToolCall(name="b", arguments={"y": 2}, id="call_2")]


async def test_arguments_sent_as_an_object(provider: OpenAIProvider,
                                           mock: aioresponses) -> None:
    # a few servers (Ollama-backed gateways) put the arguments object itself on the wire
    mock.post(CHAT, body=sse(
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1",'
        '"type":"function","function":{"name":"get_weather","arguments":'
        '{"city":"Tokyo"}}}]},"finish_reason":"tool_calls"}]}',
        "[DONE]"), headers=SSE)
    chunks = [c async for c in provider.chat(MESSAGES, model="m")]
    assert chunks[-1].tool_calls == [ToolCall(name="get_weather", arguments={"city": "Tokyo"},
                                              id="call_1")]


async def test_whole_answer_with_tool_calls_and_stop(provider: OpenAIProvider,
                                                     mock: aioresponses) -> None:
    # Gemini, non-streaming: tool calls with finish_reason "stop"
    mock.post(CHAT, payload={"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "fc-1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Sydney"}'}}]}}]})
    response = await provider.complete(MESSAGES, model="gemini-2.5-flash")
    assert response.tool_calls == [ToolCall(name="get_weather", arguments={"city": "Sydney"},
                                            id="fc-1")]
    assert response.finish_reason == "tool_calls"


async def test_a_json_error_with_200_instead_of_a_stream(provider: OpenAIProvider,
                                                         mock: aioresponses) -> None:
    # busy gateways (one-api style proxies) answer a stream request with HTTP 200 and JSON
    mock.post(CHAT, body='{"error":{"message":"当前分组上游负载已饱和，请稍后再试",'
                         '"type":"new_api_error","code":"get_channel_failed"}}',
              headers={"Content-Type": "application/json"})
    with pytest.raises(StreamError, match="请稍后再试"):
        async for _ in provider.chat(MESSAGES, model="m"):
            pass


async def test_a_whole_answer_instead_of_a_stream(provider: OpenAIProvider,
                                                  mock: aioresponses) -> None:
    # a server that ignores "stream": true answers with the whole chat.completion
    mock.post(CHAT, payload={
        "id": "chatcmpl-1", "object": "chat.completion", "model": "served-model",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})
    chunks = [c async for c in provider.chat(MESSAGES, model="m")]
    assert "".join(c.content for c in chunks) == "Let me check."
    final = chunks[-1]
    assert final.tool_calls == [ToolCall(name="get_weather", arguments={"city": "Paris"},
                                         id="call_1")]
    assert final.finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.completion_tokens == 7
    assert final.model == "served-model"


async def test_an_html_page_with_200_is_shown(provider: OpenAIProvider,
                                              mock: aioresponses) -> None:
    # a captive portal or a wrong base URL that serves a web page
    mock.post(CHAT, body="<!doctype html><html><head><title>Sign in</title></head><body>"
                         "<h1>Sign in to the guest network</h1></body></html>",
              headers={"Content-Type": "text/html"})
    with pytest.raises(StreamError, match=r"not an event stream.*Sign in to the guest"):
        async for _ in provider.chat(MESSAGES, model="m"):
            pass


# a strict server's refusal of the field (pydantic's "extra_forbidden", vLLM's error shape)
REFUSED = {"object": "error", "type": "BadRequestError", "param": None, "code": 400,
           "message": "[{'type': 'extra_forbidden', 'loc': ('body', 'stream_options'), "
                      "'msg': 'Extra inputs are not permitted', 'input': "
                      "{'include_usage': True}}]"}
PLAIN = sse('{"choices":[{"index":0,"delta":{"content":"Hi"}}]}',
            '{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}', "[DONE]")


async def test_a_server_refusing_stream_options_is_asked_without(
        provider: OpenAIProvider, mock: aioresponses, sent: Sent) -> None:
    mock.post(CHAT, status=400, payload=REFUSED)
    mock.post(CHAT, body=PLAIN, headers=SSE)
    mock.post(CHAT, body=PLAIN, headers=SSE)
    for _ in range(2):
        chunks = [c async for c in provider.chat(MESSAGES, model="m")]
        assert "".join(c.content for c in chunks) == "Hi"
        assert chunks[-1].usage is not None and chunks[-1].usage.estimated
    first, second, third = sent.bodies(mock)
    assert first["stream_options"] == {"include_usage": True}
    assert "stream_options" not in second and "stream_options" not in third
    assert not provider.stream_usage


async def test_other_bad_requests_are_not_retried(provider: OpenAIProvider,
                                                  mock: aioresponses, sent: Sent) -> None:
    mock.post(CHAT, status=400, payload={"error": {
        "message": "'messages' must contain at least one message", "type":
        "invalid_request_error", "param": "messages", "code": None}})
    with pytest.raises(BadRequestError, match="at least one message"):
        async for _ in provider.chat(MESSAGES, model="m"):
            pass
    assert len(sent.bodies(mock)) == 1
    assert provider.stream_usage


async def test_extra_body_decides_stream_options(provider: OpenAIProvider,
                                                 mock: aioresponses, sent: Sent) -> None:
    mock.post(CHAT, body=PLAIN, headers=SSE)
    mock.post(CHAT, body=PLAIN, headers=SSE)
    mock.post(CHAT, payload={"choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": "Hi"}}]})
    for options in ({"stream_options": None},
                    {"stream_options": {"include_usage": True, "continuous_usage_stats": True}}):
        [c async for c in provider.chat(MESSAGES, model="m",
                                        options={"extra_body": options})]
    await provider.complete(MESSAGES, model="m",
                            options={"extra_body": {"stream_options": {"include_usage": True}}})
    first, second, third = sent.bodies(mock)
    assert "stream_options" not in first
    assert second["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert "stream_options" not in third and "stream" not in third


async def test_groq_usage_in_x_groq(provider: OpenAIProvider, mock: aioresponses) -> None:
    # Groq: the usage of a stream in the final chunk's x_groq member
    mock.post(CHAT, body=sse(
        '{"id":"chatcmpl-9b","object":"chat.completion.chunk","model":"llama-3.3-70b-versatile"'
        ',"choices":[{"index":0,"delta":{"role":"assistant","content":""}}],'
        '"x_groq":{"id":"req_01jbd6g2qdfw2adyrt2az8hz4w"}}',
        '{"id":"chatcmpl-9b","choices":[{"index":0,"delta":{"content":"Hello"}}]}',
        '{"id":"chatcmpl-9b","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
        '"x_groq":{"id":"req_01jbd6g2qdfw2adyrt2az8hz4w","usage":{"queue_time":0.02,'
        '"prompt_tokens":40,"prompt_time":0.003,"completion_tokens":2,"completion_time":0.002,'
        '"total_tokens":42,"total_time":0.005}}}',
        "[DONE]"), headers=SSE)
    chunks = [c async for c in provider.chat(MESSAGES, model="llama-3.3-70b-versatile")]
    usage = chunks[-1].usage
    assert usage is not None and not usage.estimated
    assert (usage.prompt_tokens, usage.completion_tokens) == (40, 2)


async def test_groq_error_in_x_groq(provider: OpenAIProvider, mock: aioresponses) -> None:
    mock.post(CHAT, body=sse(
        '{"id":"chatcmpl-9c","choices":[{"index":0,"delta":{"content":"Hel"}}]}',
        '{"id":"chatcmpl-9c","choices":[{"index":0,"delta":{}}],'
        '"x_groq":{"id":"req_2","error":"over_capacity"}}',
        "[DONE]"), headers=SSE)
    with pytest.raises(StreamError, match="over_capacity") as info:
        async for _ in provider.chat(MESSAGES, model="m"):
            pass
    assert info.value.partial_content == "Hel"


async def test_whole_answers_with_200(provider: OpenAIProvider, mock: aioresponses) -> None:
    # a null error member is no error (servers whose models serialise every field)
    mock.post(CHAT, payload={"id": "x", "object": "chat.completion", "error": None,
                             "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                 "role": "assistant", "content": "Hi"}}]})
    assert (await provider.complete(MESSAGES, model="m")).content == "Hi"
    # vLLM's error shape, sent with HTTP 200 by a proxy
    mock.post(CHAT, payload={"object": "error", "message": "The model `m` does not exist.",
                             "type": "NotFoundError", "param": None, "code": 404})
    with pytest.raises(StreamError, match="does not exist"):
        await provider.complete(MESSAGES, model="m")


MAGISTRAL = '{"id":"c3c7","object":"chat.completion.chunk","model":"magistral-medium-2509",' \
    '"choices":[{"index":0,"delta":{"content":%s},"finish_reason":%s}]}'


async def test_mistral_thinking_parts(provider: OpenAIProvider, mock: aioresponses) -> None:
    # Mistral's API streams a reasoning model's content as lists of parts
    mock.post(CHAT, body=sse(
        MAGISTRAL % ('[{"type":"thinking","thinking":[{"type":"text","text":"It\'s a greeting"}'
                     ']}]', "null"),
        MAGISTRAL % ('[{"type":"thinking","thinking":[{"type":"text","text":", reply."}]}]',
                     "null"),
        MAGISTRAL % ('[{"type":"text","text":"Hello"}]', "null"),
        MAGISTRAL % ('"!"', '"stop"'),
        "[DONE]"), headers=SSE)
    chunks = [c async for c in provider.chat(MESSAGES, model="magistral-medium-2509")]
    assert "".join(c.content for c in chunks) == "Hello!"
    assert "".join(c.reasoning or "" for c in chunks) == "It's a greeting, reply."
    assert all(isinstance(c.content, str) for c in chunks)
    mock.post(CHAT, payload={"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": [
            {"type": "thinking", "thinking": [{"type": "text", "text": "It's a greeting."}]},
            {"type": "text", "text": "Hello!"}]}}]})
    response = await provider.complete(MESSAGES, model="magistral-medium-2509")
    assert (response.content, response.reasoning) == ("Hello!", "It's a greeting.")


async def test_503_with_retry_after_as_an_http_date(provider: OpenAIProvider,
                                                    mock: aioresponses) -> None:
    # a load balancer in front of vLLM, busy: Retry-After as an HTTP date (RFC 9110)
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    mock.post(CHAT, status=503, body="<html><body><h1>503 Service Unavailable</h1>No server is"
                                     " available to handle this request.</body></html>",
              headers={"Retry-After": when, "Content-Type": "text/html"})
    with pytest.raises(ServerBusyError, match="503 Service Unavailable No server") as info:
        async for _ in provider.chat(MESSAGES, model="m"):
            pass
    assert info.value.retry_after is not None and 60 <= info.value.retry_after <= 120


async def test_crlf_no_space_comments_finish_on_content_no_done(provider: OpenAIProvider,
                                                                mock: aioresponses) -> None:
    # CRLF line ends (proxies on Windows), `data:` without a space (TGI), keep-alive comments
    # (llama.cpp --sse-ping-interval, DeepSeek, OpenRouter), the last text on the chunk with
    # the finish reason, and no [DONE] before the connection closes
    body = (": keep-alive\r\n\r\n"
            'data:{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}\r\n\r\n'
            ": OPENROUTER PROCESSING\r\n\r\n"
            'data:{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"length"}],'
            '"usage":{"prompt_tokens":3,"completion_tokens":2}}\r\n\r\n')
    mock.post(CHAT, body=body, headers=SSE)
    chunks = [c async for c in provider.chat(MESSAGES, model="m")]
    assert "".join(c.content for c in chunks) == "Hello"
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


async def test_calls_all_numbered_zero_with_their_own_ids(provider: OpenAIProvider,
                                                          mock: aioresponses) -> None:
    # gateways translating Gemini's parallel calls number each one 0, one chunk per call
    mock.post(CHAT, body=sse(*(
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_' + str(n) +
        '","type":"function","function":{"name":"get_weather","arguments":"{\\"city\\":'
        '\\"' + city + '\\"}"}}]}}]}' for n, city in enumerate(("北京", "上海", "广州"))),
        '{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}', "[DONE]"),
        headers=SSE)
    chunks = [c async for c in provider.chat(MESSAGES, model="m")]
    assert chunks[-1].tool_calls == [
        ToolCall(name="get_weather", arguments={"city": city}, id=f"call_{n}")
        for n, city in enumerate(("北京", "上海", "广州"))]


# OpenAI's answer to max_tokens for its reasoning models (o-series, gpt-5)
NO_MAX_TOKENS = {"error": {
    "message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
               "'max_completion_tokens' instead.", "type": "invalid_request_error",
    "param": "max_tokens", "code": "unsupported_parameter"}}


async def test_max_tokens_refused_for_max_completion_tokens(
        provider: OpenAIProvider, mock: aioresponses, sent: Sent) -> None:
    mock.post(CHAT, status=400, payload=NO_MAX_TOKENS)
    mock.post(CHAT, body=PLAIN, headers=SSE)
    mock.post(CHAT, payload={"choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": "Hi"}}]})
    mock.post(CHAT, status=400, payload=NO_MAX_TOKENS)
    mock.post(CHAT, payload={"choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": "Hi"}}]})
    chunks = [c async for c in provider.chat(MESSAGES, model="gpt-5",
                                             options={"max_tokens": 50})]
    assert "".join(c.content for c in chunks) == "Hi"
    response = await provider.complete(MESSAGES, model="gpt-5", options={"max_tokens": 50})
    assert response.content == "Hi"
    other = await provider.complete(MESSAGES, model="o3", options={"max_tokens": 7})
    assert other.content == "Hi"
    bodies = sent.bodies(mock)
    assert [("max_tokens" in b, b.get("max_completion_tokens")) for b in bodies] == [
        (True, None), (False, 50),   # refused, then renamed
        (False, 50),                 # remembered for gpt-5
        (True, None), (False, 7)]    # learned again for o3


async def test_a_different_max_tokens_error_is_not_mended(provider: OpenAIProvider,
                                                          mock: aioresponses,
                                                          sent: Sent) -> None:
    mock.post(CHAT, status=400, payload={"error": {
        "message": "max_tokens is too large: 500000. This model supports at most 16384 "
                   "completion tokens.", "type": "invalid_request_error",
        "param": "max_tokens", "code": None}})
    with pytest.raises(BadRequestError, match="too large"):
        await provider.complete(MESSAGES, model="gpt-4o", options={"max_tokens": 500000})
    assert len(sent.bodies(mock)) == 1


async def test_tool_settings_without_tools_are_not_sent(provider: OpenAIProvider,
                                                        mock: aioresponses,
                                                        sent: Sent) -> None:
    # OpenAI/Azure: "parallel_tool_calls is only allowed when 'tools' are specified" (400),
    # for an endpoint whose default options set it and a chat that has no tools
    mock.post(CHAT, body=PLAIN, headers=SSE)
    mock.post(CHAT, body=PLAIN, headers=SSE)
    [c async for c in provider.chat(MESSAGES, model="gpt-4o", tool_choice="none",
                                    options={"parallel_tool_calls": False})]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    [c async for c in provider.chat(MESSAGES, model="gpt-4o", tools=tools, tool_choice="auto",
                                    options={"parallel_tool_calls": False})]
    bare, with_tools = sent.bodies(mock)
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(bare)
    assert (with_tools["tool_choice"], with_tools["parallel_tool_calls"]) == ("auto", False)


async def test_lm_studio_root_without_v1(clean_env: pytest.MonkeyPatch,
                                         mock: aioresponses) -> None:
    # LM Studio answers a path it lacks with HTTP 200 and an error
    mock.post("http://127.0.0.1:1234/chat/completions", headers={
        "Content-Type": "application/json"}, body='{"error":"Unexpected endpoint or method. '
                                                  '(POST /chat/completions). Returning 200 '
                                                  'anyway"}')
    async with OpenAIProvider(name="lms", base_url="http://127.0.0.1:1234") as p:
        with pytest.raises(StreamError, match=r"Unexpected endpoint.*right base URL.*/v1") \
                as info:
            async for _ in p.chat(MESSAGES, model="m"):
                pass
    assert not info.value.retriable


async def test_vllm_error_object_mid_stream(provider: OpenAIProvider,
                                            mock: aioresponses) -> None:
    # some vLLM builds send their ErrorResponse unwrapped in the stream, then [DONE]
    mock.post(CHAT, body=sse(
        '{"choices":[{"index":0,"delta":{"role":"assistant","content":"The"}}]}',
        '{"object":"error","message":"CUDA out of memory. Tried to allocate 2.00 GiB",'
        '"type":"InternalServerError","param":null,"code":500}',
        "[DONE]"), headers=SSE)
    with pytest.raises(StreamError, match="CUDA out of memory") as info:
        async for _ in provider.chat(MESSAGES, model="m"):
            pass
    assert info.value.partial_content == "The"


def test_hosted_reasoning_silence_is_allowed(clean_env: pytest.MonkeyPatch) -> None:
    # OpenAI's reasoning models stream nothing while they think (minutes at high effort):
    # the hosted APIs get the official SDK's 600 s; other servers keep 120 s
    hosted = [OpenAIProvider(api_key="sk-x"),
              OpenAIProvider(name="azure", base_url="https://acme.openai.azure.com/openai/v1")]
    assert [p.http.timeouts.between_chunks for p in hosted] == [600.0, 600.0]
    assert OpenAIProvider(name="vllm", base_url="http://127.0.0.1:8000/v1"
                          ).http.timeouts.between_chunks == 120.0
    chosen = OpenAIProvider(api_key="sk-x", timeouts={"between_chunks": 30, "total": 900})
    assert (chosen.http.timeouts.between_chunks, chosen.http.timeouts.total) == (30.0, 900.0)
    assert OpenAIProvider(api_key="sk-x", timeouts=50).http.timeouts.between_chunks == 600.0


async def test_tool_calls_are_bounded(provider: OpenAIProvider, mock: aioresponses) -> None:
    # a hostile server cannot make the provider keep any number of calls
    one = ('{"choices":[{"index":0,"delta":{"tool_calls":[{"index":%d,"id":"c%d","function":'
           '{"name":"f","arguments":"{}"}}]}}]}')
    mock.post(CHAT, body=sse(*(one % (n, n) for n in range(300)), "[DONE]"), headers=SSE)
    with pytest.raises(StreamError, match="more than 256 tool calls"):
        async for _ in provider.chat(MESSAGES, model="m"):
            pass
