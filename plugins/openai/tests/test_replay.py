"""Replays of recorded OpenAI traffic (protocols.md §2.3, §2.5, §6.4) through aioresponses."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aioresponses import aioresponses

from modelplex.chunks import ToolCall
from modelplex.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ModelNotFoundError,
    RateLimitError,
    ServerBusyError,
    ServerError,
    StreamError,
)
from modelplex.http import Timeouts
from modelplex.testing import ProviderConformanceTests
from modelplex.testing.pytest_plugin import Sent
from modelplex.types import ChatMessage
from modelplex_openai.provider import OpenAIProvider

BASE = "https://api.openai.test/v1"
CHAT = BASE + "/chat/completions"
KEY = "sk-test-abcdefghijklmnopqrstuvwxyz0123"
SSE = {"Content-Type": "text/event-stream"}
DATA = Path(__file__).parent / "data"
MESSAGES = [{"role": "user", "content": "What's the weather like in Edinburgh?"}]

JSON_TEXT = '{"city":"San Francisco","temperature":61,"units":"f"}'
# The non-streaming twin of openai_json_stream.sse (same content, finish reason and usage).
JSON_COMPLETE = {
    "id": "chatcmpl-ABfw1e5abtU8OwGr15vOreYVb2MiF", "object": "chat.completion",
    "created": 1727346169, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": JSON_TEXT,
                                         "refusal": None},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 79, "completion_tokens": 14, "total_tokens": 93},
}
# The non-streaming twin of openai_tool_stream.sse.
TOOL_COMPLETE = {
    "id": "chatcmpl-ABfw8AOXnoa2kzy11vVTSjuQhHCQr", "object": "chat.completion",
    "created": 1727346176, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {
        "role": "assistant", "content": None, "refusal": None,
        "tool_calls": [{"id": "call_c91SqDXlYFuETYv8mUHzz6pp", "type": "function",
                        "function": {"name": "GetWeatherArgs",
                                     "arguments": '{"city":"Edinburgh","country":"UK",'
                                                  '"units":"c"}'}}]},
        "logprobs": None, "finish_reason": "tool_calls"}],
    "usage": {"prompt_tokens": 76, "completion_tokens": 24, "total_tokens": 100},
}
# protocols.md §2.5, observed bodies
NOT_FOUND = {"error": {"message": "The model `gpt-4-mini` does not exist or you do not have "
                                  "access to it.", "type": "invalid_request_error",
                       "param": None, "code": "model_not_found"}}
RATE_LIMITED = {"error": {"message": "Rate limit reached for gpt-4o-mini in organization "
                                     "org-abc on tokens per min (TPM): Limit 200000, Used "
                                     "200000, Requested 775. Please try again in 232ms. Visit "
                                     "https://platform.openai.com/account/rate-limits to learn "
                                     "more.", "type": "tokens", "param": None,
                          "code": "rate_limit_exceeded"}}
TOOLS = [{"type": "function", "function": {
    "name": "GetWeatherArgs", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"},
                                         "country": {"type": "string"},
                                         "units": {"type": "string", "enum": ["c", "f"]}}}}}]


def read(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


@pytest.fixture
async def provider(clean_env: pytest.MonkeyPatch) -> AsyncIterator[OpenAIProvider]:
    clean_env.setenv("OPENAI_API_KEY", KEY)
    clean_env.setenv("OPENAI_BASE_URL", BASE)
    p = OpenAIProvider()
    yield p
    await p.aclose()


class TestOpenAIConformance(ProviderConformanceTests):
    """The shared provider contract, driven by the core's test upstream (OpenAI wire)."""

    wire = "openai"
    plugin = "openai"

    def make_provider(self, base_url: str, *, timeouts: Timeouts,
                      api_key: str | None) -> OpenAIProvider:
        return OpenAIProvider(base_url=base_url + "/v1", api_key=api_key, timeouts=timeouts)


async def test_json_stream_usage_merged_into_the_final_chunk(
        provider: OpenAIProvider, mock: aioresponses,
        sent: Sent) -> None:
    mock.post(CHAT, body=read("openai_json_stream.sse"), headers=SSE)
    chunks = [c async for c in provider.chat(MESSAGES, model="gpt-4o",
                                             response_format="json")]
    assert "".join(c.content for c in chunks) == JSON_TEXT
    final = chunks[-1]
    assert final.finish_reason == "stop"
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (79, 14)
    assert not final.usage.estimated
    assert final.model == "gpt-4o-2024-08-06"
    assert all(c.usage is None and c.finish_reason is None for c in chunks[:-1])
    [body] = sent.bodies(mock)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["response_format"] == {"type": "json_object"}


async def test_tool_call_deltas_joined_and_equal_to_non_streaming(
        provider: OpenAIProvider, mock: aioresponses,
        sent: Sent) -> None:
    mock.post(CHAT, body=read("openai_tool_stream.sse"), headers=SSE)
    mock.post(CHAT, payload=TOOL_COMPLETE)
    chunks = [c async for c in provider.chat(MESSAGES, model="gpt-4o", tools=TOOLS,
                                             tool_choice="required")]
    expected = [ToolCall(name="GetWeatherArgs", id="call_c91SqDXlYFuETYv8mUHzz6pp",
                         arguments={"city": "Edinburgh", "country": "UK", "units": "c"})]
    assert [c.tool_calls for c in chunks if c.tool_calls] == [expected]
    assert chunks[-1].tool_calls == expected  # emitted once, on the final chunk
    assert chunks[-1].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 24
    response = await provider.complete(MESSAGES, model="gpt-4o", tools=TOOLS,
                                       tool_choice="required")
    assert response.tool_calls == expected
    assert response.finish_reason == "tool_calls"
    assert response.content == "".join(c.content for c in chunks) == ""
    for body in sent.bodies(mock):
        assert body["tools"] == TOOLS
        assert body["tool_choice"] == "required"


async def test_tool_history_is_serialised(provider: OpenAIProvider, mock: aioresponses,
                                          sent: Sent
                                          ) -> None:
    mock.post(CHAT, payload=JSON_COMPLETE)
    history = [
        ChatMessage.user("Weather in Edinburgh?"),
        ChatMessage(role="assistant", content="", tool_calls=(
            {"id": "call_1", "name": "GetWeatherArgs", "arguments": {"city": "Edinburgh"}},)),
        ChatMessage(role="tool", content='{"temp": 11}', tool_call_id="call_1",
                    name="GetWeatherArgs"),
    ]
    await provider.complete(history, model="gpt-4o", tools=TOOLS)
    [body] = sent.bodies(mock)
    assert body["messages"][1] == {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "GetWeatherArgs",
                                     "arguments": '{"city": "Edinburgh"}'}}]}
    assert body["messages"][2] == {"role": "tool", "tool_call_id": "call_1",
                                   "content": '{"temp": 11}'}
    assert "stream" not in body


async def test_tool_message_without_id_is_a_clear_error(provider: OpenAIProvider) -> None:
    with pytest.raises(ConfigurationError, match="tool_call_id"):
        await provider.complete([{"role": "tool", "content": "42"}], model="gpt-4o")


async def test_refusal_is_kept_as_content(provider: OpenAIProvider,
                                          mock: aioresponses) -> None:
    mock.post(CHAT, body=read("openai_refusal_stream.sse"), headers=SSE)
    mock.post(CHAT, payload={"id": "x", "object": "chat.completion", "model": "gpt-4o",
                             "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                 "role": "assistant", "content": None,
                                 "refusal": "I'm sorry, I can't help with that."}}],
                             "usage": {"prompt_tokens": 17, "completion_tokens": 10}})
    chunks = [c async for c in provider.chat(MESSAGES, model="gpt-4o")]
    assert "".join(c.content for c in chunks) == "I'm sorry, I can't help with that."
    assert chunks[-1].finish_reason == "refusal"
    response = await provider.complete(MESSAGES, model="gpt-4o")
    assert response.content == "I'm sorry, I can't help with that."
    assert response.finish_reason == "refusal"


async def test_error_event_raises_after_the_delivered_chunks(provider: OpenAIProvider,
                                                             mock: aioresponses) -> None:
    mock.post(CHAT, body=read("openai_error_stream.sse"), headers=SSE)
    received = []
    with pytest.raises(StreamError, match="error while processing your request") as info:
        async for chunk in provider.chat(MESSAGES, model="gpt-4o"):
            received.append(chunk.content)
    assert received == ["The capital", " of France"]
    assert info.value.partial_content == "The capital of France"
    assert info.value.retriable


@pytest.mark.parametrize("body", [
    # older llama.cpp servers: a non-standard `error:` field
    'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
    'error: {"code":500,"message":"slot unavailable","type":"server_error"}\n\n',
    # a named `error` event (Anthropic-style endpoints of llama.cpp)
    'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
    'event: error\ndata: {"type":"error","error":{"type":"server_error",'
    '"message":"slot unavailable"}}\n\n',
])
async def test_other_error_event_shapes(provider: OpenAIProvider, mock: aioresponses,
                                        body: str) -> None:
    mock.post(CHAT, body=body, headers=SSE)
    with pytest.raises(StreamError, match="slot unavailable") as info:
        async for _ in provider.chat(MESSAGES, model="m"):
            pass
    assert info.value.partial_content == "Hi"


async def test_stream_cut_off_before_the_end(provider: OpenAIProvider,
                                             mock: aioresponses) -> None:
    mock.post(CHAT, body='data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n',
              headers=SSE)
    with pytest.raises(StreamError, match="ended before") as info:
        async for _ in provider.chat(MESSAGES, model="m"):
            pass
    assert info.value.partial_content == "Hi"


async def test_llamacpp_timings_give_usage(provider: OpenAIProvider,
                                           mock: aioresponses) -> None:
    mock.post(CHAT, body=read("llamacpp_timings_stream.sse"), headers=SSE)
    chunks = [c async for c in provider.chat(MESSAGES, model="qwen2.5:0.5b")]
    assert "".join(c.content for c in chunks) == "Certainly"
    usage = chunks[-1].usage
    assert usage is not None and not usage.estimated
    assert (usage.prompt_tokens, usage.completion_tokens) == (15 + 24, 120)
    assert usage.timings == pytest.approx({"prompt_eval": 0.019535, "eval": 1.232389,
                                           "total": 1.251924})
    assert chunks[-1].finish_reason == "length"


async def test_no_usage_at_all_is_estimated(provider: OpenAIProvider,
                                            mock: aioresponses) -> None:
    body = ('data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
            'data: {"choices":[{"index":0,"delta":{"content":"Par"}}]}\n\n'
            'data: {"choices":[{"index":0,"delta":{"content":"is"}}]}\n\n'
            'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
            "data: [DONE]\n\n")
    mock.post(CHAT, body=body, headers=SSE)
    chunks = [c async for c in provider.chat(MESSAGES, model="m")]
    usage = chunks[-1].usage
    assert usage is not None and usage.estimated
    assert usage.completion_tokens == 2
    assert usage.prompt_tokens > 0


async def test_rate_limit_with_retry_after_ms(provider: OpenAIProvider,
                                              mock: aioresponses) -> None:
    mock.post(CHAT, status=429, payload=RATE_LIMITED,
              headers={"retry-after-ms": "232", "retry-after": "1",
                       "x-ratelimit-remaining-tokens": "0", "x-request-id": "req_123"})
    with pytest.raises(RateLimitError, match="Rate limit reached") as info:
        async for _ in provider.chat(MESSAGES, model="gpt-4o-mini"):
            pass
    assert info.value.retry_after == pytest.approx(0.232)
    assert info.value.retriable
    assert info.value.status_code == 429


async def test_rate_limit_with_retry_after_seconds(provider: OpenAIProvider,
                                                   mock: aioresponses) -> None:
    mock.post(CHAT, status=429, payload=RATE_LIMITED, headers={"Retry-After": "20"})
    with pytest.raises(RateLimitError) as info:
        await provider.complete(MESSAGES, model="gpt-4o-mini")
    assert info.value.retry_after == 20


async def test_insufficient_quota_is_not_retriable(provider: OpenAIProvider,
                                                   mock: aioresponses) -> None:
    mock.post(CHAT, status=429, payload={"error": {
        "message": "You exceeded your current quota, please check your plan and billing "
                   "details.", "type": "insufficient_quota", "param": None,
        "code": "insufficient_quota"}})
    with pytest.raises(RateLimitError, match="quota") as info:
        await provider.complete(MESSAGES, model="gpt-4o-mini")
    assert not info.value.retriable


async def test_401_names_the_variable_and_hides_the_key(provider: OpenAIProvider,
                                                        mock: aioresponses) -> None:
    mock.post(CHAT, status=401, payload={"error": {
        "message": f"Incorrect API key provided: {KEY}. You can find your API key at "
                   "https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY") as info:
        await provider.complete(MESSAGES, model="gpt-4o")
    err = info.value
    assert KEY not in str(err)
    assert KEY not in json.dumps(err.body)
    assert KEY not in repr(provider)
    assert KEY not in repr(provider.http)


async def test_401_without_a_key_says_to_set_it(clean_env: pytest.MonkeyPatch,
                                                mock: aioresponses) -> None:
    mock.post(CHAT, status=401, payload={"error": {
        "message": "You didn't provide an API key.", "type": "invalid_request_error",
        "param": None, "code": None}})
    async with OpenAIProvider(base_url=BASE) as p:
        with pytest.raises(AuthenticationError, match="set OPENAI_API_KEY"):
            await p.complete(MESSAGES, model="gpt-4o")


async def test_401_on_a_named_endpoint_names_its_variable(clean_env: pytest.MonkeyPatch,
                                                          mock: aioresponses) -> None:
    mock.post(CHAT, status=401, payload={"error": "Invalid credentials in Authorization "
                                                  "header"})
    async with OpenAIProvider(name="hf", base_url=BASE, api_key_env="HF_TOKEN") as p:
        with pytest.raises(AuthenticationError, match="HF_TOKEN") as info:
            await p.complete(MESSAGES, model="m")
    assert "Invalid credentials" in str(info.value)
    assert info.value.provider == "hf"


async def test_404_model_not_found(provider: OpenAIProvider, mock: aioresponses) -> None:
    mock.post(CHAT, status=404, payload=NOT_FOUND)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        await provider.complete(MESSAGES, model="gpt-4-mini")


async def test_404_from_a_wrong_base_url_hints_at_v1(provider: OpenAIProvider,
                                                     mock: aioresponses) -> None:
    mock.post(CHAT, status=404, body="Not Found")
    with pytest.raises(ModelNotFoundError, match="right base URL"):
        await provider.complete(MESSAGES, model="gpt-4o")


async def test_hf_router_model_not_supported(provider: OpenAIProvider,
                                             mock: aioresponses) -> None:
    mock.post(CHAT, status=400, payload={"error": {
        "message": "The requested model 'Qwen/Qwen3-Next-80B-A3B-Thinking' is not supported "
                   "by any provider you have enabled.", "type": "invalid_request_error",
        "param": "model", "code": "model_not_supported"}})
    with pytest.raises(ModelNotFoundError, match="not supported by any provider"):
        await provider.complete(MESSAGES, model="Qwen/Qwen3-Next-80B-A3B-Thinking")


async def test_400_keeps_the_server_message(provider: OpenAIProvider,
                                            mock: aioresponses) -> None:
    mock.post(CHAT, status=400, payload={"error": {
        "message": "Invalid value for 'tool_choice': 'required' is not supported.",
        "type": "invalid_request_error", "param": "tool_choice", "code": None}})
    with pytest.raises(BadRequestError, match="'required' is not supported") as info:
        await provider.complete(MESSAGES, model="gpt-4o")
    assert not info.value.retriable


@pytest.mark.parametrize(("status", "cls"), [(500, ServerError), (502, ServerError),
                                             (503, ServerBusyError)])
async def test_5xx_is_retriable(provider: OpenAIProvider, mock: aioresponses, status: int,
                                cls: type[Exception]) -> None:
    mock.post(CHAT, status=status, payload={"error": {
        "message": "The server had an error while processing your request.",
        "type": "server_error", "param": None, "code": None}})
    with pytest.raises(cls) as info:
        async for _ in provider.chat(MESSAGES, model="gpt-4o"):
            pass
    assert getattr(info.value, "retriable", False)


async def test_options_images_and_extra_body_are_sent(
        provider: OpenAIProvider, mock: aioresponses, tmp_path: Path,
        sent: Sent) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 8
    path = tmp_path / "pixel.png"
    path.write_bytes(png)
    mock.post(CHAT, payload=JSON_COMPLETE)
    message = ChatMessage.user("What is this?", images=(
        str(path), png, "https://example.com/cat.jpg", "iVBORw0KGgoAAAAA"))
    options = {"temperature": 0.1, "top_p": 0.9, "max_tokens": 5, "stop": "END", "seed": 1,
               "presence_penalty": 0.5, "frequency_penalty": -0.5, "logit_bias": {50256: -100},
               "user": "u1", "max_completion_tokens": 9, "parallel_tool_calls": False,
               "extra_body": {"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}}}
    await provider.complete([message], model="gpt-4o", options=options,
                            response_format={"type": "object",
                                             "properties": {"a": {"type": "string"}}})
    [body] = sent.bodies(mock)
    parts = body["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "What is this?"}
    urls = [p["image_url"]["url"] for p in parts[1:]]
    assert urls[0] == urls[1]
    assert urls[0].startswith("data:image/png;base64,iVBORw0KGgo")
    assert urls[2] == "https://example.com/cat.jpg"
    assert urls[3] == "data:image/png;base64,iVBORw0KGgoAAAAA"
    assert body["stop"] == ["END"]
    assert body["logit_bias"] == {"50256": -100}
    assert body["top_k"] == 20
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert "extra_body" not in body
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "response", "schema": {"type": "object",
                                       "properties": {"a": {"type": "string"}}}}}
    for key in ("temperature", "top_p", "max_tokens", "seed", "presence_penalty",
                "frequency_penalty", "user", "max_completion_tokens"):
        assert body[key] == options[key]
    assert "parallel_tool_calls" not in body  # without tools, servers refuse it


async def test_bad_image_is_a_clear_error(provider: OpenAIProvider) -> None:
    with pytest.raises(ConfigurationError, match="neither a URL"):
        await provider.complete([ChatMessage.user("x", images=("not an image!",))],
                                model="gpt-4o")


def test_option_ranges(provider: OpenAIProvider) -> None:
    from modelplex.errors import OptionsError

    with pytest.raises(OptionsError, match=r"presence_penalty.*between -2 and 2"):
        provider.parse_options({"presence_penalty": 3})
    with pytest.raises(OptionsError, match="between -100 and 100"):
        provider.parse_options({"logit_bias": {"1": 500}})


async def test_embeddings_batches_and_dimensions(
        provider: OpenAIProvider, mock: aioresponses,
        sent: Sent) -> None:
    url = BASE + "/embeddings"
    mock.post(url, payload={"object": "list", "model": "text-embedding-3-small", "data": [
        {"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
        {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]}]})
    # the second batch answers in base64 (encoding_format=base64): float32 little-endian
    mock.post(url, payload={"object": "list", "data": [
        {"object": "embedding", "index": 0, "embedding": "AACAPwAAAEA="}]})
    vectors = await provider.embed(["a", "b", "c"], model="text-embedding-3-small",
                                   options={"dimensions": 2, "batch_size": 2})
    assert vectors == [[1.0, 0.0], [0.0, 1.0], [1.0, 2.0]]
    bodies = sent.bodies(mock)
    assert [b["input"] for b in bodies] == [["a", "b"], ["c"]]
    assert all(b["dimensions"] == 2 for b in bodies)


async def test_unknown_embedding_option(provider: OpenAIProvider) -> None:
    from modelplex.errors import OptionsError

    with pytest.raises(OptionsError, match="valid options"):
        await provider.embed(["a"], model="m", options={"dimension": 3})


async def test_list_models_with_server_extras(provider: OpenAIProvider,
                                              mock: aioresponses) -> None:
    mock.get(BASE + "/models", payload={"object": "list", "data": [
        # protocols.md §6.4, llama.cpp /v1/models
        {"id": "../models/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "object": "model",
         "created": 1735142223, "owned_by": "llamacpp",
         "meta": {"vocab_type": 2, "n_vocab": 128256, "n_ctx_train": 131072, "n_embd": 4096,
                  "n_params": 8030261312, "size": 4912898304}},
        # vLLM reports the context window as max_model_len
        {"id": "meta-llama/Llama-3.1-8B-Instruct", "object": "model", "created": 1,
         "owned_by": "vllm", "max_model_len": 32768},
        {"id": "model-id-0", "object": "model", "created": 1686935002,
         "owned_by": "organization-owner", "shutdown_date": None}]})
    llama, vllm, plain = await provider.list_models()
    assert llama.context_length == 131072
    assert llama.parameter_count == 8030261312
    assert llama.size_bytes == 4912898304
    assert vllm.context_length == 32768
    assert plain.details == {"created": 1686935002, "owned_by": "organization-owner"}


async def test_health_falls_back_to_the_root_health_route(provider: OpenAIProvider,
                                                          mock: aioresponses) -> None:
    mock.get(BASE + "/models", status=404, body="Not Found")
    mock.get("https://api.openai.test/health", payload={"status": "ok"})
    health = await provider.health()
    assert health.healthy
    mock.get(BASE + "/models", status=503, payload={"error": {
        "code": 503, "message": "Loading model", "type": "unavailable_error"}})
    health = await provider.health()
    assert not health.healthy
    assert "Loading model" in (health.detail or "")


def test_secret_never_in_repr(provider: OpenAIProvider) -> None:
    assert KEY not in repr(provider)
    assert KEY not in repr(vars(provider)["api_key"])
    assert re.search(r"\*+", str(vars(provider)["api_key"]))


async def test_pydantic_response_format_and_reasoning(
        provider: OpenAIProvider, mock: aioresponses,
        sent: Sent) -> None:
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str
        temperature: int

    body = ('data: {"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}\n\n'
            'data: {"choices":[{"index":0,"delta":{"reasoning_content":"Think."}}]}\n\n'
            'data: {"choices":[{"index":0,"delta":{"content":"{}"}}]}\n\n'
            'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
            'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}\n\n'
            "data: [DONE]\n\n")
    mock.post(CHAT, body=body, headers=SSE)
    mock.post(CHAT, payload={"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "{}", "reasoning_content": "Think."}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
    chunks = [c async for c in provider.chat(MESSAGES, model="m", response_format=Weather)]
    assert [c.reasoning for c in chunks if c.reasoning] == ["Think."]
    assert "".join(c.content for c in chunks) == "{}"
    response = await provider.complete(MESSAGES, model="m", response_format=Weather)
    assert (response.reasoning, response.content) == ("Think.", "{}")
    for body in sent.bodies(mock):
        assert body["response_format"] == {"type": "json_schema", "json_schema": {
            "name": "Weather", "schema": Weather.model_json_schema()}}
