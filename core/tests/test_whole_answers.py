"""Callers that do not read a stream ask the provider for the whole answer (its
non-streaming request), never a collected stream: ``get_response_with_meta``, an awaited
``send_message`` and each attempt of ``get_structured`` (issue #18, item 5)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

from modelplex import ChatManager, hookimpl
from modelplex.chunks import ChatResponse, StreamChunk, Usage
from modelplex.plugins import Plugins
from modelplex.provider import Capabilities, ChatRequest, Provider


class Counting(Provider):
    """Counts streamed and whole answers; answers each with the next scripted text."""

    name = "counting"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.streams = 0
        self.wholes = 0

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        self.streams += 1
        yield StreamChunk(content=self.answers.pop(0), finish_reason="stop",
                          usage=Usage(prompt_tokens=1, completion_tokens=1))

    async def _complete(self, request: ChatRequest) -> ChatResponse:
        self.wholes += 1
        return ChatResponse(content=self.answers.pop(0), model=request.model,
                            provider=self.name, finish_reason="stop",
                            usage=Usage(prompt_tokens=1, completion_tokens=1))


def plugins_for(provider: Counting) -> Plugins:
    class Plugin:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(lambda **kw: provider, name="counting")

    plugins = Plugins(load_entrypoints=False)
    plugins.register(Plugin(), name="counting")
    return plugins


async def test_whole_answers_never_stream() -> None:
    provider = Counting(["Paris.", "Rome.", "not json", '{"city": "Paris"}'])
    async with ChatManager("counting:m", plugins=plugins_for(provider)) as chat:
        assert (await chat.get_response_with_meta("France?")).content == "Paris."
        assert (await chat.send_message("Italy?")).content == "Rome."
        result = await chat.get_structured(
            "Where?", {"type": "object", "required": ["city"],
                       "properties": {"city": {"type": "string"}}}, mode="prompted")
        assert result.value == {"city": "Paris"} and result.attempts == 2
    assert (provider.streams, provider.wholes) == (0, 4)
    # a reader of the stream streams
    provider.answers.append("Streamed.")
    async with ChatManager("counting:m", plugins=plugins_for(provider)) as chat:
        assert "".join([c.content async for c in chat.send_message("Go?")]) == "Streamed."
    assert provider.streams == 1
