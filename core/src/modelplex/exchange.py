"""One request and its answer over a :class:`~modelplex.manager.ChatManager`'s conversation.

The feature modules (:mod:`modelplex.structured`, :mod:`modelplex.tools`) build their
requests here: the system prompt and history of the conversation, then the messages of the
turn. Nothing here changes the history; the caller adds the exchange when it succeeded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from modelplex.chunks import StreamChunk
from modelplex.errors import ConfigurationError
from modelplex.provider import ChatRequest
from modelplex.types import ChatMessage, MessageRole

if TYPE_CHECKING:
    from modelplex.manager import ChatManager, ResponseWithMeta
    from modelplex.provider import CommonOptions, Provider
    from modelplex.types import ChatSession

__all__ = ["Turn", "add_to_history"]


class Turn:
    """The provider, session and options of the requests of one turn.

    ``await Turn.start(chat, options)`` initialises the model if needed and validates the
    options once; :meth:`request` builds a request over the history plus the turn's messages.
    """

    def __init__(self, chat: ChatManager, provider: Provider, session: ChatSession,
                 options: CommonOptions) -> None:
        self.chat = chat
        self.provider = provider
        self.session = session
        self.options = options

    @classmethod
    async def start(cls, chat: ChatManager,
                    options: Mapping[str, Any] | None = None) -> Turn:
        """The context of a new turn of ``chat``."""
        provider, session, validated = await chat.request_context(options)
        return cls(chat, provider, session, validated)

    @staticmethod
    def user_message(text: str, images: Sequence[str | bytes] | None = None) -> ChatMessage:
        """The user's message; an invalid one is a :class:`ConfigurationError`."""
        try:
            return ChatMessage(role=MessageRole.USER, content=text, images=tuple(images or ()))
        except ValidationError as err:
            detail = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            raise ConfigurationError(f"message: {detail}") from None

    def request(self, messages: Sequence[ChatMessage], *,
                tools: list[dict[str, Any]] | None = None, tool_choice: Any = None,
                response_format: dict[str, Any] | None = None) -> ChatRequest:
        """A request: system prompt, history, then ``messages``."""
        sent: list[ChatMessage] = []
        if self.session.system_prompt:
            sent.append(ChatMessage.system(self.session.system_prompt))
        sent.extend(self.session.messages)
        sent.extend(messages)
        return ChatRequest(model=self.session.model, messages=sent, options=self.options,
                           tools=tools, tool_choice=tool_choice,
                           response_format=response_format)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """The provider's chunks for ``request``."""
        async with contextlib.aclosing(self.provider.stream_request(request)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def collect(self, request: ChatRequest,
                      on_chunk: Callable[[StreamChunk], None] | None = None
                      ) -> ResponseWithMeta:
        """The whole answer to ``request`` with tokens and timings."""
        start = time.perf_counter()
        first: float | None = None
        chunks: list[StreamChunk] = []
        async for chunk in self.stream(request):
            if first is None and (chunk.content or chunk.reasoning or chunk.tool_calls):
                first = time.perf_counter() - start
            chunks.append(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
        return self.meta(chunks, time.perf_counter() - start, first)

    def meta(self, chunks: list[StreamChunk], latency: float,
             first: float | None) -> ResponseWithMeta:
        """A :class:`ResponseWithMeta` from the chunks of one answer."""
        from modelplex.manager import ResponseWithMeta

        return ResponseWithMeta.from_chunks(
            chunks, latency=latency, time_to_first_token=first, model=self.session.model,
            provider=self.session.provider or self.provider.name)


def add_to_history(session: ChatSession, messages: Sequence[ChatMessage]) -> None:
    """Append a finished exchange to the conversation."""
    session.messages = [*session.messages, *messages]
