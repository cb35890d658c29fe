"""The server's bounds as the official clients meet them: the stop sequences of every API
(counted and measured, a 400 in the API's own shape naming the field and the limit), and
what a client at a cap gets, with ``openai``, ``anthropic`` and ``ollama`` on the far side."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import ollama
import openai
import pytest
from openai.types.responses import Response

from modelplex.testing.upstream import FaultyUpstream
from modelplex_server.app import AppServer
from modelplex_server.schemas import MANY_STOP, MAX_STOP_CHARS, OPENAI_STOP
from modelplex_server.settings import KeyConfig, generate_key, hash_key
from modelplex_server.testing import StoreBackend

USER: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def oclient(server: AppServer) -> AsyncIterator[ollama.AsyncClient]:
    client = ollama.AsyncClient(host=server.url + "/ollama")
    yield client
    await client._client.aclose()


@pytest.fixture
async def aclient(server: AppServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=server.url, api_key="unused",
                                        max_retries=0) as c:
        yield c


async def test_stop_sequences_are_bounded_on_every_api(
        client: openai.AsyncOpenAI, aclient: anthropic.AsyncAnthropic,
        oclient: ollama.AsyncClient, upstream: FaultyUpstream) -> None:
    """OpenAI's ``stop`` takes 4 sequences, Anthropic's ``stop_sequences`` and Ollama's
    ``options.stop`` 16 (they were unbounded), each at most 500 characters (none was
    measured): one more is a 400 naming the field and the limit; at the limit it passes."""
    assert (OPENAI_STOP, MANY_STOP, MAX_STOP_CHARS) == (4, 16, 500)
    many, long = [f"s{i}" for i in range(MANY_STOP + 1)], "x" * (MAX_STOP_CHARS + 1)

    for stop in (many[:OPENAI_STOP + 1], [long], long):
        with pytest.raises(openai.BadRequestError) as oai:
            await client.chat.completions.create(model="fault:fault", messages=USER, stop=stop)
        assert oai.value.param == "stop"
    assert "at most 4 stop sequences" in oai.value.message or \
        "at most 500 characters" in oai.value.message
    reply = await client.chat.completions.create(model="fault:fault", messages=USER,
                                                 stop=many[:OPENAI_STOP])
    assert reply.choices[0].message.content
    assert upstream.bodies[-1]["stop"] == many[:OPENAI_STOP]

    for stop in (many, [long]):
        with pytest.raises(anthropic.BadRequestError) as ant:
            await aclient.messages.create(model="fault:fault", max_tokens=10, messages=USER,
                                          stop_sequences=stop)
        assert "invalid 'stop_sequences'" in ant.value.message
    assert "at most 500 characters" in ant.value.message
    message = await aclient.messages.create(model="fault:fault", max_tokens=10,
                                            messages=USER, stop_sequences=many[:MANY_STOP])
    assert message.content

    for options in ({"stop": many}, {"stop": [long]}):
        for call in (oclient.chat(model="fault:fault", messages=USER, options=options),
                     oclient.generate(model="fault:fault", prompt="hi", options=options)):
            with pytest.raises(ollama.ResponseError) as oll:
                await call
            assert oll.value.status_code == 400 and "'options.stop'" in oll.value.error
    assert "at most 500 characters" in oll.value.error
    with pytest.raises(ollama.ResponseError) as oll:
        await oclient.chat(model="fault:fault", messages=USER, options={"stop": many})
    assert f"at most {MANY_STOP} stop sequences are taken (got {MANY_STOP + 1})" \
        in oll.value.error
    answer = await oclient.chat(model="fault:fault", messages=USER,
                                options={"stop": many[:MANY_STOP]})
    assert answer.message.content


async def test_stored_responses_are_refused_at_max_conversations(
        serve: Any, store_backend: StoreBackend, upstream: FaultyUpstream) -> None:
    """A stored response that starts a conversation counts toward ``max_conversations`` and,
    at the cap, is a 400 ``conversations_limit_reached`` naming ``store`` before the model is
    asked (it was stored past the cap); requests at once pass the cap no more than
    ``POST /api/conversations`` does. A follow-up to the last response of a chain and
    ``store=false`` start none and still work; an answer that failed frees its place."""
    secret = generate_key()
    server = await serve(store=store_backend.open(), max_conversations=3,
                         keys=[KeyConfig(name="alice", hash=hash_key(secret))])
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=secret,
                                  max_retries=0) as oai:
        upstream.faults.append("500")
        with pytest.raises(openai.InternalServerError):
            await oai.responses.create(model="fault:fault", input="fails")
        made = await asyncio.gather(*(oai.responses.create(model="fault:fault", input=f"q{i}")
                                      for i in range(6)), return_exceptions=True)
        kept = [r for r in made if isinstance(r, Response)]
        refused = [r for r in made if isinstance(r, openai.BadRequestError)]
        assert (len(kept), len(refused)) == (3, 3), made  # the failed one freed its place
        error = refused[0]
        assert error.code == "conversations_limit_reached" and error.param == "store"
        assert "max_conversations" in error.message and "store=false" in error.message
        asked = len(upstream.chat_requests())
        with pytest.raises(openai.BadRequestError):
            await oai.responses.create(model="fault:fault", input="one more", stream=True)
        assert len(upstream.chat_requests()) == asked  # refused before the model was asked

        follow = await oai.responses.create(model="fault:fault", input="and?",
                                            previous_response_id=kept[0].id)
        assert follow.output_text and (await oai.responses.retrieve(follow.id)).id == follow.id
        with pytest.raises(openai.BadRequestError):  # from an earlier response: a new one
            await oai.responses.create(model="fault:fault", input="again",
                                       previous_response_id=kept[0].id)
        unstored = await oai.responses.create(model="fault:fault", input="x", store=False)
        with pytest.raises(openai.NotFoundError):
            await oai.responses.retrieve(unstored.id)
        await oai.responses.delete(kept[1].id)  # alone in its conversation: a place is free
        again = await oai.responses.create(model="fault:fault", input="now", stream=True)
        assert [e.type async for e in again][-1] == "response.completed"


async def test_anthropic_clients_get_anthropics_model_list(
        aclient: anthropic.AsyncAnthropic, client: openai.AsyncOpenAI) -> None:
    """``models.list`` and ``models.retrieve`` of the anthropic SDK (which sends
    ``anthropic-version``) get Anthropic's shapes and pages (they got OpenAI's list: no
    ``type``, ``display_name``, ``created_at`` or ``has_more``); OpenAI's clients keep
    OpenAI's."""
    ids = [m.id async for m in client.models.list()]
    assert len(ids) >= 2 and (await client.models.retrieve(ids[0])).object == "model"
    first = await aclient.models.list(limit=1)
    assert [m.id for m in first.data] == ids[:1] and first.has_more
    assert first.first_id == first.last_id == ids[0]
    assert first.data[0].type == "model" and first.data[0].display_name == ids[0]
    assert first.data[0].created_at is not None
    assert [m.id async for m in aclient.models.list(limit=1)] == ids  # paged to the end
    after = await aclient.models.list(after_id=ids[0], limit=1000)
    assert [m.id for m in after.data] == ids[1:] and not after.has_more
    before = await aclient.models.list(before_id=ids[-1], limit=1)
    assert [m.id for m in before.data] == ids[-2:-1]
    one = await aclient.models.retrieve(ids[0])
    assert (one.type, one.id) == ("model", ids[0])
    for bad in ({"limit": 0}, {"after_id": "nope:x"}):
        with pytest.raises(anthropic.BadRequestError):
            await aclient.models.list(**bad)  # type: ignore[arg-type]
    with pytest.raises(anthropic.NotFoundError):
        await aclient.models.retrieve("nope:x")


async def test_responses_fields_it_cannot_honour_are_refused(client: openai.AsyncOpenAI,
                                                             upstream: FaultyUpstream) -> None:
    """``conversation`` (OpenAI's Conversations API), a stored ``prompt`` template,
    ``top_logprobs`` and logprobs in ``include``, and chat completions' audio output, legacy
    ``functions`` and ``web_search_options`` were ignored silently (an answer without the
    conversation's history, the template, the functions...): each is a 400 naming the field,
    before the model is asked. A stored response retrieved with ``stream`` was an empty
    stream."""
    asked = len(upstream.chat_requests())
    calls: list[tuple[Any, str]] = [
        (client.responses.create(model="fault:fault", input="hi", conversation="conv_1"),
         "conversation"),
        (client.responses.create(model="fault:fault", input="hi",
                                 prompt={"id": "pmpt_1", "version": "2"}), "prompt"),
        (client.responses.create(model="fault:fault", input="hi", top_logprobs=3,
                                 stream=True), "top_logprobs"),
        (client.responses.create(model="fault:fault", input="hi",
                                 include=["message.output_text.logprobs"]), "include"),
        (client.chat.completions.create(model="fault:fault", messages=USER,
                                        functions=[{"name": "f", "parameters": {}}]),
         "functions"),
        (client.chat.completions.create(model="fault:fault", messages=USER,
                                        modalities=["text", "audio"],
                                        audio={"voice": "alloy", "format": "wav"}), "audio"),
        (client.chat.completions.create(model="fault:fault", messages=USER,
                                        web_search_options={}), "web_search_options")]
    for call, field in calls:
        with pytest.raises(openai.BadRequestError) as err:
            await call
        assert err.value.param == field and field in err.value.message
    assert len(upstream.chat_requests()) == asked
    # what Codex CLI includes is no log probability: it passes
    kept = await client.responses.create(model="fault:fault", input="hi",
                                         include=["reasoning.encrypted_content"])
    with pytest.raises(openai.BadRequestError) as err:  # was an empty stream
        await client.responses.retrieve(kept.id, stream=True)
    assert err.value.param == "stream"


async def test_less_common_sdk_calls(client: openai.AsyncOpenAI, aclient: anthropic.AsyncAnthropic,
                                     oclient: ollama.AsyncClient,
                                     upstream: FaultyUpstream) -> None:
    """The official clients' less common calls against the server, each checked once:
    openai's ``with_raw_response`` and a stream with ``include_usage``; anthropic's
    ``messages.stream`` with tools and ``count_tokens`` with tools and a system prompt;
    ollama's ``chat`` with a ``format`` schema, ``show`` and ``ps``."""
    raw = await client.chat.completions.with_raw_response.create(model="fault:fault",
                                                                 messages=USER)
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message.content == "tok " * 5
    chunks = [c async for c in await client.chat.completions.create(
        model="fault:fault", messages=USER, stream=True,
        stream_options={"include_usage": True})]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 8 and all(c.usage is None for c in chunks[:-1])

    tools: Any = [{"name": "get_weather", "description": "Weather in a city", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}}}]
    async with aclient.messages.stream(model="fault:fault", max_tokens=20, messages=USER,
                                       tools=tools) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "end_turn" and final.content[0].type == "text"
    assert upstream.bodies[-1]["tools"][0]["function"]["name"] == "get_weather"
    count = await aclient.messages.count_tokens(model="fault:fault", messages=USER,
                                                tools=tools, system="Be brief.")
    assert count.input_tokens > 0

    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    reply = await oclient.chat(model="fault:fault", messages=USER, format=schema)
    assert reply.done and upstream.bodies[-1]["response_format"]["json_schema"]["schema"] \
        == schema
    shown = await oclient.show("fault:fault")
    assert shown.details is not None and "completion" in (shown.capabilities or [])
    assert (await oclient.ps()).models == []
