"""One exchange of a conversation: a :class:`Turn`, and the plain question-and-answer.

A :class:`~modelplex.manager.ChatManager` keeps the history, the mode and the options. For
each exchange it hands a :class:`Turn` (the provider, the session, the validated options and
the conversation's id) to the code that talks to the model: :func:`streamed` and
:func:`answered` here, structured output (:mod:`modelplex.structured`) and the tool loop
(:mod:`modelplex.tools`). None of them knows the manager.

A turn builds each request over the system prompt and the history, asks for the answer
streamed (:meth:`Turn.stream`) or whole (:meth:`Turn.complete`: the provider's non-streaming
request, for callers that do not read a stream), and adds a finished exchange to the history
(:meth:`Turn.add`, the one way an exchange reaches it).

The history rules of a plain exchange:

Each answer added says who wrote it and what it used, in its ``metadata``: ``model``
(``provider:model``), ``provider`` and ``usage`` (as a stored conversation gives it back,
:func:`modelplex.store.conversations.history_of`).

* streamed: the question and the answer when it ends; if the reader stops early, the
  reading is cancelled or a provider timeout expires, the question and the text received so
  far, marked ``{"partial": True}`` (nothing if no text had arrived); any other provider
  error leaves the history unchanged (the error keeps the partial answer);
* awaited whole: the question and the answer when the answer came; a failure, a timeout or
  a cancellation leaves the history unchanged (nothing was received).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pydantic import ValidationError

from modelplex.chunks import StreamChunk, Usage
from modelplex.cost import PriceBook
from modelplex.errors import ConfigurationError, ProviderError, ProviderTimeoutError
from modelplex.provider import ChatRequest, CommonOptions, Provider
from modelplex.reply import ResponseWithMeta, Turns
from modelplex.types import ChatMessage, ChatSession, MessageRole

__all__ = ["Turn", "answered", "checked_system_prompt", "owned", "streamed", "user_message",
           "written_by"]

T = TypeVar("T")


def _problems(err: ValidationError) -> str:
    return "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())


def user_message(text: str, images: Sequence[str | bytes] | None = None) -> ChatMessage:
    """The user's message; an invalid one is a :class:`ConfigurationError`."""
    try:
        return ChatMessage(role=MessageRole.USER, content=text, images=tuple(images or ()))
    except ValidationError as err:
        raise ConfigurationError(f"message: {_problems(err)}") from None


def checked_system_prompt(text: Any) -> str | None:
    """``text`` if it can be sent as a system message; a ConfigurationError otherwise."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise ConfigurationError(f"system_prompt must be text (got {type(text).__name__})")
    if text.strip():
        try:
            ChatMessage.system(text)
        except ValidationError as err:
            raise ConfigurationError(f"system_prompt: {_problems(err)}") from None
    return text


def written_by(provider: str, model: str, usage: Usage | None) -> dict[str, Any]:
    """An answer's metadata: the ``model`` (``provider:model``) and ``provider`` that wrote
    it and its ``usage`` (None when the provider reported none), as the stores keep it."""
    used = None if usage is None else {"prompt_tokens": usage.prompt_tokens,
                                       "completion_tokens": usage.completion_tokens,
                                       "estimated": usage.estimated}
    return {"model": model if ":" in model else f"{provider}:{model}", "provider": provider,
            "usage": used}


def _exchanged(user: ChatMessage, content: str, calls: Sequence[dict[str, Any]],
               metadata: dict[str, Any], *, partial: bool = False) -> list[ChatMessage]:
    """The question, and the answer (with who wrote it) unless the model said nothing."""
    if not content.strip() and not calls:
        return [user]
    return [user, ChatMessage(role=MessageRole.ASSISTANT, content=content,
                              tool_calls=tuple(calls),
                              metadata={**metadata, "partial": True} if partial else metadata)]


class Turn:
    """The provider, session and validated options of the requests of one exchange.

    ``cache`` (``None``, ``True`` or ``False``) and ``conversation_id`` go on every request
    (:class:`~modelplex.provider.ChatRequest`) for the layers that read them. ``prices``
    prices the answers (default: the process-wide configuration's price book).
    """

    __slots__ = ("cache", "conversation_id", "options", "prices", "provider", "session")

    def __init__(self, provider: Provider, session: ChatSession, options: CommonOptions, *,
                 cache: bool | None = None, conversation_id: str | None = None,
                 prices: PriceBook | None = None) -> None:
        self.provider = provider
        self.session = session
        self.options = options
        self.cache = cache
        self.conversation_id = conversation_id
        self.prices = prices

    user_message = staticmethod(user_message)

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
                           response_format=response_format, cache=self.cache,
                           conversation_id=self.conversation_id)

    def stream(self, request: ChatRequest) -> AsyncGenerator[StreamChunk, None]:
        """The provider's chunks for ``request`` (close it to stop the answer)."""
        return self.provider.stream_request(request)

    async def complete(self, request: ChatRequest) -> ResponseWithMeta:
        """The whole answer to ``request`` from the provider's non-streaming request.

        Its ``time_to_first_token`` is its latency (nothing arrives before the whole).
        """
        start = time.perf_counter()
        response = await self.provider.complete_request(request)
        return ResponseWithMeta.from_response(
            response, latency=time.perf_counter() - start, model=self.session.model,
            provider=self.session.provider or self.provider.name, prices=self.prices)

    def meta(self, chunks: Sequence[StreamChunk], latency: float,
             first: float | None) -> ResponseWithMeta:
        """A :class:`ResponseWithMeta` from the chunks of one streamed answer."""
        return ResponseWithMeta.from_chunks(
            chunks, latency=latency, time_to_first_token=first, model=self.session.model,
            provider=self.session.provider or self.provider.name, prices=self.prices)

    def add(self, messages: Sequence[ChatMessage]) -> None:
        """Append a finished exchange to the history.

        The history and ``messages`` are ChatMessages already (validated when they were
        built), so the new list is set without the session's assignment validation, which
        would check the whole history again on every turn (time growing with its length)."""
        session = self.session
        session.__dict__["messages"] = [*session.messages, *messages]
        session.__pydantic_fields_set__.add("messages")

    async def answer(self, user: ChatMessage) -> ResponseWithMeta:
        """Ask ``user`` and return the whole answer (not streamed); both join the history
        when it came."""
        meta = await self.complete(self.request([user]))
        reported = meta.prompt_tokens or meta.completion_tokens or not meta.usage_estimated
        usage = (Usage(meta.prompt_tokens, meta.completion_tokens, meta.usage_estimated)
                 if reported else None)  # nothing reported, nothing estimated
        self.add(_exchanged(user, meta.content, [call.to_dict() for call in meta.tool_calls],
                            written_by(meta.provider, meta.model, usage)))
        return meta

    def written_by(self, first: StreamChunk | None, last: StreamChunk | None
                   ) -> dict[str, Any]:
        """Who wrote a streamed answer (the router's route on its first chunk, else this
        turn's provider and model) and its usage (on its last chunk)."""
        route = first.route if first is not None else None
        provider = route.provider if route else self.session.provider or self.provider.name
        model = (last.model if last is not None and last.model else None) or (
            route.provider_model if route else self.session.model)
        return written_by(provider, model, last.usage if last is not None else None)


def streamed(turns: Turns, start: Callable[[], Awaitable[Turn]],
             user: ChatMessage) -> AsyncGenerator[StreamChunk, None]:
    """The answer to ``user``, streamed, by the rules of the module docs.

    Nothing runs until the first chunk is asked for: then ``turns`` makes this the open
    answer (closing one left unfinished) and ``start()`` gives the turn.
    """
    itself: list[AsyncGenerator[StreamChunk, None]] = []
    stream = _streamed(turns, start, user, itself)
    itself.append(stream)
    return stream


async def _streamed(turns: Turns, start: Callable[[], Awaitable[Turn]], user: ChatMessage,
                    itself: list[AsyncGenerator[StreamChunk, None]]
                    ) -> AsyncGenerator[StreamChunk, None]:
    token = await turns.take(itself.pop())
    del itself  # emptied: not held while the answer is read
    turn: Turn | None = None
    parts: list[str] = []
    calls: list[dict[str, Any]] | None = None  # made at the first tool call
    first: StreamChunk | None = None
    last: StreamChunk | None = None
    finished = failed = False
    try:
        turn = await start()
        stream = turn.stream(turn.request([user]))
        try:  # closed however the reading ends (contextlib.aclosing, without its object)
            async for chunk in stream:
                first = first or chunk
                if chunk.usage is not None or chunk.model:
                    last = chunk
                parts.append(chunk.content)
                if chunk.tool_calls:
                    calls = calls or []
                    calls.extend(call.to_dict() for call in chunk.tool_calls)
                yield chunk
        finally:
            await stream.aclose()
        finished = True
    except ProviderError as err:
        # a timeout is the caller giving up, like a cancellation: both keep the partial
        failed = not isinstance(err, ProviderTimeoutError)
        raise
    finally:
        if turn is not None and not failed and (finished or parts):
            turn.add(_exchanged(user, "".join(parts), calls or (), turn.written_by(first, last),
                                partial=not finished))
        turns.release(token)


def owned(turns: Turns, start: Callable[[], Awaitable[Turn]],
          answer: Callable[[Turn], AsyncGenerator[T, None]]) -> AsyncGenerator[T, None]:
    """The items of ``answer(turn)`` (structured output streamed, say), the conversation's
    open answer while they are read, by the same rules as :func:`streamed`'s chunks."""
    itself: list[AsyncGenerator[T, None]] = []
    stream = _owned(turns, start, answer, itself)
    itself.append(stream)
    return stream


async def _owned(turns: Turns, start: Callable[[], Awaitable[Turn]],
                 answer: Callable[[Turn], AsyncGenerator[T, None]],
                 itself: list[AsyncGenerator[T, None]]) -> AsyncGenerator[T, None]:
    token = await turns.take(itself.pop())
    try:
        async with contextlib.aclosing(answer(await start())) as items:
            async for item in items:
                yield item
    finally:
        turns.release(token)


async def answered(turns: Turns, start: Callable[[], Awaitable[Turn]],
                   user: ChatMessage) -> ResponseWithMeta:
    """The whole answer to ``user`` (the provider's non-streaming request), holding
    ``turns`` while it is asked."""
    async with turns.hold():
        turn = await start()
        return await turn.answer(user)
