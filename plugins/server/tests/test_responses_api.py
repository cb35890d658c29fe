"""OpenAI's Responses API (``/v1/responses``) with the official ``openai`` client: text,
instructions and input items, a tools round trip with ``function_call_output`` over a scripted
upstream, JSON schema output, the typed stream, stored responses and
``previous_response_id``, a named model whose first deployment answers 503, the real SmolLM2,
and errors as the client's exception classes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import openai
import pytest

from modelplex.testing.upstream import PIECE, FaultyUpstream, Reply
from modelplex_server.app import AppServer
from modelplex_server.settings import KeyConfig, hash_key
from modelplex_server.sqlite_store import SQLiteConversationStore
from modelplex_server.testing import StoreBackend

TOOLS: Any = [{"type": "function", "name": "get_weather", "description": "Weather in a city",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                              "required": ["city"]}}]


@pytest.fixture
async def oai(gw: Any) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused",
                                  max_retries=0) as c:
        yield c


async def test_text(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="fault:fault", input="hi")
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed" and response.model == "fault:fault"
    assert response.output_text == PIECE * 5
    assert [item.type for item in response.output] == ["message"]
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens,
            response.usage.total_tokens) == (3, 5, 8)


async def test_instructions_and_input_items_reach_the_upstream(oai: openai.AsyncOpenAI,
                                                               gw: Any) -> None:
    gw.scripted.replies.append(Reply("Bonjour"))
    response = await oai.responses.create(
        model="scripted", instructions="Answer in French.", max_output_tokens=30,
        temperature=0.4, top_p=0.8, user="u-7",
        input=[{"role": "developer", "content": "Be brief."},
               {"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "Hello"}]},
               {"role": "assistant", "content": "Hi!"},
               {"role": "user", "content": "Again"}])
    assert response.output_text == "Bonjour"
    assert response.instructions == "Answer in French."
    body = gw.scripted.bodies[-1]
    assert body["messages"] == [{"role": "system", "content": "Answer in French."},
                                {"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Hello"},
                                {"role": "assistant", "content": "Hi!"},
                                {"role": "user", "content": "Again"}]
    assert (body["temperature"], body["top_p"], body["user"]) == (0.4, 0.8, "u-7")
    assert 30 in (body.get("max_tokens"), body.get("max_completion_tokens"))


@pytest.mark.parametrize("stream", [False, True])
async def test_tools_round_trip(oai: openai.AsyncOpenAI, gw: Any, stream: bool) -> None:
    gw.scripted.replies.extend([
        Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"},
                           "id": "call_1"}]),
        Reply("Sunny in Paris."), Reply("Still sunny.")])
    first: Any
    if stream:
        events: list[Any] = [e async for e in await oai.responses.create(
            model="scripted", input="Weather in Paris?", tools=TOOLS, stream=True)]
        kinds = [e.type for e in events]
        assert "response.function_call_arguments.delta" in kinds
        assert kinds[-1] == "response.completed"
        first = events[-1].response
    else:
        first = await oai.responses.create(model="scripted", input="Weather in Paris?",
                                           tools=TOOLS, tool_choice="auto")
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert (call.call_id, call.name, json.loads(call.arguments)) == (
        "call_1", "get_weather", {"city": "Paris"})
    assert gw.scripted.bodies[-1]["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": TOOLS[0]["parameters"]}}]

    # continued with previous_response_id: only the tool's output is sent
    second = await oai.responses.create(
        model="scripted", previous_response_id=first.id, tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": "call_1", "output": "22 C"}])
    assert second.output_text == "Sunny in Paris."
    sent = gw.scripted.bodies[-1]["messages"]
    assert sent[0] == {"role": "user", "content": "Weather in Paris?"}
    assert sent[1]["role"] == "assistant" and sent[1]["tool_calls"][0]["id"] == "call_1"
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": "22 C"}

    # or stateless: the whole history as items (as Codex sends it, store=False)
    third = await oai.responses.create(model="scripted", tools=TOOLS, store=False, input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "22 C"}])
    assert third.output_text == "Still sunny."
    assert gw.scripted.bodies[-1]["messages"] == sent
    with pytest.raises(openai.NotFoundError):
        await oai.responses.retrieve(third.id)


async def test_tool_choice_function(oai: openai.AsyncOpenAI, gw: Any) -> None:
    gw.scripted.replies.append(Reply("ok"))
    await oai.responses.create(model="scripted", input="x", tools=TOOLS,
                               tool_choice={"type": "function", "name": "get_weather"})
    assert gw.scripted.bodies[-1]["tool_choice"] == {"type": "function",
                                                     "function": {"name": "get_weather"}}


async def test_json_schema_output(oai: openai.AsyncOpenAI, gw: Any) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"], "additionalProperties": False}
    gw.scripted.replies.extend([Reply('{"city": "Paris"}'), Reply("{}")])
    response = await oai.responses.create(
        model="scripted", input="Capital of France as JSON",
        text={"format": {"type": "json_schema", "name": "capital", "schema": schema,
                         "strict": True}})
    assert json.loads(response.output_text) == {"city": "Paris"}
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"
    assert gw.scripted.bodies[-1]["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "capital", "schema": schema}}
    await oai.responses.create(model="scripted", input="JSON please",
                               text={"format": {"type": "json_object"}})
    assert gw.scripted.bodies[-1]["response_format"] == {"type": "json_object"}


async def test_reasoning_items(thinker: str) -> None:
    async with openai.AsyncOpenAI(base_url=thinker + "/v1", api_key="x",
                                  max_retries=0) as client:
        response = await client.responses.create(model="thinker", input="6 x 7?")
        assert [item.type for item in response.output] == ["reasoning", "message"]
        reasoning: Any = response.output[0]
        assert reasoning.content[0].text == "6 times 7" and response.output_text == "42"
        events: list[Any] = [e async for e in await client.responses.create(
            model="thinker", input="6 x 7?", stream=True)]
        kinds = [e.type for e in events]
        assert kinds[2:6] == ["response.output_item.added", "response.reasoning_text.delta",
                              "response.reasoning_text.delta", "response.reasoning_text.done"]
        assert kinds.index("response.reasoning_text.done") < kinds.index(
            "response.output_text.delta")
        final = events[-1].response
        assert [item.type for item in final.output] == ["reasoning", "message"]
        assert final.output[0].content[0].text == "6 times 7" and final.output_text == "42"
        assert [e.output_index for e in events if e.type == "response.output_text.delta"] == [1]


async def test_streaming_events(client: openai.AsyncOpenAI) -> None:
    events: list[Any] = [e async for e in await client.responses.create(
        model="fault:fault", input="hi", stream=True)]
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert "".join(d.delta for d in deltas) == PIECE * 5
    created = events[0]
    assert created.type == "response.created" and created.response.status == "in_progress"
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text == PIECE * 5
    assert done.response.usage is not None and done.response.usage.total_tokens == 8
    assert done.response.id == created.response.id
    assert (await client.responses.retrieve(done.response.id)).output_text == PIECE * 5


async def test_stream_helper(client: openai.AsyncOpenAI) -> None:
    async with client.responses.stream(model="fault:fault", input="hi") as stream:
        text = "".join([e.delta async for e in stream if e.type == "response.output_text.delta"])
        final = await stream.get_final_response()
    assert text == final.output_text == PIECE * 5


async def test_previous_response_id_get_and_delete(oai: openai.AsyncOpenAI, gw: Any) -> None:
    gw.scripted.replies.extend([Reply("Hello Ann."), Reply("You are Ann."),
                                Reply("Bob it is.")])
    first = await oai.responses.create(model="scripted", input="My name is Ann.",
                                       instructions="Be friendly.")
    second = await oai.responses.create(model="scripted", previous_response_id=first.id,
                                        input="What is my name?")
    assert second.previous_response_id == first.id
    assert gw.scripted.bodies[-1]["messages"] == [  # instructions are not carried over
        {"role": "user", "content": "My name is Ann."},
        {"role": "assistant", "content": "Hello Ann."},
        {"role": "user", "content": "What is my name?"}]
    # from an earlier response of the chain: its history only
    branch = await oai.responses.create(model="scripted", previous_response_id=first.id,
                                        input="Call me Bob.")
    assert gw.scripted.bodies[-1]["messages"][-1] == {"role": "user", "content": "Call me Bob."}
    assert len(gw.scripted.bodies[-1]["messages"]) == 3
    for response in (first, second, branch):
        stored = await oai.responses.retrieve(response.id)
        assert stored.id == response.id and stored.output_text == response.output_text
    await oai.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        await oai.responses.retrieve(second.id)
    assert (await oai.responses.retrieve(first.id)).output_text == "Hello Ann."
    with pytest.raises(openai.NotFoundError) as info:
        await oai.responses.create(model="scripted", previous_response_id="resp_nope",
                                   input="hi")
    assert info.value.param == "previous_response_id"
    assert info.value.code == "response_not_found"
    for unknown in ("resp_nope", f"resp_{'0' * 32}_2", "nothing"):
        with pytest.raises(openai.NotFoundError):
            await oai.responses.retrieve(unknown)
        with pytest.raises(openai.NotFoundError):
            await oai.responses.delete(unknown)


async def test_two_follow_ups_to_one_response_at_once(oai: openai.AsyncOpenAI,
                                                      gw: Any) -> None:
    gw.scripted.replies.extend([Reply("first"), Reply("a"), Reply("b"), Reply("c"),
                                Reply("d")])
    first = await oai.responses.create(model="scripted", input="start")
    answers = await asyncio.gather(*(
        oai.responses.create(model="scripted", previous_response_id=first.id, input=text)
        for text in ("one", "two")))
    assert answers[0].id != answers[1].id
    kept = 0
    for response, text in zip(answers, ("one", "two"), strict=True):
        try:
            await oai.responses.retrieve(response.id)
        except openai.NotFoundError:
            continue  # both were answered at once: the later one was not kept
        kept += 1
        await oai.responses.create(model="scripted", previous_response_id=response.id,
                                   input="three")
        assert [m["content"] for m in gw.scripted.bodies[-1]["messages"]] == [
            "start", "first", text, response.output_text, "three"]
    assert kept >= 1


async def test_racing_follow_ups_keep_the_first_stored(client: openai.AsyncOpenAI,
                                                       upstream: FaultyUpstream) -> None:
    first = await client.responses.create(model="fault:fault", input="start")
    upstream.faults.extend(["delay:0.3", "delay:0.3"])  # both planned before either is kept
    answers = await asyncio.gather(*(
        client.responses.create(model="fault:fault", previous_response_id=first.id, input=t)
        for t in ("one", "two")))
    found = []
    for response in answers:
        with contextlib.suppress(openai.NotFoundError):
            found.append(await client.responses.retrieve(response.id))
    assert len(found) == 1


async def test_racing_follow_ups_on_a_shared_store_keep_one(
        serve: Callable[..., Any], gateway: Callable[[AppServer], Any],
        store_backend: StoreBackend) -> None:
    """Six follow-ups to one response at once, through two servers sharing a store (SQLite,
    a real PostgreSQL): the chain's conversation is continued by one of them only (the check
    that it was not continued meanwhile and the append are one store step). Those planned
    as its continuation and not kept are 404; those planned once it was continued start
    conversations of their own and are kept, however the requests interleave."""
    servers = [await serve(store=store_backend.open()) for _ in range(2)]
    clients = [openai.AsyncOpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
               for s in servers]
    try:
        first = await clients[0].responses.create(model="fault:fault", input="start")
        chain = first.id.split("_")[1]
        answers = await asyncio.gather(*(clients[i % 2].responses.create(
            model="fault:fault", previous_response_id=first.id, input=f"q{i}")
            for i in range(6)))
        kept = await gateway(servers[0]).conversations.get(chain)
        assert kept is not None and len(kept.messages) == 4
        continued = kept.messages[-1].metadata["response"]["id"]
        assert continued in {r.id for r in answers}
        for response in answers:
            try:
                await clients[1].responses.retrieve(response.id)
                found = True
            except openai.NotFoundError:
                found = False
            assert found == (response.id.split("_")[1] != chain or response.id == continued)
    finally:
        for client in clients:
            await client.close()


async def test_input_items(oai: openai.AsyncOpenAI, gw: Any) -> None:
    gw.scripted.replies.extend([Reply(tool_calls=[{"name": "get_weather", "id": "call_9",
                                                   "arguments": {"city": "Oslo"}}]),
                                Reply("Cold.")])
    first = await oai.responses.create(model="scripted", tools=TOOLS, input=[
        {"role": "user", "content": "Weather?"}, {"role": "user", "content": "In Oslo."}])
    items: list[Any] = [i async for i in oai.responses.input_items.list(first.id,
                                                                         order="asc")]
    assert [(i.type, i.content[0].text) for i in items] == [
        ("message", "Weather?"), ("message", "In Oslo.")]
    second = await oai.responses.create(model="scripted", previous_response_id=first.id,
                                        input=[{"type": "function_call_output",
                                                "call_id": "call_9", "output": "-5 C"}])
    assert second.output_text == "Cold."
    page: Any = await oai.responses.input_items.list(second.id)  # its own input only
    assert [(i.type, i.call_id, i.output) for i in page.data] == [
        ("function_call_output", "call_9", "-5 C")]
    newest: Any = await oai.responses.input_items.list(first.id, limit=1)
    assert newest.has_more and newest.data[0].content[0].text == "In Oslo."
    rest: Any = await oai.responses.input_items.list(first.id, limit=1,
                                                     after=newest.data[0].id)
    assert rest.data[0].content[0].text == "Weather?"
    assert not rest.has_more
    with pytest.raises(openai.NotFoundError):
        await oai.responses.input_items.list("resp_nope")


async def test_stored_responses_survive_a_restart_with_sqlite(serve: Callable[..., Any],
                                                              tmp_path: Any) -> None:
    path = tmp_path / "conversations.db"
    server = await serve(store=SQLiteConversationStore(path))
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x",
                                  max_retries=0) as client:
        first = await client.responses.create(model="fault:fault", input="remember me")
        second = await client.responses.create(model="fault:fault", input="and now",
                                               previous_response_id=first.id)
    await server.stop()
    again = await serve(store=SQLiteConversationStore(path))
    async with openai.AsyncOpenAI(base_url=again.url + "/v1", api_key="x",
                                  max_retries=0) as client:
        assert (await client.responses.retrieve(second.id)).output_text == PIECE * 5
        third = await client.responses.create(model="fault:fault", input="still here?",
                                              previous_response_id=second.id)
        assert third.previous_response_id == second.id
        await client.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(first.id)
        assert (await client.responses.retrieve(third.id)).id == third.id


async def test_stored_responses_belong_to_their_key(serve: Callable[..., Any]) -> None:
    alice, bob = "a" * 24, "b" * 24
    server = await serve(keys=[KeyConfig(name="alice", hash=hash_key(alice)),
                               KeyConfig(name="bob", hash=hash_key(bob))])
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=alice,
                                  max_retries=0) as a, \
            openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=bob, max_retries=0) as b:
        mine = await a.responses.create(model="fault:fault", input="secret")
        assert (await a.responses.retrieve(mine.id)).output_text == PIECE * 5
        with pytest.raises(openai.NotFoundError):
            await b.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            await b.responses.create(model="fault:fault", previous_response_id=mine.id,
                                     input="tell me")


async def test_a_named_model_whose_first_deployment_answers_503(oai: openai.AsyncOpenAI,
                                                                gw: Any) -> None:
    gw.a.faults.extend(["503"] * 5)
    response = await oai.responses.create(model="duo", input="hi")
    assert response.output_text == PIECE * 5
    events: list[Any] = [e async for e in await oai.responses.create(model="duo", input="hi",
                                                          stream=True)]
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == PIECE * 5
    assert gw.a.requests == 1 and gw.b.requests == 2


async def test_length_is_incomplete(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="fault:fault", input="hi",
                                             max_output_tokens=2)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    events: list[Any] = [e async for e in await client.responses.create(
        model="fault:fault", input="hi", max_output_tokens=2, stream=True)]
    assert events[-1].type == "response.incomplete"


# -- errors --------------------------------------------------------------------------------------
async def test_errors_are_the_clients_exceptions(client: openai.AsyncOpenAI,
                                                 upstream: FaultyUpstream) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await client.responses.create(model="nope:model", input="hi")
    assert missing.value.code == "model_not_found"
    upstream.faults.extend(["429"] * 5)
    with pytest.raises(openai.RateLimitError) as limited:
        await client.responses.create(model="fault:fault", input="hi", stream=True)
    assert limited.value.response.headers["retry-after"] == "2"
    upstream.faults.clear()
    upstream.faults.extend(["503"] * 5)
    with pytest.raises(openai.InternalServerError) as busy:
        await client.responses.create(model="fault:fault", input="hi")
    assert busy.value.status_code == 503


async def test_error_mid_stream_is_response_failed(client: openai.AsyncOpenAI,
                                                   upstream: FaultyUpstream) -> None:
    upstream.faults.append("error_event")
    events: list[Any] = [e async for e in await client.responses.create(
        model="fault:fault", input="hi", stream=True)]
    assert events[-1].type == "response.failed"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None
    assert "the model crashed" in failed.error.message
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == \
        PIECE * 2
    with pytest.raises(openai.NotFoundError):  # a failed response is not stored
        await client.responses.retrieve(failed.id)


async def post(url: str, data: bytes | str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(
            url, data=data, headers={"Content-Type": "application/json"}) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize(("body", "param", "fragment"), [
    ('{"model": "fault:fault", "input": [', None, "not valid JSON"),
    ('{"model": "fault:fault"}', "input", "'input' is required"),
    ('{"model": "fault:fault", "input": 5}', "input", "input"),
    ('{"model": "fault:fault", "input": [{"type": "web_search_call", "id": "x"}]}', "input.0",
     "web_search_call"),
    ('{"model": "fault:fault", "input": [{"role": "wizard", "content": "hi"}]}',
     "input.0.role", "role"),
    ('{"model": "fault:fault", "input": [{"type": "function_call", "call_id": "c", '
     '"name": "f", "arguments": "[1]"}]}', "input.0.arguments", "JSON object"),
    ('{"model": "fault:fault", "input": [{"role": "user", "content": '
     '[{"type": "input_file", "file_id": "f"}]}]}', "input.0.content.0", "input_file"),
    ('{"model": "fault:fault", "input": [{"role": "user", "content": '
     '[{"type": "input_text", "text": 5}]}]}', "input.0.content.0.text", "string"),
    ('{"model": "fault:fault", "input": "hi", "tools": [{"type": "web_search"}]}',
     "tools.0.type", "function"),
    ('{"model": "fault:fault", "input": "hi", "max_output_tokens": "many"}',
     "max_output_tokens", "integer"),
    ('{"model": "fault:fault", "input": "hi", "text": {"format": {"type": "json_schema"}}}',
     "text.format.schema", "schema"),
    ('{"model": "fault:fault", "input": "  "}', "input", "empty"),
    ('{"model": "fault:fault", "input": []}', "input", "no messages"),
])
async def test_bad_input_is_a_400(server: AppServer, body: str, param: str | None,
                                  fragment: str) -> None:
    status, data = await post(server.url + "/v1/responses", body)
    assert status == 400, data
    assert data["error"]["type"] == "invalid_request_error"
    assert data["error"]["param"] == param
    assert fragment in data["error"]["message"]


async def test_too_large_body_is_413(server: AppServer) -> None:
    status, data = await post(server.url + "/v1/responses", json.dumps(
        {"model": "fault:fault", "input": "a" * (10 * 1024 * 1024)}))
    assert status == 413 and data["error"]["code"] == "request_too_large"


# -- the real model ------------------------------------------------------------------------------
@pytest.mark.slow
async def test_real_model_answers_paris(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="llamacpp:smollm2", max_output_tokens=24,
                                             input="What is the capital of France?")
    assert "Paris" in response.output_text
    follow = await client.responses.create(model="llamacpp:smollm2", max_output_tokens=24,
                                           previous_response_id=response.id,
                                           input="Repeat the name of that city.")
    assert follow.output_text
    async with client.responses.stream(model="llamacpp:smollm2", max_output_tokens=24,
                                       input="What is the capital of France?") as stream:
        final = await stream.get_final_response()
    assert "Paris" in final.output_text


@pytest.mark.parametrize("metadata", [
    {f"k{i}": "v" for i in range(17)}, {"k": "v" * 513}, {"k" * 65: "v"}],
    ids=["17-keys", "long-value", "long-key"])
async def test_responses_metadata_is_bounded_like_openais(server: AppServer,
                                                          metadata: dict[str, str]) -> None:
    """``metadata`` of /v1/responses (kept with the stored response): at most 16 keys of 64
    characters with values of 512, as OpenAI's (was unbounded up to the body limit)."""
    async with aiohttp.ClientSession() as session, session.post(
            server.url + "/v1/responses",
            json={"model": "fault:fault", "input": "x", "metadata": metadata}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["param"].startswith("metadata")
