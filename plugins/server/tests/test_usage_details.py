"""Usage details through the server: an upstream that reports cached and reasoning tokens
(OpenAI's ``prompt_tokens_details``/``completion_tokens_details``, Anthropic's
``cache_read_input_tokens``/``cache_creation_input_tokens``) is answered with them in each API's
own fields, read with the official ``openai`` and ``anthropic`` clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from modelplex.config import parse_config
from modelplex.plugins import Plugins
from modelplex.pool import ProviderPool
from modelplex.registry import ModelRegistry
from modelplex.testing.upstream import FaultyUpstream, Reply
from modelplex_server.app import AppServer, create_app, start
from modelplex_server.resolve import ModelResolver
from modelplex_server.settings import ServerSettings

OPENAI_DETAILS = {"prompt_tokens_details": {"cached_tokens": 2},
                  "completion_tokens_details": {"reasoning_tokens": 4}}
ANTHROPIC_DETAILS = {"cache_read_input_tokens": 7, "cache_creation_input_tokens": 11}


class Served:
    def __init__(self, server: AppServer, up: FaultyUpstream) -> None:
        self.url, self.up = server.url, up

    def openai_reply(self) -> None:
        self.up.replies.append(Reply("hello", prompt_tokens=10, completion_tokens=6,
                                     usage=OPENAI_DETAILS))

    def anthropic_reply(self) -> None:
        self.up.replies.append(Reply("hello", prompt_tokens=3, completion_tokens=6,
                                     usage=ANTHROPIC_DETAILS))


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    monkeypatch.setenv("MODELPLEX_LOAD_PLUGINS", "openai,anthropic,server")
    plugins = Plugins()
    async with FaultyUpstream() as up:
        config = parse_config({
            "providers": {"openai": {"api_key": "sk-usage-test-0123456789"},
                          "anthropic": {"api_key": "sk-ant-usage-test-0123456789"}},
            "models": {
                "oa": {"deployments": [{"model": "openai:m", "base_url": up.url + "/v1"}]},
                "an": {"deployments": [{"model": "anthropic:m", "base_url": up.url}]}}},
            source="usage-test.toml")
        resolver = ModelResolver(config=config, plugins=plugins, pool=ProviderPool())
        registry = ModelRegistry(plugins=plugins, get_provider=resolver.provider,
                                 providers=[], named_models=resolver.named_models, timeout=5)
        server = await start(create_app(ServerSettings(port=0, health_interval=None),
                                        resolver=resolver, registry=registry))
        try:
            yield Served(server, up)
        finally:
            await server.stop()


@pytest.fixture
async def oai(served: Served) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=served.url + "/v1", api_key="unused",
                                  max_retries=0) as c:
        yield c


@pytest.fixture
async def ac(served: Served) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=served.url, api_key="unused",
                                        max_retries=0) as c:
        yield c


USER: Any = [{"role": "user", "content": "hi"}]


async def test_chat_completions_report_cached_and_reasoning_tokens(
        served: Served, oai: openai.AsyncOpenAI) -> None:
    served.openai_reply()
    reply = await oai.chat.completions.create(model="oa", messages=USER)
    assert reply.usage is not None and reply.usage.prompt_tokens == 10
    assert reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == 2
    assert reply.usage.completion_tokens_details is not None
    assert reply.usage.completion_tokens_details.reasoning_tokens == 4
    served.openai_reply()
    chunks = [c async for c in await oai.chat.completions.create(
        model="oa", messages=USER, stream=True, stream_options={"include_usage": True})]
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 2


async def test_chat_completions_without_details_have_none(served: Served,
                                                          oai: openai.AsyncOpenAI) -> None:
    served.up.replies.append(Reply("hello"))
    reply = await oai.chat.completions.create(model="oa", messages=USER)
    assert reply.usage is not None and reply.usage.prompt_tokens_details is None


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_api_reports_cached_and_reasoning_tokens(
        served: Served, oai: openai.AsyncOpenAI, stream: bool) -> None:
    served.openai_reply()
    if stream:
        events = [e async for e in await oai.responses.create(model="oa", input="hi",
                                                              stream=True)]
        response: Any = events[-1].response  # type: ignore[union-attr]
    else:
        response = await oai.responses.create(model="oa", input="hi")
    assert response.usage.input_tokens_details.cached_tokens == 2
    assert response.usage.output_tokens_details.reasoning_tokens == 4


async def test_responses_api_reports_anthropic_cache_reads(served: Served,
                                                           oai: openai.AsyncOpenAI) -> None:
    served.anthropic_reply()
    response = await oai.responses.create(model="an", input="hi")
    assert response.usage is not None
    assert response.usage.input_tokens == 3 + 7 + 11  # OpenAI counts the cache in the input
    assert response.usage.input_tokens_details.cached_tokens == 7


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_report_anthropic_cache_tokens(
        served: Served, ac: anthropic.AsyncAnthropic, stream: bool) -> None:
    served.anthropic_reply()
    if stream:
        async with ac.messages.stream(model="an", max_tokens=50, messages=USER) as s:
            message = await s.get_final_message()
    else:
        message = await ac.messages.create(model="an", max_tokens=50, messages=USER)
    usage = message.usage
    assert (usage.input_tokens, usage.output_tokens) == (3, 6)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (7, 11)


async def test_messages_report_openai_cache_reads(served: Served,
                                                  ac: anthropic.AsyncAnthropic) -> None:
    served.openai_reply()
    message = await ac.messages.create(model="oa", max_tokens=50, messages=USER)
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (8, 2)
