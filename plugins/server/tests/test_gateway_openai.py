"""Chat-completions and embeddings parity (issue 21) with the official ``openai`` client:
the usage chunk exactly as OpenAI sends it, streamed tool calls in OpenAI's indexed shape,
response_format, n and logprobs refused, seed/stop/user passed on, base64 embeddings."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from modelplex.testing.upstream import PIECE, FaultyUpstream, Reply
from modelplex_server.app import AppServer

USER: Any = [{"role": "user", "content": "hi"}]
TOOLS: Any = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture
async def oai(gw: Any) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused",
                                  max_retries=0) as c:
        yield c


async def sse_events(url: str, body: dict[str, Any]) -> list[Any]:
    """The ``data:`` payloads of a streamed answer, parsed (``[DONE]`` kept as a string)."""
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        assert resp.status == 200
        text = await resp.text()
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


# -- chat completions ----------------------------------------------------------------------------
async def test_include_usage_gives_openais_usage_chunk(server: AppServer) -> None:
    url = server.url + "/v1/chat/completions"
    events = await sse_events(url, {"model": "fault:fault", "messages": USER, "stream": True,
                                    "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    usage = events[-2]
    assert set(usage) == {"id", "object", "created", "model", "choices", "usage"}
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert usage["object"] == "chat.completion.chunk" and usage["id"] == events[0]["id"]
    assert all("usage" not in e and e["choices"] for e in events[:-2])
    assert events[-3]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": "stop"}

    plain = await sse_events(url, {"model": "fault:fault", "messages": USER, "stream": True})
    assert plain[-1] == "[DONE]"
    assert all("usage" not in e and e["choices"] for e in plain[:-1])


async def test_streamed_tool_calls_in_openais_indexed_shape(
        oai: openai.AsyncOpenAI, gw: Any) -> None:
    gw.scripted.replies.append(Reply(tool_calls=[
        {"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_1"},
        {"name": "get_weather", "arguments": {"city": "Rome"}, "id": "call_2"}],
        prompt_tokens=7, completion_tokens=5))
    stream = await oai.chat.completions.create(model="scripted", messages=USER, tools=TOOLS,
                                               stream=True,
                                               stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    deltas = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
    calls: dict[int, dict[str, Any]] = {}
    for delta in deltas:  # as clients do: fragments joined by index
        entry = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
        entry["id"] = delta.id or entry["id"]
        if delta.function is not None:
            entry["name"] += delta.function.name or ""
            entry["arguments"] += delta.function.arguments or ""
    assert sorted(calls) == [0, 1]
    assert calls[0]["id"] == "call_1" and calls[1]["id"] == "call_2"
    assert {i: json.loads(c["arguments"]) for i, c in calls.items()} == {
        0: {"city": "Paris"}, 1: {"city": "Rome"}}
    assert all(d.type == "function" for d in deltas if d.id)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 12
    assert gw.scripted.bodies[-1]["tools"] == TOOLS


@pytest.mark.parametrize(("fmt", "sent"), [
    ({"type": "json_object"}, {"type": "json_object"}),
    ({"type": "json_schema", "json_schema": {
        "name": "city", "strict": True,
        "schema": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}},
     {"type": "json_schema", "json_schema": {
         "name": "city",
         "schema": {"type": "object", "properties": {"city": {"type": "string"}},
                    "required": ["city"], "additionalProperties": False}}}),
])
async def test_response_format_becomes_the_structured_output_request(
        oai: openai.AsyncOpenAI, gw: Any, fmt: Any, sent: Any) -> None:
    gw.scripted.replies.append(Reply('{"city": "Paris"}'))
    reply = await oai.chat.completions.create(model="scripted", messages=USER,
                                              response_format=fmt)
    assert json.loads(reply.choices[0].message.content or "") == {"city": "Paris"}
    assert gw.scripted.bodies[-1]["response_format"] == sent


async def test_strict_reaches_the_chat_request(server: AppServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from modelplex.provider import Provider

    seen: list[Any] = []
    original = Provider.complete_request

    async def spy(self: Provider, request: Any) -> Any:
        seen.append(request.response_format)
        return await original(self, request)

    monkeypatch.setattr(Provider, "complete_request", spy)
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x",
                                  max_retries=0) as client:
        await client.chat.completions.create(
            model="fault:fault", messages=USER, response_format={
                "type": "json_schema", "json_schema": {"name": "n", "strict": True,
                                                       "schema": {"type": "object"}}})
    assert {"type": "json_schema", "name": "n", "schema": {"type": "object"},
            "strict": True} in seen


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"n": 2}, "n"), ({"logprobs": True}, "logprobs"),
    ({"logprobs": False, "top_logprobs": 3}, "top_logprobs")])
async def test_n_and_logprobs_are_refused_clearly(client: openai.AsyncOpenAI,
                                                  kwargs: Any, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="fault:fault", messages=USER, **kwargs)
    assert info.value.param == param
    assert "not supported" in info.value.message


async def test_n_of_one_is_answered(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(model="fault:fault", messages=USER, n=1)
    assert reply.choices[0].message.content == PIECE * 5


async def test_seed_stop_and_user_reach_the_upstream(oai: openai.AsyncOpenAI,
                                                     gw: Any) -> None:
    gw.scripted.replies.append(Reply("ok"))
    await oai.chat.completions.create(model="scripted", messages=USER, seed=7, stop="END",
                                      user="user-42")
    body = gw.scripted.bodies[-1]
    assert (body["seed"], body["stop"], body["user"]) == (7, ["END"], "user-42")


async def test_a_named_model_whose_first_deployment_answers_503(
        oai: openai.AsyncOpenAI, gw: Any) -> None:
    gw.a.faults.extend(["503"] * 5)
    stream = await oai.chat.completions.create(model="duo", messages=USER, stream=True,
                                               stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == PIECE * 5
    assert chunks[-1].usage is not None
    assert (gw.a.requests, gw.b.requests) == (1, 1)


# -- embeddings ----------------------------------------------------------------------------------
async def test_embeddings_base64_is_little_endian_float32(server: AppServer,
                                                          client: openai.AsyncOpenAI,
                                                          upstream: FaultyUpstream) -> None:
    as_floats = await client.embeddings.create(model="fault:fault", input=["hello", "world"],
                                               encoding_format="float")
    default = await client.embeddings.create(model="fault:fault", input=["hello", "world"])
    assert [d.index for d in default.data] == [0, 1]
    assert len(as_floats.data[0].embedding) == 8
    for a, b in zip(as_floats.data, default.data, strict=True):
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
    assert default.usage.prompt_tokens > 0
    assert default.usage.total_tokens == default.usage.prompt_tokens
    async with aiohttp.ClientSession() as session, session.post(
            server.url + "/v1/embeddings", json={"model": "fault:fault", "input": "hello",
                                                 "encoding_format": "base64"}) as resp:
        raw = (await resp.json())["data"][0]["embedding"]
    assert isinstance(raw, str)
    decoded = struct.unpack("<8f", base64.b64decode(raw))
    assert list(decoded) == pytest.approx(as_floats.data[0].embedding, abs=1e-6)


async def test_embeddings_dimensions_and_token_ids(client: openai.AsyncOpenAI,
                                                   upstream: FaultyUpstream) -> None:
    same = await client.embeddings.create(model="fault:fault", input="hi", dimensions=8)
    assert len(same.data[0].embedding) == 8
    assert upstream.received[-1].json["dimensions"] == 8  # passed on to the provider
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(model="fault:fault", input="hi", dimensions=4)
    assert info.value.param == "dimensions" and "not supported" in info.value.message
    for tokens in ([1, 2, 3], [[1, 2], [3]]):
        with pytest.raises(openai.BadRequestError) as info:
            await client.embeddings.create(model="fault:fault", input=tokens)
        assert info.value.param == "input" and "token ids" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(model="fault:fault", input=[])
    assert info.value.param == "input"


@pytest.mark.slow
async def test_embeddings_dimensions_refused_by_llamacpp(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(model="llamacpp:smollm2", input="hi", dimensions=4)
    assert info.value.param == "dimensions"
