"""Simulated streaming (seed 003): a model that only answers whole is streamed by the core,
in one place (``Provider.stream_request``), under every layer of the request path."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

from modelplex import ChatManager, hookimpl
from modelplex.chunks import ChatResponse, StreamChunk, ToolCall, Usage
from modelplex.config import Config
from modelplex.plugins import Plugins
from modelplex.provider import Capabilities, ChatRequest, Provider

ANSWER = "The capital of France is Paris."


class WholeOnly(Provider):
    """A provider whose API has no streaming: it implements ``_complete`` alone."""

    name = "whole"
    default_model: str | None = "m"
    capabilities: ClassVar[Capabilities] = Capabilities(streaming=False)

    def __init__(self, **_: Any) -> None:
        self.calls = 0

    async def _complete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        return ChatResponse(content=ANSWER, model=request.model, provider=self.name,
                            reasoning="Paris is the capital.", finish_reason="stop",
                            usage=Usage(prompt_tokens=7, completion_tokens=6),
                            response_id="resp-1")


class Mixed(Provider):
    """A streaming provider one of whose models ("batch-only") answers whole only."""

    name = "mixed"
    capabilities: ClassVar[Capabilities] = Capabilities(streaming=True)

    def __init__(self, **_: Any) -> None:
        self.whole = 0

    def supports_streaming(self, model: str) -> bool:
        return model != "batch-only"

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        yield StreamChunk(content="streamed", model=request.model)
        yield StreamChunk(finish_reason="stop", usage=Usage(1, 1), model=request.model)

    async def _complete(self, request: ChatRequest) -> ChatResponse:
        self.whole += 1
        call = ToolCall(id="c1", name="lookup", arguments={"q": "x"})
        return ChatResponse(content="", model=request.model, provider=self.name,
                            tool_calls=[call], finish_reason="tool_calls", usage=Usage(2, 3))


class Plugin:
    @hookimpl
    def register_providers(self, register: Callable[..., None]) -> None:
        register(WholeOnly, name="whole")
        register(Mixed, name="mixed")


async def test_a_provider_that_only_answers_whole_streams() -> None:
    provider = WholeOnly()  # concrete without a _stream of its own
    chunks = [c async for c in provider.chat([{"role": "user", "content": "Capital?"}],
                                             model="m")]
    assert chunks[0].reasoning == "Paris is the capital."
    assert [c.content for c in chunks[1:-1]] == ["The ", "capital ", "of ", "France ", "is ",
                                                 "Paris."]
    last = chunks[-1]
    assert (last.finish_reason, last.usage) == ("stop", Usage(prompt_tokens=7,
                                                              completion_tokens=6))
    assert last.response_id == "resp-1"
    joined = ChatResponse.from_chunks(chunks, model="m", provider="whole")
    assert joined == await provider.complete([{"role": "user", "content": "Capital?"}],
                                             model="m")


async def test_through_the_request_path() -> None:
    plugins = Plugins(load_entrypoints=False)
    plugins.register(Plugin(), name="whole-plugin")
    async with ChatManager("whole:m", plugins=plugins, config=Config()) as chat:
        pieces = [c.content async for c in chat.send_message("Capital?") if c.content]
        assert "".join(pieces) == ANSWER and len(pieces) == 6
        response = await chat.get_response_with_meta("Again?")
        assert response.content == ANSWER
    async with ChatManager("mixed:batch-only", plugins=plugins, config=Config()) as chat:
        chunks = [c async for c in chat.send_message("Look it up", options={})]
        assert chunks[-1].tool_calls is not None and chunks[-1].finish_reason == "tool_calls"
    async with ChatManager("mixed:live", plugins=plugins, config=Config()) as chat:
        assert [c.content async for c in chat.send_message("hi") if c.content] == ["streamed"]


def test_a_streaming_provider_is_unchanged() -> None:
    assert Mixed().supports_streaming("live") and not Mixed().supports_streaming("batch-only")
    assert WholeOnly().supports_streaming("m") is False
