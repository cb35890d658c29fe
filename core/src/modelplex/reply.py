"""An answer of a conversation: :class:`Reply` (streamed or awaited), its
:class:`ResponseWithMeta`, and :class:`Turns` (one answer at a time).

One object serves both ways of reading an answer::

    async for chunk in chat.send_message("Hi"):      # stream it
        print(chunk.content, end="")
    meta = await chat.send_message("And now?")        # or take it whole: a ResponseWithMeta

Iterating hands out the underlying stream itself (no wrapper per chunk). A reply is read one
way only: awaiting a reply that is already being iterated is an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Sequence
from typing import Any, Generic, TypeVar

import attrs

from modelplex.chunks import ChatResponse, StreamChunk, ToolCall
from modelplex.cost import Cost, PriceBook, cost_of
from modelplex.errors import ChatBusyError, ModelplexError

__all__ = ["Reply", "ResponseWithMeta", "Turns"]


@attrs.define
class ResponseWithMeta:
    """An answer with what it cost: tokens, latency and time to first token (seconds).

    Through a named model, ``provider`` and ``model`` say what answered, ``deployment`` its
    label and ``attempts`` how many tries it took (retries and fallbacks included). An answer
    asked for whole (not streamed) arrives at once: its ``time_to_first_token`` is its
    ``latency``.
    """

    content: str
    model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    latency: float
    time_to_first_token: float | None
    finish_reason: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] = attrs.Factory(list)
    usage_estimated: bool = False
    cache_hit: bool = False
    steps: list[Any] = attrs.Factory(list)  # tool-calling rounds (modelplex.tools.ToolStep)
    deployment: str | None = None
    attempts: int = 1
    cost: Cost | None = None  # modelplex.cost: amount, currency, known (unknown is not 0)

    @property
    def token_count(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def model_name(self) -> str:
        """The model that answered (alias of ``model``)."""
        return self.model

    @classmethod
    def from_chunks(cls, chunks: Sequence[StreamChunk], *, latency: float,
                    time_to_first_token: float | None, model: str,
                    provider: str, prices: PriceBook | None = None) -> ResponseWithMeta:
        """The meta of one streamed answer from its chunks.

        ``model`` and ``provider`` are used where neither the chunks nor a router (the first
        chunk's ``route``) say what answered; ``prices``: the price book of its cost (default:
        the process-wide configuration's).
        """
        last = chunks[-1] if chunks else StreamChunk()
        usage = last.usage
        route = chunks[0].route if chunks else None  # set by a router: who answered
        return cls(
            content="".join(c.content for c in chunks),
            model=last.model or (route.provider_model if route else model),
            provider=route.provider if route else provider,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency=latency,
            time_to_first_token=time_to_first_token,
            finish_reason=last.finish_reason,
            reasoning="".join(c.reasoning for c in chunks if c.reasoning) or None,
            tool_calls=[call for c in chunks if c.tool_calls for call in c.tool_calls],
            usage_estimated=usage.estimated if usage else True,
            deployment=route.deployment if route else None,
            attempts=route.attempts if route else 1,
            cache_hit=bool(usage and usage.cached),
            cost=_cost(prices, route.provider if route else provider,
                       last.model or (route.provider_model if route else model), usage),
        )

    @classmethod
    def from_response(cls, response: ChatResponse, *, latency: float, model: str,
                      provider: str, prices: PriceBook | None = None) -> ResponseWithMeta:
        """The meta of one answer asked for whole (``Provider.complete_request``).

        ``time_to_first_token`` is the latency (everything came at once), or ``None`` when
        the answer is empty; ``provider`` is used unless a router (``response.route``) says
        which deployment answered; ``prices`` as for :meth:`from_chunks`.
        """
        usage = response.usage
        route = response.route
        answered = bool(response.content or response.reasoning or response.tool_calls)
        return cls(
            content=response.content,
            model=response.model or (route.provider_model if route else model),
            provider=route.provider if route else provider,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            latency=latency,
            time_to_first_token=latency if answered else None,
            finish_reason=response.finish_reason,
            reasoning=response.reasoning or None,
            tool_calls=list(response.tool_calls),
            usage_estimated=usage.estimated,
            deployment=route.deployment if route else None,
            attempts=route.attempts if route else 1,
            cache_hit=usage.cached,
            cost=_cost(prices, route.provider if route else provider,
                       response.model or (route.provider_model if route else model), usage),
        )


def _cost(prices: PriceBook | None, provider: str, model: str, usage: Any) -> Cost:
    return cost_of(provider, model, usage) if prices is None else prices.cost(provider, model,
                                                                              usage)

R = TypeVar("R")

#: How long the next answer waits for a dropped one to be finalised, in seconds.
FINALISE_WITHIN = 5.0


class Reply(Generic[R]):
    """The answer to one message: async-iterable (chunks) and awaitable (the whole answer).

    ``stream`` gives the chunks when the reply is iterated; ``whole()`` gives the answer when
    it is awaited (nobody reads a stream then, so it need not be one). ``aclose()`` (or
    ``async with contextlib.aclosing(reply)``) stops it early.
    """

    __slots__ = ("_read", "_whole_answer", "stream")

    def __init__(self, stream: AsyncGenerator[StreamChunk, None],
                 whole: Callable[[], Awaitable[R]]) -> None:
        #: the underlying stream of chunks
        self.stream = stream
        self._whole_answer = whole
        self._read = False

    def __repr__(self) -> str:
        return f"<Reply {'read' if self._read else 'unread'}>"

    def __aiter__(self) -> AsyncGenerator[StreamChunk, None]:
        self._read = True
        return self.stream

    def __anext__(self) -> Awaitable[StreamChunk]:
        self._read = True
        return self.stream.__anext__()

    async def aclose(self) -> None:
        """Stop the answer; the history keeps what was received, marked partial."""
        await self.stream.aclose()

    async def _whole(self) -> R:
        if self._read:
            raise ModelplexError("this reply is already being streamed with `async for`; "
                                 "await a reply or iterate it, not both")
        self._read = True
        return await self._whole_answer()

    def __await__(self) -> Generator[Any, None, R]:
        return self._whole().__await__()


class Turns:
    """One answer at a time in a conversation, so its history equals what the model saw.

    :meth:`take` is called when an answer starts. An earlier answer left unfinished by its
    reader is closed first (its partial turn is recorded before the new request is built);
    one dropped without closing is waited for while the event loop finalises it; one still
    being read by another task is refused with :class:`ChatBusyError`. Only a weak reference
    is kept, so an answer nobody holds is still closed promptly by the garbage collector.
    """

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: OpenAnswer | None = None

    async def settle(self) -> None:
        """Close (or wait for) an earlier answer left unfinished; refuse if another task is
        still reading it. Requests that do not stream through :meth:`take` call this first."""
        found = self._open
        if found is None:
            return
        previous = found.ref()
        if previous is None:  # dropped unfinished: the loop's finaliser records its turn
            await found.ended_within(FINALISE_WITHIN)
            return
        task = asyncio.current_task()
        owner = found.owner
        if getattr(previous, "ag_running", False) or (
                owner is not None and owner is not task and not owner.done()):
            raise ChatBusyError("the previous message is still being answered in another "
                                "task: wait for it (or close it) before sending the next")
        await previous.aclose()

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold the conversation for an exchange that is not streamed to the caller (an
        awaited answer, structured output, the tool loop): a message sent meanwhile from
        another task raises :class:`ChatBusyError`."""
        held = _Held()
        token = await self.take(held)
        try:
            yield
        finally:
            self.release(token)

    async def take(self, stream: AsyncGenerator[Any, None] | _Held) -> OpenAnswer:
        """Make ``stream`` the open answer; returns the token to :meth:`release` it with."""
        await self.settle()
        token = self._open = OpenAnswer(stream, asyncio.current_task())
        return token

    def release(self, token: OpenAnswer) -> None:
        """The answer that got ``token`` has ended."""
        token.end()
        if self._open is token:
            self._open = None

    @property
    def open(self) -> bool:
        """Whether an answer is open (taken and not released yet)."""
        return self._open is not None

    async def aclose(self) -> None:
        """Close the open answer, unless another task is reading it."""
        previous = self._open.ref() if self._open is not None else None
        if previous is not None and not getattr(previous, "ag_running", False):
            await previous.aclose()


class OpenAnswer:
    """The open answer of a conversation (:meth:`Turns.take`'s token): a weak reference to
    it, the task that started it, and whether it has ended. The :class:`asyncio.Event` that
    lets the next answer wait for its end is made only when one waits (an answer dropped
    unfinished), not for every answer."""

    __slots__ = ("_event", "ended", "owner", "ref")

    def __init__(self, stream: AsyncGenerator[Any, None] | _Held,
                 owner: asyncio.Task[Any] | None) -> None:
        self.ref: weakref.ref[AsyncGenerator[Any, None] | _Held] = weakref.ref(stream)
        self.owner = owner
        self.ended = False
        self._event: asyncio.Event | None = None

    def end(self) -> None:
        """The answer has ended: wake whoever waits for it."""
        self.ended = True
        if self._event is not None:
            self._event.set()

    async def ended_within(self, seconds: float) -> None:
        """Wait until the answer has ended, ``seconds`` at most."""
        if self.ended:
            return
        if self._event is None:
            self._event = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)


class _Held:
    """Stands for an answer that is not streamed to the caller while :meth:`Turns.hold`
    holds the conversation: never closed by the next message, which is refused instead."""

    __slots__ = ("__weakref__",)
    ag_running = True

    async def aclose(self) -> None:
        """Nothing to close (for :meth:`Turns.aclose`)."""
