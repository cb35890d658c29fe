"""Anthropic's Messages API (``/v1/messages``, ``/v1/messages/count_tokens``) with the official
``anthropic`` client: text, streams, system blocks, stop sequences, a tools round trip over a
scripted upstream, a named model whose first deployment answers 503, the real SmolLM2, and
errors as the client's own exception classes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anthropic
import pytest

from modelplex.testing.upstream import PIECE, FaultyUpstream, Reply
from modelplex_server.app import AppServer
from modelplex_server.settings import KeyConfig, hash_key

USER: Any = [{"role": "user", "content": "hi"}]
TOOLS: Any = [{"name": "get_weather", "description": "Weather in a city",
               "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                "required": ["city"]}}]


def client_for(url: str, **kwargs: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key=kwargs.pop("api_key", "unused"),
                                    max_retries=kwargs.pop("max_retries", 0), **kwargs)


@pytest.fixture
async def ac(server: AppServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with client_for(server.url) as c:
        yield c


@pytest.fixture
async def gac(gw: Any) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with client_for(gw.url) as c:
        yield c


async def raw_events(url: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(
            url + "/v1/messages", json=body) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        text = await resp.text()
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def post(url: str, data: bytes | str, headers: dict[str, str] | None = None
               ) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as session, session.post(
            url, data=data, headers={"Content-Type": "application/json",
                                     **(headers or {})}) as resp:
        return resp.status, await resp.json(), resp.headers


# -- text ----------------------------------------------------------------------------------------
async def test_messages_create_text(ac: anthropic.AsyncAnthropic) -> None:
    message = await ac.messages.create(model="fault:fault", max_tokens=50, messages=USER)
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == "fault:fault"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == PIECE * 5  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 5)


async def test_messages_stream_text(ac: anthropic.AsyncAnthropic) -> None:
    async with ac.messages.stream(model="fault:fault", max_tokens=50, messages=USER) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == PIECE * 5
    assert final.content[0].text == PIECE * 5  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 5)


async def test_beta_query_as_claude_code_sends_it(server: AppServer) -> None:
    status, body, _ = await post(server.url + "/v1/messages?beta=true", json.dumps(
        {"model": "fault:fault", "max_tokens": 10, "messages": USER,
         "tools": [{**TOOLS[0], "cache_control": {"type": "ephemeral"}}],
         "thinking": {"type": "disabled"}}))
    assert status == 200 and body["content"][0]["text"] == PIECE * 5


async def test_stream_event_names_and_order(server: AppServer) -> None:
    events = await raw_events(server.url, {"model": "fault:fault", "max_tokens": 50,
                                           "messages": USER, "stream": True})
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert events[2][1] == {"type": "content_block_start", "index": 0,
                            "content_block": {"type": "text", "text": ""}}
    assert events[3][1]["delta"] == {"type": "text_delta", "text": PIECE}
    assert events[-2][1] == {"type": "message_delta",
                             "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                             "usage": {"input_tokens": 3, "output_tokens": 5}}


async def test_system_blocks_stop_sequences_and_options_reach_the_upstream(
        gac: anthropic.AsyncAnthropic, gw: Any) -> None:
    gw.scripted.replies.extend([Reply("one"), Reply("two")])
    await gac.messages.create(
        model="scripted", max_tokens=20, extra_body={"temperature": 0.2, "top_p": 0.9},
        stop_sequences=["END", "STOP"], metadata={"user_id": "u-1"},
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello"}]},
                  {"role": "assistant", "content": "hi"},
                  {"role": "user", "content": "again"}])
    body = gw.scripted.bodies[-1]
    assert body["messages"] == [{"role": "system", "content": "Be brief.\nBe kind."},
                                {"role": "user", "content": "hello"},
                                {"role": "assistant", "content": "hi"},
                                {"role": "user", "content": "again"}]
    assert body["stop"] == ["END", "STOP"]
    assert (body["temperature"], body["top_p"], body["user"]) == (0.2, 0.9, "u-1")
    assert 20 in (body.get("max_tokens"), body.get("max_completion_tokens"))
    async with gac.messages.stream(model="scripted", max_tokens=5, system="Terse.",
                                   stop_sequences=["x"], messages=USER) as stream:
        assert await stream.get_final_text() == "two"
    assert gw.scripted.bodies[-1]["messages"][0] == {"role": "system", "content": "Terse."}
    assert gw.scripted.bodies[-1]["stop"] == ["x"]


async def test_output_config_format_is_structured_output(gac: anthropic.AsyncAnthropic,
                                                        gw: Any) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"], "additionalProperties": False}
    gw.scripted.replies.append(Reply('{"city": "Paris"}'))
    message = await gac.messages.create(
        model="scripted", max_tokens=20, messages=USER,
        output_config={"format": {"type": "json_schema", "schema": schema}})
    assert json.loads(message.content[0].text) == {"city": "Paris"}  # type: ignore[union-attr]
    assert gw.scripted.bodies[-1]["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "response", "schema": schema}}


async def test_images_are_passed_on(gac: anthropic.AsyncAnthropic, gw: Any) -> None:
    gw.scripted.replies.append(Reply("a red dot"))
    png = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMI"
           "QAAAABJRU5ErkJggg==")
    await gac.messages.create(model="scripted", max_tokens=20, messages=[{
        "role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": png}},
            {"type": "text", "text": "What is this?"}]}])
    parts = gw.scripted.bodies[-1]["messages"][0]["content"]
    assert {"type": "text", "text": "What is this?"} in parts
    assert any(p["type"] == "image_url" and png in p["image_url"]["url"] for p in parts)


# -- tools ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
async def test_tools_round_trip(gac: anthropic.AsyncAnthropic, gw: Any, stream: bool) -> None:
    gw.scripted.replies.extend([
        Reply("Let me look.", tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"},
                                           "id": "toolu_1"}]),
        Reply("It is sunny in Paris.")])
    ask: Any = [{"role": "user", "content": "Weather in Paris?"}]
    first: Any
    if stream:
        async with gac.messages.stream(model="scripted", max_tokens=100, tools=TOOLS,
                                       messages=ask) as events:
            first = await events.get_final_message()
    else:
        first = await gac.messages.create(model="scripted", max_tokens=100, tools=TOOLS,
                                          messages=ask)
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["text", "tool_use"]
    call = first.content[1]
    assert call.type == "tool_use"
    assert (call.id, call.name, call.input) == ("toolu_1", "get_weather", {"city": "Paris"})
    assert gw.scripted.bodies[-1]["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": TOOLS[0]["input_schema"]}}]

    history: Any = [
        *ask, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": "22 C, sunny"}]}]
    second = await gac.messages.create(model="scripted", max_tokens=100, tools=TOOLS,
                                       messages=history)
    assert second.content[0].text == "It is sunny in Paris."  # type: ignore[union-attr]
    assert second.stop_reason == "end_turn"
    sent = gw.scripted.bodies[-1]["messages"]
    assert sent[1]["role"] == "assistant" and sent[1]["content"] == "Let me look."
    assert sent[1]["tool_calls"][0]["id"] == "toolu_1"
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert sent[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "22 C, sunny"}


async def test_stream_tool_use_events(gw: Any) -> None:
    gw.scripted.replies.append(Reply(tool_calls=[{"name": "get_weather",
                                                  "arguments": {"city": "Rome"}, "id": "t9"}]))
    events = await raw_events(gw.url, {"model": "scripted", "max_tokens": 50, "stream": True,
                                       "tools": TOOLS, "messages": USER})
    starts = [data for name, data in events if name == "content_block_start"]
    assert starts == [{"type": "content_block_start", "index": 0, "content_block": {
        "type": "tool_use", "id": "t9", "name": "get_weather", "input": {}}}]
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert deltas[0]["type"] == "input_json_delta"
    assert json.loads("".join(d["partial_json"] for d in deltas)) == {"city": "Rome"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize(("choice", "sent"), [
    ({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none"),
    ({"type": "tool", "name": "get_weather"},
     {"type": "function", "function": {"name": "get_weather"}})])
async def test_tool_choice(gac: anthropic.AsyncAnthropic, gw: Any, choice: Any,
                           sent: Any) -> None:
    gw.scripted.replies.append(Reply("ok"))
    await gac.messages.create(model="scripted", max_tokens=10, tools=TOOLS,
                              tool_choice=choice, messages=USER)
    assert gw.scripted.bodies[-1]["tool_choice"] == sent


async def test_disable_parallel_tool_use(gac: anthropic.AsyncAnthropic, gw: Any) -> None:
    gw.scripted.replies.append(Reply("ok"))
    await gac.messages.create(model="scripted", max_tokens=10, tools=TOOLS, messages=USER,
                              tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert gw.scripted.bodies[-1]["parallel_tool_calls"] is False


async def test_a_named_model_whose_first_deployment_answers_503(
        gac: anthropic.AsyncAnthropic, gw: Any) -> None:
    gw.a.faults.extend(["503"] * 5)
    message = await gac.messages.create(model="duo", max_tokens=50, messages=USER)
    assert message.content[0].text == PIECE * 5  # type: ignore[union-attr]
    async with gac.messages.stream(model="duo", max_tokens=50, messages=USER) as stream:
        assert await stream.get_final_text() == PIECE * 5
    assert gw.a.requests == 1 and gw.b.requests == 2


# -- thinking ------------------------------------------------------------------------------------
async def test_thinking_blocks_when_asked(thinker: str) -> None:
    async with client_for(thinker) as client:
        plain = await client.messages.create(model="thinker", max_tokens=50, messages=USER)
        assert [b.type for b in plain.content] == ["text"]
        shown = await client.messages.create(model="thinker", max_tokens=2000, messages=USER,
                                             thinking={"type": "enabled",
                                                       "budget_tokens": 1024})
        assert [b.type for b in shown.content] == ["thinking", "text"]
        assert shown.content[0].thinking == "6 times 7"  # type: ignore[union-attr]
        async with client.messages.stream(model="thinker", max_tokens=2000, messages=USER,
                                          thinking={"type": "enabled",
                                                    "budget_tokens": 1024}) as stream:
            final = await stream.get_final_message()
        assert [b.type for b in final.content] == ["thinking", "text"]
        assert final.content[0].thinking == "6 times 7"  # type: ignore[union-attr]
        assert final.content[1].text == "42"  # type: ignore[union-attr]
        async with client.messages.stream(model="thinker", max_tokens=50,
                                          messages=USER) as stream:
            assert [b.type for b in (await stream.get_final_message()).content] == ["text"]


# -- count_tokens --------------------------------------------------------------------------------
async def test_count_tokens(ac: anthropic.AsyncAnthropic) -> None:
    short = await ac.messages.count_tokens(model="fault:fault", messages=USER)
    long = await ac.messages.count_tokens(
        model="fault:fault", system="You are a weather bot.", tools=TOOLS,
        messages=[{"role": "user", "content": "What is the weather in Paris today? " * 20}])
    assert 0 < short.input_tokens < long.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        await ac.messages.count_tokens(model="nope:model", messages=USER)


# -- errors --------------------------------------------------------------------------------------
async def test_unknown_model_is_not_found(ac: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        await ac.messages.create(model="nope:model", max_tokens=10, messages=USER)
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert body["request_id"].startswith("req_")
    assert info.value.request_id == body["request_id"]


async def test_upstream_rate_limit_is_rate_limit_error_with_retry_after(
        ac: anthropic.AsyncAnthropic, upstream: FaultyUpstream) -> None:
    upstream.faults.extend(["429"] * 5)
    with pytest.raises(anthropic.RateLimitError) as info:
        await ac.messages.create(model="fault:fault", max_tokens=10, messages=USER)
    assert info.value.response.headers["retry-after"] == "2"
    assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


@pytest.mark.parametrize(("fault", "error", "kind"), [
    ("503", anthropic.ServiceUnavailableError, "overloaded_error"),
    ("500", anthropic.InternalServerError, "api_error")])
async def test_upstream_failures(ac: anthropic.AsyncAnthropic, upstream: FaultyUpstream,
                                 fault: str, error: type[Exception], kind: str) -> None:
    upstream.faults.extend([fault] * 5)
    with pytest.raises(error) as info:
        async with ac.messages.stream(model="fault:fault", max_tokens=10,
                                      messages=USER) as stream:
            await stream.get_final_message()
    assert info.value.body["error"]["type"] == kind  # type: ignore[attr-defined]


async def test_error_mid_stream_is_an_error_event(ac: anthropic.AsyncAnthropic,
                                                  upstream: FaultyUpstream) -> None:
    upstream.faults.append("error_event")
    received = []
    with pytest.raises(anthropic.APIStatusError, match="the model crashed"):
        async with ac.messages.stream(model="fault:fault", max_tokens=10,
                                      messages=USER) as stream:
            async for text in stream.text_stream:
                received.append(text)
    assert "".join(received) == PIECE * 2


async def test_keys_x_api_key_and_rate_limit(serve: Callable[..., Any]) -> None:
    key, limited = "k" * 24, "l" * 24
    server = await serve(keys=[KeyConfig(name="alice", hash=hash_key(key)),
                               KeyConfig(name="bob", hash=hash_key(limited), rate_limit=1)])
    async with client_for(server.url, api_key=None,
                          default_headers={"x-api-key": key}) as by_header:
        message = await by_header.messages.create(model="fault:fault", max_tokens=10,
                                                  messages=USER)
        assert message.content[0].text == PIECE * 5  # type: ignore[union-attr]
    async with client_for(server.url, api_key=key) as by_client:
        await by_client.messages.create(model="fault:fault", max_tokens=10, messages=USER)
    async with client_for(server.url, api_key="wrong-key-0123456789") as wrong:
        with pytest.raises(anthropic.AuthenticationError) as auth:
            await wrong.messages.create(model="fault:fault", max_tokens=10, messages=USER)
    assert auth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    status, body, _ = await post(server.url + "/v1/messages", json.dumps(
        {"model": "fault:fault", "max_tokens": 10, "messages": USER}))
    assert status == 401 and body["type"] == "error"
    assert "x-api-key" in body["error"]["message"]
    async with client_for(server.url, api_key=None,
                          default_headers={"x-api-key": limited}) as bob:
        await bob.messages.create(model="fault:fault", max_tokens=10, messages=USER)
        with pytest.raises(anthropic.RateLimitError) as info:
            await bob.messages.create(model="fault:fault", max_tokens=10, messages=USER)
    assert int(info.value.response.headers["retry-after"]) >= 1


@pytest.mark.parametrize(("body", "fragment"), [
    ('{"model": "fault:fault", "messages": [{"role": "user", "content": "hi"}]}',
     "'max_tokens' is required"),
    ('{"model": "fault:fault", "max_tokens": 10, "messages": [', "not valid JSON"),
    ("", "empty"),
    ('{"model": "fault:fault", "max_tokens": "ten", "messages": [{"role": "user", '
     '"content": "hi"}]}', "max_tokens"),
    ('{"model": "fault:fault", "max_tokens": 10, "messages": [{"role": "user", '
     '"content": "hi"}], "temperature": 1.5}', "temperature"),
    ('{"model": "fault:fault", "max_tokens": 10, "messages": "hi"}', "messages"),
    ('{"model": "fault:fault", "max_tokens": 10, "messages": [{"role": "user", "content": '
     '[{"type": "document", "source": {}}]}]}', "messages.0.content"),
    ('{"model": "fault:fault", "max_tokens": 10, "messages": [{"role": "wizard", '
     '"content": "hi"}]}', "messages.0.role"),
    ('{"model": "fault:fault", "max_tokens": 10, "messages": [{"role": "user", "content": '
     '[{"type": "tool_use", "id": "a", "name": "f", "input": {}}]}]}',
     "messages.0.content.0: tool_use blocks belong in assistant turns"),
    ('{"model": "fault:fault", "max_tokens": 10, "messages": [{"role": "user", "content": '
     '"  "}]}', "content must not be empty"),
    ('{"model": "fault:fault", "max_tokens": 10, "messages": [{"role": "user", "content": '
     '"hi"}], "tool_choice": {"type": "tool"}}', "tool_choice"),
    ('{"model": "fault:fault", "max_tokens": 10, "messages": [{"role": "user", "content": '
     '"hi"}], "tools": [{"name": "bad name", "input_schema": {}}]}', "tools.0.name"),
])
async def test_bad_input_is_a_400_in_anthropics_shape(server: AppServer, body: str,
                                                      fragment: str) -> None:
    status, data, headers = await post(server.url + "/v1/messages", body)
    assert status == 400
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    assert fragment in data["error"]["message"]
    assert set(data) == {"type", "error", "request_id"}
    assert headers["request-id"] == data["request_id"]


async def test_too_large_and_unknown_routes_in_anthropics_shape(server: AppServer) -> None:
    big = json.dumps({"model": "fault:fault", "max_tokens": 10, "messages": [
        {"role": "user", "content": "a" * (10 * 1024 * 1024)}]})
    status, data, _ = await post(server.url + "/v1/messages", big)
    assert status == 413 and data["error"]["type"] == "request_too_large"
    status, data, _ = await post(server.url + "/v1/messages/nothing", "{}")
    assert status == 404 and data["error"]["type"] == "not_found_error"
    async with client_for(server.url) as ac:
        with pytest.raises(anthropic.BadRequestError):
            await ac.messages.count_tokens(model="fault:fault", messages=[])


CALLED: Any = [{"role": "user", "content": "Weather?"},
               {"role": "assistant", "content": [
                   {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                    "input": {"city": "Paris"}}]}]
ANSWER: Any = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "22 C"}


@pytest.mark.parametrize(("messages", "thinking", "fragment"), [
    # a system turn: Anthropic takes the system prompt in the top-level 'system' only
    ([*USER, {"role": "assistant", "content": "hi"}, {"role": "system", "content": "French."}],
     None, "invalid 'messages.2.role': a turn of messages is 'user' or 'assistant', never "
           "'system': give "
           "the system prompt as the request's top-level 'system' field"),
    # tool_results answering no tool_use of the assistant turn just before
    ([*CALLED, {"role": "user", "content": [{**ANSWER, "tool_use_id": "toolu_9"}]}], None,
     "messages.2.content.0.tool_use_id: 'toolu_9' matches none of the tool_use ids of "
     "messages.1 (toolu_1)"),
    ([{"role": "user", "content": [ANSWER]}], None,
     "messages.0.content.0.tool_use_id: 'toolu_1' matches no tool_use: it is in the first "
     "turn"),
    ([*CALLED, {"role": "user", "content": [ANSWER]}, {"role": "assistant", "content": "ok"},
      {"role": "user", "content": [{"type": "text", "text": "again"}, ANSWER]}], None,
     "messages.4.content.1.tool_use_id: 'toolu_1' matches no tool_use: messages.3 calls no "
     "tool"),
    # a tool_use left without its tool_result in the next turn
    ([*CALLED, {"role": "user", "content": "and?"}], None,
     "messages.2.content: tool_use ids of the turn before have no tool_result here: toolu_1"),
    ([*CALLED[:1], {"role": "assistant", "content": [
        *CALLED[1]["content"], {"type": "tool_use", "id": "toolu_2", "name": "get_weather",
                                "input": {}}]}, {"role": "user", "content": [ANSWER]}], None,
     "messages.2.content: tool_use ids of the turn before have no tool_result here: toolu_2"),
    # thinking.budget_tokens: an integer >= 1024 and < max_tokens
    (USER, {"type": "enabled", "budget_tokens": -1},
     "thinking.budget_tokens: must be at least 1024 (got -1)"),
    (USER, {"type": "enabled", "budget_tokens": 1023}, "must be at least 1024 (got 1023)"),
    (USER, {"type": "enabled", "budget_tokens": 2000},
     "thinking.budget_tokens: must be less than max_tokens (2000) (got 2000)"),
    (USER, {"type": "enabled"}, "thinking.budget_tokens: required when thinking.type is "
                                "'enabled'"),
    (USER, {"type": "enabled", "budget_tokens": "2k"}, "thinking.budget_tokens"),
])
@pytest.mark.parametrize("stream", [False, True])
async def test_what_anthropic_refuses_is_a_400_naming_the_field(
        ac: anthropic.AsyncAnthropic, upstream: FaultyUpstream, messages: Any, thinking: Any,
        fragment: str, stream: bool) -> None:
    extra: Any = {"thinking": thinking} if thinking is not None else {}
    with pytest.raises(anthropic.BadRequestError) as info:
        if stream:
            async with ac.messages.stream(model="fault:fault", max_tokens=2000,
                                          messages=messages, tools=TOOLS, **extra) as events:
                await events.get_final_message()
        else:
            await ac.messages.create(model="fault:fault", max_tokens=2000, messages=messages,
                                     tools=TOOLS, **extra)
    body: Any = info.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert fragment in body["error"]["message"]
    if "max_tokens (2000)" in fragment:  # count_tokens has no max_tokens to exceed
        assert (await ac.messages.count_tokens(model="fault:fault", messages=messages,
                                               tools=TOOLS, **extra)).input_tokens > 0
    else:  # count_tokens checks the same
        with pytest.raises(anthropic.BadRequestError) as counted:
            await ac.messages.count_tokens(model="fault:fault", messages=messages,
                                           tools=TOOLS, **extra)
        assert fragment in counted.value.body["error"]["message"]  # type: ignore[index]
    assert upstream.requests == 0


async def test_what_anthropic_accepts_still_passes(gac: anthropic.AsyncAnthropic,
                                                   gw: Any) -> None:
    """Two tool_use blocks answered in one user turn (text beside them), a budget just
    under max_tokens, and one above it under the interleaved-thinking beta."""
    gw.scripted.replies.extend([Reply("a"), Reply("b"), Reply("c")])
    two: Any = [CALLED[0], {"role": "assistant", "content": [
        *CALLED[1]["content"], {"type": "tool_use", "id": "toolu_2", "name": "get_weather",
                                "input": {"city": "Rome"}}]},
        {"role": "user", "content": [{**ANSWER, "tool_use_id": "toolu_2"}, ANSWER,
                                     {"type": "text", "text": "and?"}]}]
    await gac.messages.create(model="scripted", max_tokens=2000, messages=two, tools=TOOLS)
    assert [m.get("tool_call_id") for m in gw.scripted.bodies[-1]["messages"]] == [
        None, None, "toolu_2", "toolu_1", None]
    await gac.messages.create(model="scripted", max_tokens=2000, messages=USER,
                              thinking={"type": "enabled", "budget_tokens": 1999})
    await gac.messages.create(model="scripted", max_tokens=2000, messages=USER,
                              thinking={"type": "enabled", "budget_tokens": 8000},
                              extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})
    assert len(gw.scripted.bodies) == 3


# -- the real model ------------------------------------------------------------------------------
@pytest.mark.slow
async def test_real_model_answers_paris(ac: anthropic.AsyncAnthropic) -> None:
    ask: Any = [{"role": "user", "content": "What is the capital of France?"}]
    message = await ac.messages.create(model="llamacpp:smollm2", max_tokens=24, messages=ask)
    assert "Paris" in message.content[0].text  # type: ignore[union-attr]
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    async with ac.messages.stream(model="llamacpp:smollm2", max_tokens=24, messages=ask,
                                  system=[{"type": "text", "text": "Answer in one sentence."}]
                                  ) as stream:
        assert "Paris" in await stream.get_final_text()
    counted = await ac.messages.count_tokens(model="llamacpp:smollm2", messages=ask)
    assert counted.input_tokens > 0
    stopped = await ac.messages.create(
        model="llamacpp:smollm2", max_tokens=40, stop_sequences=["5"],
        messages=[{"role": "user", "content": "Count from 1 to 10, digits separated by commas."}])
    text = stopped.content[0].text  # type: ignore[union-attr]
    assert "5" not in text and "6" not in text


async def test_openapi_describes_the_messages_api(server: AppServer) -> None:
    async with aiohttp.ClientSession() as session, session.get(
            server.url + "/openapi.json") as resp:
        doc = await resp.json()
    op = doc["paths"]["/v1/messages"]["post"]
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"model", "messages", "max_tokens"} <= set(schema["required"])
    error = op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"]
    assert error.endswith("/AnthropicError")
    assert "post" in doc["paths"]["/v1/messages/count_tokens"]


async def test_cors_preflight_allows_anthropics_headers(serve: Callable[..., Any]) -> None:
    server = await serve(cors_origins=["http://ui.example"])
    async with aiohttp.ClientSession() as session, session.options(
            server.url + "/v1/messages", headers={
                "Origin": "http://ui.example", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key, anthropic-version"}) as resp:
        assert resp.status == 204
        allowed = resp.headers["Access-Control-Allow-Headers"].lower()
    assert "x-api-key" in allowed and "anthropic-version" in allowed
