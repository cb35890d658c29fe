"""The official ``openai`` client against ``modelplex serve``: chat (streamed and not), tools,
response_format, usage, models, embeddings, and errors as the client's exception classes."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import openai
import pytest

from modelplex.testing.upstream import PIECE, FaultyUpstream

USER = [{"role": "user", "content": "hi"}]


async def test_chat_non_streaming(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(model="fault:fault", messages=USER)
    assert reply.object == "chat.completion"
    assert reply.model == "fault:fault"
    assert reply.choices[0].message.content == PIECE * 5
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 5)
    assert reply.usage.total_tokens == 8


async def test_chat_streaming_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="fault:fault", messages=USER, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == PIECE * 5
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop" and set(finish[:-1]) == {None}
    assert chunks[-1].choices == []  # the usage chunk: last, no choices
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 8
    assert all(c.usage is None for c in chunks[:-1])


async def test_streaming_without_include_usage_has_no_usage_chunk(
        client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model="fault:fault", messages=USER,
                                                  stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


async def test_request_options_reach_the_upstream(client: openai.AsyncOpenAI,
                                                  upstream: FaultyUpstream) -> None:
    await client.chat.completions.create(
        model="fault:fault", temperature=0.3, max_completion_tokens=7, stop=["x"], seed=1,
        messages=[{"role": "developer", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "text", "text": "hello"}]}])
    body = upstream.bodies[0]
    assert body["model"] == "fault"
    assert body["temperature"] == 0.3 and body["seed"] == 1 and body["stop"] == ["x"]
    assert 7 in (body.get("max_tokens"), body.get("max_completion_tokens"))
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "hello"}]


@pytest.mark.parametrize("stream", [False, True])
async def test_tools(client: openai.AsyncOpenAI, tool_upstream: Any, stream: bool) -> None:
    tools: Any = [{"type": "function", "function": {
        "name": "GetWeatherArgs", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    kwargs: Any = {"model": "tools:gpt-4o", "messages": USER, "tools": tools,
                   "tool_choice": "auto"}
    if stream:
        chunks = [c async for c in await client.chat.completions.create(stream=True, **kwargs)]
        calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
        assert len(calls) == 1
        call = calls[0]
        assert (call.index, call.id, call.type) == (0, "call_c91SqDXlYFuETYv8mUHzz6pp",
                                                    "function")
        assert call.function is not None
        assert call.function.name == "GetWeatherArgs"
        assert json.loads(call.function.arguments or "") == {"city": "Edinburgh"}
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
    else:
        reply = await client.chat.completions.create(**kwargs)
        message = reply.choices[0].message
        assert reply.choices[0].finish_reason == "tool_calls"
        assert message.tool_calls is not None
        only = message.tool_calls[0]
        assert only.id == "call_abc123"
        assert only.function.name == "get_current_weather"  # type: ignore[union-attr]
        assert json.loads(only.function.arguments) == {  # type: ignore[union-attr]
            "location": "Boston, MA"}
    sent = tool_upstream.bodies[-1]
    assert sent["tools"] == tools
    assert sent["tool_choice"] == "auto"


async def test_tool_results_in_the_history_are_forwarded(client: openai.AsyncOpenAI,
                                                         tool_upstream: Any) -> None:
    await client.chat.completions.create(model="tools:gpt-4o", messages=[
        {"role": "user", "content": "Weather in Boston?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "weather", "arguments": "{\"city\": \"Boston\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22 C, sunny"}])
    messages = tool_upstream.bodies[-1]["messages"]
    assert messages[1]["tool_calls"][0]["id"] == "call_1"
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == \
        {"city": "Boston"}
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "22 C, sunny"}


async def test_response_format_reaches_the_upstream(client: openai.AsyncOpenAI,
                                                    tool_upstream: Any) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    await client.chat.completions.create(
        model="tools:gpt-4o", messages=USER,
        response_format={"type": "json_schema", "json_schema": {"name": "city",
                                                                "schema": schema}})
    assert tool_upstream.bodies[-1]["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "city", "schema": schema}}


async def test_models(client: openai.AsyncOpenAI) -> None:
    ids = [m.id async for m in client.models.list()]
    assert {"fault:fault", "llamacpp:smollm2"} <= set(ids)
    model = await client.models.retrieve("llamacpp:smollm2")
    assert (model.id, model.owned_by, model.object) == ("llamacpp:smollm2", "llamacpp", "model")
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("llamacpp:nope")


async def test_named_models(serve: Any) -> None:
    server = await serve(models={"fast": "fault:fault"})
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x",
                                  max_retries=0) as client:
        assert "fast" in [m.id async for m in client.models.list()]
        reply = await client.chat.completions.create(model="fast", messages=USER)
        assert reply.model == "fast"
        assert reply.choices[0].message.content == PIECE * 5


@pytest.mark.parametrize(("model", "kwargs", "error", "param"), [
    ("nope:model", {}, openai.NotFoundError, "model"),
    ("llamacpp:no-such-model", {}, openai.NotFoundError, "model"),
    ("fault:fault", {"temperature": 5}, openai.BadRequestError, "temperature"),
    ("fault:fault", {"n": 3}, openai.BadRequestError, "n"),
    ("fault:fault", {"messages": []}, openai.BadRequestError, "messages"),
    ("fault:fault", {"messages": [{"role": "user", "content": "  "}]},
     openai.BadRequestError, "messages.0.content"),
    ("fault:fault", {"messages": [{"role": "wizard", "content": "hi"}]},
     openai.BadRequestError, "messages.0.role"),
    ("llamacpp:smollm2", {"extra_body": {"options": {"n_ctx": -1}}},
     openai.BadRequestError, None),
    ("no-colon", {}, openai.BadRequestError, None),
])
async def test_errors_map_to_the_clients_exceptions(
        client: openai.AsyncOpenAI, model: str, kwargs: dict[str, Any],
        error: type[openai.APIStatusError], param: str | None) -> None:
    kwargs.setdefault("messages", USER)
    with pytest.raises(error) as info:
        await client.chat.completions.create(model=model, **kwargs)
    body = info.value.body
    assert isinstance(body, dict)
    assert set(body) == {"message", "type", "param", "code"}
    assert body["param"] == param
    assert body["message"]
    if error is openai.NotFoundError:
        assert body["code"] == "model_not_found"


@pytest.mark.parametrize(("fault", "error"), [
    ("429", openai.RateLimitError), ("503", openai.InternalServerError),
    ("500", openai.InternalServerError)])
async def test_upstream_statuses(client: openai.AsyncOpenAI, upstream: FaultyUpstream,
                                 fault: str, error: type[Exception]) -> None:
    upstream.faults.extend([fault] * 5)  # the openai provider may retry
    with pytest.raises(error) as info:
        await client.chat.completions.create(model="fault:fault", messages=USER, stream=True)
    if fault == "429":
        assert info.value.response.headers["retry-after"] == "2"  # type: ignore[attr-defined]


async def test_error_mid_stream_is_an_error_event(client: openai.AsyncOpenAI,
                                                  upstream: FaultyUpstream) -> None:
    upstream.faults.append("error_event")
    received = []
    with pytest.raises(openai.APIError, match="the model crashed"):
        async for chunk in await client.chat.completions.create(model="fault:fault",
                                                                messages=USER, stream=True):
            received.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in received) == PIECE * 2


@pytest.mark.slow
async def test_real_model_chat_and_json(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model="llamacpp:smollm2", max_tokens=24,
        messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.usage is not None and reply.usage.completion_tokens > 0

    stream = await client.chat.completions.create(
        model="llamacpp:smollm2", max_tokens=24, stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "What is the capital of France?"}])
    chunks = [c async for c in stream]
    assert "Paris" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    shaped = await client.chat.completions.create(
        model="llamacpp:smollm2", max_tokens=40, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Give the capital of France as JSON."}])
    assert isinstance(json.loads(shaped.choices[0].message.content or ""), dict)


@pytest.mark.slow
async def test_real_model_embeddings(client: openai.AsyncOpenAI) -> None:
    as_floats = await client.embeddings.create(model="llamacpp:smollm2",
                                               input=["hello", "world"],
                                               encoding_format="float")
    assert [d.index for d in as_floats.data] == [0, 1]
    assert len(as_floats.data[0].embedding) == 576
    default = await client.embeddings.create(model="llamacpp:smollm2", input="hello")
    # the client asks for base64 by default and decodes it: the same vector
    assert np.allclose(default.data[0].embedding, as_floats.data[0].embedding, atol=1e-5)
    assert default.usage.prompt_tokens > 0
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(model="llamacpp:smollm2", input=[])
    assert info.value.param == "input"
    with pytest.raises(openai.NotFoundError):
        await client.embeddings.create(model="llamacpp:nope", input="hello")
