"""The server's bounds as the official clients meet them: the stop sequences of every API
(counted and measured, a 400 in the API's own shape naming the field and the limit), and
what a client at a cap gets, with ``openai``, ``anthropic`` and ``ollama`` on the far side."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import ollama
import openai
import pytest

from modelplex.testing.upstream import FaultyUpstream
from modelplex_server.app import AppServer
from modelplex_server.schemas import MANY_STOP, MAX_STOP_CHARS, OPENAI_STOP

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
