"""Legacy ``/v1/completions`` with the official ``openai`` client: a prompt answered by the
model's chat, streamed or not, usage, and clear refusals of what chat cannot answer."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from modelplex.testing.upstream import PIECE, FaultyUpstream, Reply
from modelplex_server.app import AppServer


async def test_completion(client: openai.AsyncOpenAI, upstream: FaultyUpstream) -> None:
    reply = await client.completions.create(model="fault:fault", prompt="Say hi",
                                            max_tokens=20, temperature=0.1, stop=["\n"])
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    assert reply.choices[0].text == PIECE * 5
    assert reply.choices[0].finish_reason == "stop" and reply.choices[0].index == 0
    assert reply.usage is not None and reply.usage.total_tokens == 8
    sent = upstream.chat_requests()[-1].json
    assert sent["messages"] == [{"role": "user", "content": "Say hi"}]
    assert (sent["temperature"], sent["stop"]) == (0.1, ["\n"])


async def test_streamed_completion_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.completions.create(model="fault:fault", prompt=["Say hi"],
                                             stream=True,
                                             stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == PIECE * 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 8
    plain = [c async for c in await client.completions.create(model="fault:fault",
                                                             prompt="x", stream=True)]
    assert all(c.choices and c.usage is None for c in plain)


async def test_length_and_named_model(client: openai.AsyncOpenAI, gw: Any) -> None:
    reply = await client.completions.create(model="fault:fault", prompt="x", max_tokens=2)
    assert reply.choices[0].finish_reason == "length"
    gw.a.faults.extend(["503"] * 5)
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as c:
        routed = await c.completions.create(model="duo", prompt="x")
        assert routed.choices[0].text == PIECE * 5
        gw.scripted.replies.append(Reply("scripted answer"))
        scripted = await c.completions.create(model="scripted", prompt="x", stream=True)
        assert "".join([ch.choices[0].text async for ch in scripted if ch.choices]) == \
            "scripted answer"


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"prompt": ["a", "b"]}, "prompt"), ({"prompt": [1, 2, 3]}, "prompt"),
    ({"prompt": "x", "n": 2}, "n"), ({"prompt": "x", "best_of": 3}, "best_of"),
    ({"prompt": "x", "echo": True}, "echo"), ({"prompt": "x", "suffix": "end"}, "suffix"),
    ({"prompt": "x", "logprobs": 2}, "logprobs"), ({"prompt": "  "}, "prompt"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens")])
async def test_refused_clearly(client: openai.AsyncOpenAI, kwargs: Any, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.completions.create(model="fault:fault", **kwargs)
    assert info.value.param == param


async def test_errors(client: openai.AsyncOpenAI, server: AppServer,
                      upstream: FaultyUpstream) -> None:
    with pytest.raises(openai.NotFoundError):
        await client.completions.create(model="nope:model", prompt="x")
    upstream.faults.extend(["429"] * 5)
    with pytest.raises(openai.RateLimitError) as info:
        await client.completions.create(model="fault:fault", prompt="x", stream=True)
    assert info.value.response.headers["retry-after"] == "2"
    async with aiohttp.ClientSession() as session:
        for data in ('{"model": "fault:fault", "prompt": ', '{"model": "fault:fault"}'):
            async with session.post(server.url + "/v1/completions", data=data,
                                    headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["type"] == "invalid_request_error"


@pytest.mark.slow
async def test_real_model_answers_paris(client: openai.AsyncOpenAI) -> None:
    reply = await client.completions.create(model="llamacpp:smollm2", max_tokens=24,
                                            prompt="What is the capital of France?")
    assert "Paris" in reply.choices[0].text
