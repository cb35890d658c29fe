"""Chat over /api/chat: streaming and not, usage, tools, thinking, images, format, errors."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aioresponses import aioresponses
from pydantic import BaseModel

from modelplex.chunks import StreamChunk, ToolCall
from modelplex.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ModelNotFoundError,
    OptionsError,
    ServerBusyError,
    StreamError,
)
from modelplex.types import ChatMessage
from modelplex_ollama.provider import OllamaProvider

USER = [{"role": "user", "content": "Why is the sky blue?"}]
CHAT = "http://ollama.test:11434/api/chat"


async def collect(provider: OllamaProvider, **kw: Any) -> list[StreamChunk]:
    kw.setdefault("model", "llama3.2")
    return [c async for c in provider.chat(kw.pop("messages", USER), **kw)]


async def test_stream_text_usage_and_timings(provider: OllamaProvider, mock: aioresponses,
                                             wire: ModuleType) -> None:
    mock.post(CHAT, body=wire.chat_stream(), content_type="application/x-ndjson")
    chunks = await collect(provider)
    assert "".join(c.content for c in chunks) == "That's a fantastic question!"
    assert all(c.usage is None and c.finish_reason is None for c in chunks[:-1])
    final = chunks[-1]
    assert final.finish_reason == "stop"
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (26, 259)
    assert not final.usage.estimated
    assert final.usage.timings == pytest.approx(
        {"load": 6.338219291, "prompt_eval": 0.130079, "eval": 4.23271, "total": 10.706818083})
    assert final.model == "llama3.2"


async def test_request_body_sends_only_what_was_set(provider: OllamaProvider,
                                                    mock: aioresponses,
                                                    wire: ModuleType) -> None:
    mock.post(CHAT, body=wire.chat_stream())
    await collect(provider)
    body = wire.sent(mock, "POST", "/api/chat")
    assert body == {"model": "llama3.2", "stream": True,
                    "messages": [{"role": "user", "content": "Why is the sky blue?"}]}


async def test_options_split_between_request_and_options(provider: OllamaProvider,
                                                         mock: aioresponses,
                                                         wire: ModuleType) -> None:
    mock.post(CHAT, body=wire.chat_stream())
    await collect(provider, options={"temperature": 0.2, "max_tokens": 64, "stop": "\n\n",
                                     "seed": 7, "num_ctx": 8192, "top_k": 20, "min_p": 0.05,
                                     "repeat_penalty": 1.1, "use_mmap": False,
                                     "keep_alive": "30m", "think": "high"})
    body = wire.sent(mock, "POST", "/api/chat")
    assert body["keep_alive"] == "30m"
    assert body["think"] == "high"
    assert body["options"] == {"temperature": 0.2, "num_predict": 64, "stop": ["\n\n"],
                               "seed": 7, "num_ctx": 8192, "top_k": 20, "min_p": 0.05,
                               "repeat_penalty": 1.1, "use_mmap": False}


@pytest.mark.parametrize(("given", "sent"), [(0, 0), ("-1", -1), (300, 300), ("1h30m", "1h30m")])
async def test_keep_alive_forms(provider: OllamaProvider, mock: aioresponses,
                                wire: ModuleType, given: Any, sent: Any) -> None:
    mock.post(CHAT, body=wire.chat_stream())
    await collect(provider, options={"keep_alive": given})
    body = wire.sent(mock, "POST", "/api/chat")
    assert body["keep_alive"] == sent
    assert "options" not in body


@pytest.mark.parametrize("bad", [{"keep_alive": "soon"}, {"keep_alive": True},
                                 {"think": "extreme"}, {"num_ctx": 0}, {"min_p": 1.5},
                                 {"max_tokens": 10, "num_predict": 20}])
async def test_bad_options_fail_before_sending(provider: OllamaProvider, mock: aioresponses,
                                               bad: dict[str, Any]) -> None:
    with pytest.raises(OptionsError, match=next(iter(bad)) if len(bad) == 1 else "num_predict"):
        provider.chat(USER, model="llama3.2", options=bad)
    assert not mock.requests


async def test_response_format_json_and_schema(provider: OllamaProvider, mock: aioresponses,
                                               wire: ModuleType) -> None:
    class Person(BaseModel):
        age: int
        available: bool

    mock.post(CHAT, body=wire.CHAT_STRUCTURED)
    mock.post(CHAT, body=wire.CHAT_STRUCTURED)
    response = await provider.complete(USER, model="llama3.1", response_format=Person)
    assert json.loads(response.content) == {"age": 22, "available": False}
    assert wire.sent(mock, "POST", "/api/chat", 0)["format"] == Person.model_json_schema()
    await provider.complete(USER, model="llama3.1", response_format="json")
    assert wire.sent(mock, "POST", "/api/chat", 1)["format"] == "json"


async def test_tool_calls_streaming_and_not(provider: OllamaProvider, mock: aioresponses,
                                            wire: ModuleType) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    mock.post(CHAT, body=wire.ndjson(*wire.CHAT_TOOL_STREAM))
    chunks = await collect(provider, tools=tools)
    assert wire.sent(mock, "POST", "/api/chat")["tools"] == tools
    calls = [call for c in chunks if c.tool_calls for call in c.tool_calls]
    assert calls == [ToolCall(name="get_weather", arguments={"city": "Tokyo"})]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 15

    tool_line = json.loads(wire.CHAT_TOOL_STREAM[0])
    tool_line["message"]["tool_calls"][0]["id"] = "call_ab12cd34"
    mock.post(CHAT, body=json.dumps({**tool_line, "done": True, "done_reason": "stop",
                                     "eval_count": 15, "prompt_eval_count": 169}))
    response = await provider.complete(USER, model="llama3.2", tools=tools)
    assert response.tool_calls == [ToolCall(name="get_weather", arguments={"city": "Tokyo"},
                                            id="call_ab12cd34")]
    assert response.usage.completion_tokens == 15


async def test_tool_call_history_is_sent_in_ollama_shape(provider: OllamaProvider,
                                                         mock: aioresponses,
                                                         wire: ModuleType) -> None:
    mock.post(CHAT, body=wire.chat_stream())
    messages = [
        ChatMessage.user("Weather in Tokyo?"),
        ChatMessage(role="assistant", tool_calls=(
            {"id": "call_1", "name": "get_weather", "arguments": {"city": "Tokyo"}},)),
        ChatMessage(role="tool", content="22 C", name="get_weather", tool_call_id="call_1"),
    ]
    await collect(provider, messages=messages)
    sent = wire.sent(mock, "POST", "/api/chat")["messages"]
    assert sent[1] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}]}
    assert sent[2] == {"role": "tool", "content": "22 C", "tool_name": "get_weather",
                       "tool_call_id": "call_1"}


async def test_thinking_is_kept_apart_as_reasoning(provider: OllamaProvider,
                                                   mock: aioresponses,
                                                   wire: ModuleType) -> None:
    lines = [
        wire.chat_line("", message={"role": "assistant", "content": "", "thinking": "Light "}),
        wire.chat_line("", message={"role": "assistant", "content": "", "thinking": "scatters."}),
        wire.chat_line("Rayleigh scattering."),
        {**wire.chat_line(""), "done": True, "done_reason": "stop", **wire.METRICS},
    ]
    mock.post(CHAT, body=wire.ndjson(*lines))
    chunks = await collect(provider, options={"think": True})
    assert "".join(c.reasoning or "" for c in chunks) == "Light scatters."
    assert "".join(c.content for c in chunks) == "Rayleigh scattering."
    assert wire.sent(mock, "POST", "/api/chat")["think"] is True


async def test_images_from_path_bytes_base64_and_data_url(provider: OllamaProvider,
                                                          mock: aioresponses,
                                                          wire: ModuleType,
                                                          tmp_path: Path) -> None:
    raw = b"\x89PNG\r\n\x1a\nfake image"
    encoded = base64.b64encode(raw).decode()
    path = tmp_path / "cat.png"
    path.write_bytes(raw)
    mock.post(CHAT, body=wire.chat_stream())
    message = ChatMessage.user("What is this?", images=(
        str(path), raw, encoded, f"data:image/png;base64,{encoded}"))
    await collect(provider, messages=[message])
    sent = wire.sent(mock, "POST", "/api/chat")["messages"][0]
    assert sent["images"] == [encoded] * 4


async def test_image_that_is_neither_file_nor_base64(provider: OllamaProvider,
                                                     mock: aioresponses) -> None:
    message = ChatMessage.user("What is this?", images=("missing/cat.png",))
    with pytest.raises(ConfigurationError, match=r"neither an existing file nor base64"):
        await collect(provider, messages=[message])
    assert not mock.requests


async def test_stream_without_done_ends_with_estimated_usage(provider: OllamaProvider,
                                                             mock: aioresponses,
                                                             wire: ModuleType) -> None:
    mock.post(CHAT, body=wire.ndjson(*wire.CHAT_MINIMAL_STREAM))
    chunks = await collect(provider, model="dummy")
    assert "".join(c.content for c in chunks) == "I don't know."
    assert all(c.usage is None for c in chunks[:-1])
    usage = chunks[-1].usage
    assert usage is not None and usage.estimated
    assert usage.completion_tokens == 4  # 13 characters / 4, rounded up
    assert chunks[-1].finish_reason == "stop"


async def test_stream_cut_before_done_raises_and_keeps_partial(provider: OllamaProvider,
                                                               mock: aioresponses,
                                                               wire: ModuleType) -> None:
    mock.post(CHAT, body=wire.ndjson(*(wire.chat_line(w) for w in ["The", " sky"])))
    received: list[str] = []
    with pytest.raises(StreamError, match="ended before its final `done`") as info:
        async for chunk in provider.chat(USER, model="llama3.2"):
            received.append(chunk.content)
    assert received == ["The", " sky"]
    assert info.value.partial_content == "The sky"
    assert info.value.retriable


async def test_error_line_mid_stream(provider: OllamaProvider, mock: aioresponses,
                                     wire: ModuleType) -> None:
    lines = [wire.chat_line(w) for w in [" Yes", ".", "I", "can"]]
    mock.post(CHAT, body=wire.ndjson(*lines, {"error": "an error was encountered while "
                                                       "running the model"}))
    with pytest.raises(StreamError, match="an error was encountered while running the model") \
            as info:
        await collect(provider)
    assert info.value.partial_content == " Yes.Ican"
    assert len(info.value.partial_chunks) == 4


async def test_model_not_found_names_the_pull_command(provider: OllamaProvider,
                                                      mock: aioresponses,
                                                      wire: ModuleType) -> None:
    mock.post(CHAT, status=404, body=wire.not_found("llama9"))
    with pytest.raises(ModelNotFoundError) as info:
        await collect(provider, model="llama9")
    assert info.value.status_code == 404
    assert "`modelplex models pull ollama:llama9`" in str(info.value)
    mock.post(CHAT, status=404,
              body=json.dumps({"error": 'model "llama9" not found, try pulling it first'}))
    with pytest.raises(ModelNotFoundError, match=r"models pull ollama:llama9"):
        await provider.complete(USER, model="llama9")


async def test_server_busy_is_retriable(provider: OllamaProvider, mock: aioresponses) -> None:
    mock.post(CHAT, status=503, body=json.dumps(
        {"error": "server busy, please try again.  maximum pending requests exceeded"}))
    with pytest.raises(ServerBusyError, match="server busy") as info:
        await collect(provider)
    assert info.value.retriable
    assert info.value.status_code == 503


async def test_capability_and_auth_errors(provider: OllamaProvider, mock: aioresponses) -> None:
    mock.post(CHAT, status=400, body=json.dumps(
        {"error": "registry.ollama.ai/library/gemma:2b does not support tools"}))
    with pytest.raises(BadRequestError, match="does not support tools"):
        await collect(provider, model="gemma:2b", tools=[{"type": "function"}])
    mock.post(CHAT, status=401, body=json.dumps(
        {"error": "unauthorized", "signin_url": "https://ollama.com/connect?x"}))
    with pytest.raises(AuthenticationError, match=r"OLLAMA_API_KEY.*ollama.com/connect"):
        await collect(provider, model="gpt-oss:120b-cloud")


async def test_no_model_is_a_clear_error(provider: OllamaProvider, mock: aioresponses) -> None:
    with pytest.raises(ConfigurationError, match="ollama:MODEL"):
        await collect(provider, model="")
    assert not mock.requests


async def test_complete_equals_joined_stream_for_every_transcript(
        provider: OllamaProvider, mock: aioresponses, wire: ModuleType) -> None:
    mock.post(CHAT, body=wire.ndjson(*wire.CHAT_MINIMAL_STREAM))
    mock.post(CHAT, body=json.dumps({"model": "dummy", "message": {
        "role": "assistant", "content": "I don't know."}}))
    chunks = await collect(provider, model="dummy")
    response = await provider.complete(USER, model="dummy")
    assert wire.sent(mock, "POST", "/api/chat", 1)["stream"] is False
    assert response.content == "".join(c.content for c in chunks)
    assert response.usage == chunks[-1].usage
    assert response.finish_reason == chunks[-1].finish_reason
