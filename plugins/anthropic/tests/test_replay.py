"""Replays of recorded Anthropic Messages API traffic (protocols.md §3) through aioresponses."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aioresponses import aioresponses

from modelplex import create_provider
from modelplex.chunks import ToolCall
from modelplex.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ModelNotFoundError,
    OptionsError,
    RateLimitError,
    ServerBusyError,
    ServerError,
    StreamError,
)
from modelplex.http import Timeouts
from modelplex.testing import ProviderConformanceTests
from modelplex.types import ChatMessage
from modelplex_anthropic.provider import AnthropicProvider
from modelplex_anthropic.wire import (
    THINKING_METADATA_KEY,
    AnthropicChunk,
    AnthropicResponse,
    AnthropicUsage,
)

BASE = "https://api.anthropic.test"
MESSAGES_URL = BASE + "/v1/messages"
KEY = "sk-ant-api03-test-abcdefghijklmnopqrstuvwxyz"
SSE = {"Content-Type": "text/event-stream"}
ASK = [{"role": "user", "content": "Hello"}]
HEADERS = {"User-Agent": "modelplex-anthropic/0.1.0", "Accept": "application/json",
           "anthropic-version": "2023-06-01", "x-api-key": "<redacted>",
           "Content-Type": "application/json"}

# protocols.md §3.2, recorded (the SDK's inline snapshot)
RECORDED_MESSAGE = {
    "model": "claude-sonnet-4-5-20250929", "id": "msg_01MkoP42QB7TUf5m2NVVK2kE",
    "type": "message", "role": "assistant",
    "content": [{"type": "text",
                 "text": "{\"product_name\": \"Green Tea\", \"price\": 5.50, \"quantity\": 2}"}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 249, "cache_creation_input_tokens": 0,
              "cache_read_input_tokens": 0,
              "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
              "output_tokens": 26, "service_tier": "standard", "inference_geo": "not_available"}}
# The non-streaming twin of anthropic_basic_stream.sse.
BASIC_COMPLETE = {
    "id": "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK", "type": "message", "role": "assistant",
    "content": [{"type": "text", "text": "Hello there!"}], "model": "claude-3-opus-latest",
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 11, "output_tokens": 6}}
# The non-streaming twin of anthropic_tool_use_stream.sse.
TOOL_COMPLETE = {
    "id": "msg_019Q1hrJbZG26Fb9BQhrkHEr", "type": "message", "role": "assistant",
    "model": "claude-sonnet-4-20250514",
    "content": [{"type": "text", "text": "I'll check the current weather in Paris for you."},
                {"type": "tool_use", "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn",
                 "name": "get_weather", "input": {"location": "Paris"}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 377, "cache_creation_input_tokens": 0,
              "cache_read_input_tokens": 0, "output_tokens": 65}}
# protocols.md §3.4
RATE_LIMITED = {"type": "error", "error": {
    "type": "rate_limit_error",
    "message": "This request would exceed your organization's rate limit of 20,000,000 prompt "
               "bytes per hour (org: 5576611f-a1ee-427c-9800-298d9579899c, model: "
               "claude-sonnet-4-5-20250929). For details, refer to: "
               "https://docs.claude.com/en/api/rate-limits. You can see the response headers "
               "for current usage. Please reduce the prompt length or the maximum tokens "
               "requested, or try again later. You may also contact sales at "
               "https://www.anthropic.com/contact-sales to discuss your options for a rate "
               "limit increase."}, "request_id": "req_011CYK5n67SytMUxm8WMZUWY"}
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
UNAUTHORIZED = {"type": "error", "error": {"type": "authentication_error",
                                           "message": "invalid x-api-key"}}
NOT_FOUND = {"type": "error", "error": {"type": "not_found_error", "message": "model: claude-x"},
             "request_id": "req_011CNotFound"}
ERROR_EVENT = ('event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
               '"message": "Overloaded"}}\n\n')
TOOLS = [{"name": "get_weather", "description": "Weather in a city",
          "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                           "required": ["location"]}}]


@pytest.fixture
async def provider(clean_env: pytest.MonkeyPatch) -> AsyncIterator[AnthropicProvider]:
    clean_env.setenv("ANTHROPIC_API_KEY", KEY)
    clean_env.setenv("ANTHROPIC_BASE_URL", BASE)
    p = AnthropicProvider()
    yield p
    await p.aclose()


def head(text: str, events: int) -> str:
    """The first ``events`` events of a transcript."""
    return "".join(part + "\n\n" for part in text.split("\n\n")[:events])


class TestConformance(ProviderConformanceTests):
    """The shared provider contract, against the core's test upstream speaking the
    Messages API (the recorded transcripts are replayed by the tests below)."""

    wire = "anthropic"
    plugin = "anthropic"
    options = {"temperature": 0, "max_tokens": 24}  # noqa: RUF012 - the base class's shape
    unsent_options = frozenset({"seed"})  # the API has none; the provider rejects it

    def make_provider(self, base_url: str, *, timeouts: Timeouts,
                      api_key: str | None) -> AnthropicProvider:
        return AnthropicProvider(base_url=base_url, api_key=api_key, timeouts=timeouts)


async def test_basic_stream_text_usage_and_exact_request(
        provider: AnthropicProvider, mock: aioresponses, transcript: Callable[[str], str],
        sent: Callable[..., list[Any]]) -> None:
    mock.post(MESSAGES_URL, body=transcript("anthropic_basic_stream.sse"), headers=SSE)
    chunks = [c async for c in provider.chat(
        [{"role": "system", "content": "Be brief."}, *ASK], model="claude-3-opus-latest",
        options={"temperature": 0.5, "top_k": 40, "stop": ["\n\n"],
                 "metadata": {"user_id": "u-1"}})]
    assert [c.content for c in chunks[:-1]] == ["Hello", " there", "!"]
    final = chunks[-1]
    assert isinstance(final, AnthropicChunk)
    assert (final.content, final.finish_reason, final.stop_reason) == ("", "stop", "end_turn")
    assert final.model == "claude-3-opus-latest"
    assert final.usage == AnthropicUsage(prompt_tokens=11, completion_tokens=6)
    assert all(c.usage is None and c.finish_reason is None for c in chunks[:-1])
    assert sent(mock, provider, KEY) == [("POST", MESSAGES_URL, HEADERS, {
        "model": "claude-3-opus-latest", "max_tokens": 4096, "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hello"}], "stop_sequences": ["\n\n"],
        "temperature": 0.5, "top_k": 40, "metadata": {"user_id": "u-1"}, "stream": True})]


async def test_tool_use_stream_assembles_input_and_equals_non_streaming(
        provider: AnthropicProvider, mock: aioresponses, transcript: Callable[[str], str],
        sent: Callable[..., list[Any]]) -> None:
    mock.post(MESSAGES_URL, body=transcript("anthropic_tool_use_stream.sse"), headers=SSE)
    mock.post(MESSAGES_URL, payload=TOOL_COMPLETE)
    ask = [{"role": "user", "content": "What's the weather in Paris?"}]
    chunks = [c async for c in provider.chat(ask, model="claude-sonnet-4-20250514",
                                             tools=TOOLS, tool_choice="required")]
    expected = [ToolCall(name="get_weather", arguments={"location": "Paris"},
                         id="toolu_01NRLabsLyVHZPKxbKvkfSMn")]
    text = "".join(c.content for c in chunks)
    assert text == "I'll check the current weather in Paris for you."
    assert [c.tool_calls for c in chunks if c.tool_calls] == [expected]
    final = chunks[-1]
    assert final.finish_reason == "tool_calls"
    assert final.usage == AnthropicUsage(prompt_tokens=377, completion_tokens=65)
    response = await provider.complete(ask, model="claude-sonnet-4-20250514", tools=TOOLS,
                                       tool_choice="required")
    assert isinstance(response, AnthropicResponse)
    assert (response.content, response.tool_calls, response.finish_reason) == (
        text, expected, "tool_calls")
    assert response.usage == final.usage
    for _, _, _, body in sent(mock, provider, KEY):
        assert body["tools"] == TOOLS
        assert body["tool_choice"] == {"type": "any"}


async def test_thinking_stream_is_reasoning_with_signature_kept(
        provider: AnthropicProvider, mock: aioresponses, transcript: Callable[[str], str],
        sent: Callable[..., list[Any]]) -> None:
    mock.post(MESSAGES_URL, body=transcript("anthropic_thinking_stream.sse"), headers=SSE)
    chunks = [c async for c in provider.chat(ASK, model="claude-3-7-sonnet-20250219",
                                             options={"thinking": 2048})]
    reasoning = "".join(c.reasoning or "" for c in chunks)
    assert reasoning == "Let me solve this step by step:\n\n1. First break down 27 * 453" \
                        "\n2. 453 = 400 + 50 + 3"
    assert "".join(c.content for c in chunks) == "27 * 453 = 12,231"
    final = chunks[-1]
    assert isinstance(final, AnthropicChunk)
    assert final.thinking_blocks == [{
        "type": "thinking", "thinking": reasoning,
        "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."}]
    # the documented stream reports no usage: estimated, one token per delta
    assert final.usage is not None and final.usage.estimated
    assert final.usage.completion_tokens == 4
    [(_, _, _, body)] = sent(mock, provider, KEY)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] == 4096 + 2048

    # The next turn sends the thinking block back, unchanged, before the text.
    mock.post(MESSAGES_URL, payload=BASIC_COMPLETE)
    history = [*ASK, ChatMessage.assistant("27 * 453 = 12,231", metadata={
        THINKING_METADATA_KEY: final.thinking_blocks}), ChatMessage.user("And 28 * 453?")]
    await provider.complete(history, model="claude-3-7-sonnet-20250219",
                            options={"thinking": 2048})
    body = sent(mock, provider, KEY)[-1][3]
    assert body["messages"][1] == {"role": "assistant", "content": [
        *final.thinking_blocks, {"type": "text", "text": "27 * 453 = 12,231"}]}


async def test_recorded_non_streaming_message_with_cache_usage(
        provider: AnthropicProvider, mock: aioresponses,
        sent: Callable[..., list[Any]]) -> None:
    payload = {**RECORDED_MESSAGE, "usage": {**RECORDED_MESSAGE["usage"],  # type: ignore[dict-item]
                                             "cache_creation_input_tokens": 30,
                                             "cache_read_input_tokens": 1200}}
    mock.post(MESSAGES_URL, payload=payload)
    response = await provider.complete(ASK, model="claude-sonnet-4-5", response_format="json",
                                       options={"max_tokens": 100})
    assert response.content == '{"product_name": "Green Tea", "price": 5.50, "quantity": 2}'
    assert response.model == "claude-sonnet-4-5-20250929"
    assert response.finish_reason == "stop"
    assert response.usage == AnthropicUsage(prompt_tokens=249 + 30 + 1200, completion_tokens=26,
                                            cache_creation_input_tokens=30,
                                            cache_read_input_tokens=1200)
    [(_, _, headers, body)] = sent(mock, provider, KEY)
    assert headers == HEADERS
    assert body == {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [
        {"role": "user", "content": "Hello"}], "output_config": {"format": {
            "type": "json_schema", "schema": {"type": "object"}}}}


async def test_stream_cache_usage_from_message_start(
        provider: AnthropicProvider, mock: aioresponses, transcript: Callable[[str], str]
        ) -> None:
    body = transcript("anthropic_basic_stream.sse").replace(
        '"usage":{"input_tokens":11,"output_tokens":1}',
        '"usage":{"input_tokens":11,"cache_creation_input_tokens":500,'
        '"cache_read_input_tokens":0,"output_tokens":1}')
    mock.post(MESSAGES_URL, body=body, headers=SSE)
    chunks = [c async for c in provider.chat(ASK, model="m")]
    assert chunks[-1].usage == AnthropicUsage(prompt_tokens=511, completion_tokens=6,
                                              cache_creation_input_tokens=500)


async def test_error_event_raises_after_the_delivered_chunks(
        provider: AnthropicProvider, mock: aioresponses, transcript: Callable[[str], str]
        ) -> None:
    body = head(transcript("anthropic_basic_stream.sse"), 5) + ERROR_EVENT
    mock.post(MESSAGES_URL, body=body, headers=SSE)
    received = []
    with pytest.raises(StreamError, match="overloaded_error: Overloaded") as info:
        async for chunk in provider.chat(ASK, model="m"):
            received.append(chunk.content)
    assert received == ["Hello", " there"]
    assert info.value.partial_content == "Hello there"
    assert info.value.error_type == "overloaded_error"  # type: ignore[attr-defined]
    assert info.value.retriable


async def test_stream_cut_off_before_message_stop(
        provider: AnthropicProvider, mock: aioresponses, transcript: Callable[[str], str]
        ) -> None:
    mock.post(MESSAGES_URL, body=head(transcript("anthropic_basic_stream.sse"), 8),
              headers=SSE)
    with pytest.raises(StreamError, match="ended before") as info:
        async for _ in provider.chat(ASK, model="m"):
            pass
    assert info.value.partial_content == "Hello there!"


async def test_unreadable_tool_input_is_kept_raw(provider: AnthropicProvider,
                                                 mock: aioresponses,
                                                 transcript: Callable[[str], str]) -> None:
    body = transcript("anthropic_tool_use_stream.sse").replace(
        '"partial_json":"is\\"}"', '"partial_json":"is"')
    mock.post(MESSAGES_URL, body=body, headers=SSE)
    chunks = [c async for c in provider.chat(ASK, model="m", tools=TOOLS)]
    assert chunks[-1].tool_calls == [ToolCall(
        name="get_weather", id="toolu_01NRLabsLyVHZPKxbKvkfSMn",
        arguments={"_raw": '{"location": "Paris'})]


async def test_unexpected_event_shape_is_a_stream_error(provider: AnthropicProvider,
                                                        mock: aioresponses) -> None:
    mock.post(MESSAGES_URL, body='event: content_block_delta\ndata: {"delta": 3}\n\n',
              headers=SSE)
    with pytest.raises(StreamError, match="unexpected event"):
        async for _ in provider.chat(ASK, model="m"):
            pass


async def test_recorded_429_retry_from_exhausted_limit_reset(provider: AnthropicProvider,
                                                             mock: aioresponses) -> None:
    reset = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    mock.post(MESSAGES_URL, status=429, payload=RATE_LIMITED, headers={
        "x-should-retry": "true", "request-id": "req_011CYK5n67SytMUxm8WMZUWY",
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2026-02-25T20:02:32Z",
        "anthropic-ratelimit-input-tokens-limit": "30000",
        "anthropic-ratelimit-input-tokens-remaining": "0",
        "anthropic-ratelimit-input-tokens-reset": reset})
    with pytest.raises(RateLimitError) as info:
        await provider.complete(ASK, model="claude-sonnet-4-5")
    err = info.value
    assert type(err) is RateLimitError
    assert err.retriable
    assert err.retry_after is not None and 25 < err.retry_after <= 30
    assert err.rate_limits["anthropic-ratelimit-input-tokens-remaining"] == "0"  # type: ignore[attr-defined]
    assert "rate limit of 20,000,000 prompt bytes" in str(err)
    assert "req_011CYK5n67SytMUxm8WMZUWY" in str(err)


async def test_429_retry_after_header_wins(provider: AnthropicProvider,
                                           mock: aioresponses) -> None:
    mock.post(MESSAGES_URL, status=429, payload=RATE_LIMITED, headers={"retry-after": "17"})
    with pytest.raises(RateLimitError) as info:
        async for _ in provider.chat(ASK, model="m"):
            pass
    assert info.value.retry_after == 17.0


async def test_529_overloaded_is_server_busy(provider: AnthropicProvider,
                                             mock: aioresponses) -> None:
    mock.post(MESSAGES_URL, status=529, payload=OVERLOADED)
    with pytest.raises(ServerBusyError, match="529: Overloaded") as info:
        await provider.complete(ASK, model="m")
    assert info.value.status_code == 529 and info.value.retriable


async def test_x_should_retry_false_is_not_retriable(provider: AnthropicProvider,
                                                     mock: aioresponses) -> None:
    mock.post(MESSAGES_URL, status=500, payload={"type": "error", "error": {
        "type": "api_error", "message": "Internal server error"}},
              headers={"x-should-retry": "false"})
    with pytest.raises(ServerError) as info:
        await provider.complete(ASK, model="m")
    assert not info.value.retriable


async def test_400_invalid_request_keeps_message(provider: AnthropicProvider,
                                                 mock: aioresponses) -> None:
    mock.post(MESSAGES_URL, status=400, payload={"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "messages: roles must alternate between \"user\" and \"assistant\""}})
    with pytest.raises(BadRequestError, match="roles must alternate") as info:
        await provider.complete(ASK, model="m")
    assert not info.value.retriable


async def test_401_names_the_variable_and_hides_the_key(provider: AnthropicProvider,
                                                        mock: aioresponses) -> None:
    mock.post(MESSAGES_URL, status=401, payload={"type": "error", "error": {
        "type": "authentication_error", "message": f"invalid x-api-key {KEY}"}})
    with pytest.raises(AuthenticationError) as info:
        await provider.complete(ASK, model="m")
    message = str(info.value)
    assert "ANTHROPIC_API_KEY" in message and "invalid x-api-key" in message
    assert KEY not in message and KEY not in repr(info.value.body)


async def test_401_without_a_key_says_to_set_it(clean_env: pytest.MonkeyPatch,
                                                mock: aioresponses) -> None:
    mock.post(MESSAGES_URL, status=401, payload=UNAUTHORIZED)
    async with AnthropicProvider(base_url=BASE) as p:
        with pytest.raises(AuthenticationError, match="no API key was sent: set "
                                                      "ANTHROPIC_API_KEY"):
            await p.complete(ASK, model="m")


async def test_404_names_model_and_request_id(provider: AnthropicProvider,
                                              mock: aioresponses) -> None:
    mock.post(MESSAGES_URL, status=404, payload=NOT_FOUND)
    with pytest.raises(ModelNotFoundError, match=r"model: claude-x \(request id "
                                                 r"req_011CNotFound\)"):
        await provider.complete(ASK, model="claude-x")


async def test_history_alternates_system_on_top_tools_and_images(
        provider: AnthropicProvider, mock: aioresponses, sent: Callable[..., list[Any]],
        tmp_path: Any) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 8
    image = tmp_path / "dot.png"
    image.write_bytes(png)
    mock.post(MESSAGES_URL, payload=BASIC_COMPLETE)
    history = [
        ChatMessage.system("You are terse."),
        ChatMessage.user("Look at this", images=(str(image), "https://example.com/cat.jpg")),
        ChatMessage.user("and tell me the weather in Paris"),
        ChatMessage(role="assistant", content="Checking.", tool_calls=(
            {"id": "toolu_1", "name": "get_weather", "arguments": {"location": "Paris"}},)),
        ChatMessage(role="tool", content="11 C", tool_call_id="toolu_1", name="get_weather"),
        ChatMessage.user("Thanks"),
        ChatMessage.system("Answer in French."),
    ]
    await provider.complete(history, model="m", tools=TOOLS)
    [(_, _, _, body)] = sent(mock, provider, KEY)
    assert body["system"] == "You are terse.\n\nAnswer in French."
    assert body["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "Look at this"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgoAAAAAAAAAAA=="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            {"type": "text", "text": "and tell me the weather in Paris"}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"location": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "11 C"},
            {"type": "text", "text": "Thanks"}]},
    ]


async def test_conversation_needs_a_user_message(provider: AnthropicProvider) -> None:
    with pytest.raises(ConfigurationError, match="at least one user message"):
        await provider.complete([{"role": "system", "content": "Be brief."}], model="m")
    with pytest.raises(ConfigurationError, match="tool_call_id"):
        await provider.complete([{"role": "tool", "content": "42"}], model="m")
    thinking = {THINKING_METADATA_KEY: [{"type": "thinking", "thinking": "t",
                                         "signature": "s"}]}
    with pytest.raises(ConfigurationError, match="cannot be merged"):
        await provider.complete([*ASK, ChatMessage.assistant("a"),
                                 ChatMessage.assistant("b", metadata=thinking)], model="m")


async def test_prompt_caching_betas_and_tool_choice(
        provider: AnthropicProvider, mock: aioresponses, sent: Callable[..., list[Any]]) -> None:
    mock.post(MESSAGES_URL, payload=BASIC_COMPLETE)
    openai_tool = {"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": TOOLS[0]["input_schema"]}}
    await provider.complete(
        [{"role": "system", "content": "Long manual..."}, *ASK], model="m",
        tools=[openai_tool],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        options={"cache_prompt": "all", "cache_ttl": "1h",
                 "betas": ["extended-cache-ttl-2025-04-11"], "disable_parallel_tool_use": True,
                 "stop_sequences": ["END"],
                 "extra_body": {"service_tier": "auto"}})
    [(_, _, headers, body)] = sent(mock, provider, KEY)
    assert headers == {**HEADERS, "anthropic-beta": "extended-cache-ttl-2025-04-11"}
    marker = {"type": "ephemeral", "ttl": "1h"}
    assert body == {
        "model": "m", "max_tokens": 4096,
        "system": [{"type": "text", "text": "Long manual...", "cache_control": marker}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello",
                                                   "cache_control": marker}]}],
        "stop_sequences": ["END"], "tools": TOOLS,
        "tool_choice": {"type": "tool", "name": "get_weather",
                        "disable_parallel_tool_use": True},
        "service_tier": "auto"}


def test_option_checks(provider: AnthropicProvider) -> None:
    with pytest.raises(OptionsError, match=r"seed.*no seed"):
        provider.parse_options({"seed": 1})
    with pytest.raises(OptionsError, match="at least 1024"):
        provider.parse_options({"thinking": 100})
    with pytest.raises(OptionsError, match="metadata takes only 'user_id'"):
        provider.parse_options({"metadata": {"email": "x"}})
    with pytest.raises(OptionsError, match=r"unknown option 'presence_penalty'.*top_k"):
        provider.parse_options({"presence_penalty": 1})
    with pytest.raises(OptionsError, match=r"cache_prompt"):
        provider.parse_options({"cache_prompt": "everything"})


async def test_max_tokens_must_exceed_thinking_budget(provider: AnthropicProvider) -> None:
    with pytest.raises(OptionsError, match=r"max_tokens.*thinking budget \(2048\)"):
        await provider.complete(ASK, model="m", options={"thinking": 2048, "max_tokens": 1000})


async def test_list_models_follows_pages(provider: AnthropicProvider,
                                         mock: aioresponses) -> None:
    mock.get(BASE + "/v1/models?limit=1000", payload={
        "data": [{"type": "model", "id": "claude-sonnet-4-5-20250929",
                  "display_name": "Claude Sonnet 4.5", "created_at": "2025-09-29T00:00:00Z",
                  "max_input_tokens": 200000}],
        "has_more": True, "first_id": "claude-sonnet-4-5-20250929",
        "last_id": "claude-sonnet-4-5-20250929"})
    mock.get(BASE + "/v1/models?limit=1000&after_id=claude-sonnet-4-5-20250929", payload={
        "data": [{"type": "model", "id": "claude-3-5-haiku-20241022",
                  "display_name": "Claude Haiku 3.5", "created_at": "2024-10-22T00:00:00Z"}],
        "has_more": False, "first_id": "claude-3-5-haiku-20241022",
        "last_id": "claude-3-5-haiku-20241022"})
    models = await provider.list_models()
    assert [m.id for m in models] == ["claude-sonnet-4-5-20250929", "claude-3-5-haiku-20241022"]
    assert models[0].context_length == 200000
    assert models[0].details["display_name"] == "Claude Sonnet 4.5"


async def test_count_tokens(provider: AnthropicProvider, mock: aioresponses,
                            sent: Callable[..., list[Any]]) -> None:
    mock.post(BASE + "/v1/messages/count_tokens", payload={"input_tokens": 14})
    count = await provider.count_tokens([{"role": "system", "content": "Be brief."}, *ASK],
                                        model="claude-sonnet-4-5", tools=TOOLS,
                                        options={"temperature": 0.2})
    assert count == 14
    [(_, url, headers, body)] = sent(mock, provider, KEY)
    assert url.endswith("/v1/messages/count_tokens") and headers == HEADERS
    assert body == {"model": "claude-sonnet-4-5", "messages": ASK, "system": "Be brief.",
                    "tools": TOOLS}


async def test_auth_token_and_base_url_with_v1(clean_env: pytest.MonkeyPatch,
                                               mock: aioresponses,
                                               sent: Callable[..., list[Any]]) -> None:
    clean_env.setenv("ANTHROPIC_AUTH_TOKEN", "oauth-token-abcdefghijkl")
    mock.post(MESSAGES_URL, payload=BASIC_COMPLETE)
    async with AnthropicProvider(base_url=BASE + "/v1/", betas=["a", "b"]) as p:
        await p.complete(ASK, model="m")
        [(_, url, headers, _)] = sent(mock, p, "oauth-token-abcdefghijkl")
    assert url == MESSAGES_URL
    assert headers == {**{k: v for k, v in HEADERS.items() if k != "x-api-key"},
                       "anthropic-beta": "a,b", "Authorization": "<redacted>"}


def test_registered_and_secret_never_in_repr(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ANTHROPIC_API_KEY", KEY)
    p = create_provider("anthropic")
    assert isinstance(p, AnthropicProvider)
    assert p.base_url == "https://api.anthropic.com"
    assert KEY not in repr(p) and KEY not in repr(p.http)
    assert re.search(r"AnthropicProvider 'anthropic'", repr(p))


async def test_chat_manager_tool_loop_round_trip(mock: aioresponses,
                                                 transcript: Callable[[str], str]) -> None:
    """ChatManager's tool loop: the replayed tool_use answer runs the function, and the next
    request carries the assistant's tool_use and the user's tool_result blocks. Nobody reads
    the rounds' streams, so they are non-streaming requests."""
    from modelplex import ChatManager

    mock.post(MESSAGES_URL, payload=TOOL_COMPLETE)
    mock.post(MESSAGES_URL, payload=BASIC_COMPLETE)

    def get_weather(location: str) -> str:
        """Weather in a city."""
        return f"11 C in {location}"

    async with ChatManager("anthropic:claude-sonnet-4-20250514", provider_config={
            "anthropic": {"base_url": BASE, "api_key": KEY}}) as chat:
        chat.enable_function_calling([get_weather])
        meta = await chat.get_response_with_meta("What's the weather in Paris?")
    first, second = (json.loads(call.kwargs["data"])
                     for calls in mock.requests.values() for call in calls)
    assert meta.content == "Hello there!"
    assert "stream" not in first and "stream" not in second
    assert first["tools"][0]["name"] == "get_weather"
    assert first["tools"][0]["input_schema"]["properties"]["location"]["type"] == "string"
    assert second["messages"][1:] == [
        {"role": "assistant", "content": [
            {"type": "text", "text": "I'll check the current weather in Paris for you."},
            {"type": "tool_use", "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "name": "get_weather",
             "input": {"location": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01NRLabsLyVHZPKxbKvkfSMn",
             "content": "11 C in Paris"}]}]


def test_timeouts_as_number_or_mapping(clean_env: pytest.MonkeyPatch) -> None:
    assert AnthropicProvider(timeouts=30).http.timeouts.total == 30
    assert AnthropicProvider(timeouts={"connect": 1.5}).http.timeouts.connect == 1.5
    with pytest.raises(ConfigurationError, match="timeouts"):
        AnthropicProvider(timeouts={"conect": 1})


@pytest.mark.parametrize(("stop_reason", "finish"), [
    ("pause_turn", "stop"), ("end_turn", "stop"), ("max_tokens", "length"),
    ("tool_use", "tool_calls"), ("refusal", "refusal"), ("a_new_reason", "other")])
async def test_stop_reasons_in_modelplex_vocabulary(
        provider: AnthropicProvider, mock: aioresponses, transcript: Callable[[str], str],
        stop_reason: str, finish: str) -> None:
    mock.post(MESSAGES_URL, payload={**RECORDED_MESSAGE, "stop_reason": stop_reason})
    response = await provider.complete(ASK, model="m")
    assert (response.finish_reason, response.stop_reason) == (finish, stop_reason)
    body = transcript("anthropic_basic_stream.sse").replace('"end_turn"', f'"{stop_reason}"')
    mock.post(MESSAGES_URL, body=body, headers=SSE)
    final = [c async for c in provider.chat(ASK, model="m")][-1]
    assert (final.finish_reason, final.stop_reason) == (finish, stop_reason)
