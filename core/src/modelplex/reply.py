"""``Reply``: what :meth:`ChatManager.send_message` returns.

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
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import Any, Generic, TypeVar

from modelplex.chunks import StreamChunk
from modelplex.errors import ChatBusyError, ModelplexError

__all__ = ["Reply", "Turns"]

R = TypeVar("R")

#: How long the next answer waits for a dropped one to be finalised, in seconds.
FINALISE_WITHIN = 5.0


class Reply(Generic[R]):
    """The answer to one message: async-iterable (chunks) and awaitable (the whole answer).

    ``aclose()`` (or ``async with contextlib.aclosing(reply)``) stops it early.
    """

    __slots__ = ("_collect", "_read", "stream")

    def __init__(self, stream: AsyncGenerator[StreamChunk, None],
                 collect: Callable[[AsyncGenerator[StreamChunk, None]], Awaitable[R]]) -> None:
        #: the underlying stream of chunks
        self.stream = stream
        self._collect = collect
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
        return await self._collect(self.stream)

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
        self._open: tuple[weakref.ref[AsyncGenerator[Any, None]], asyncio.Event,
                          asyncio.Task[Any] | None] | None = None

    async def settle(self) -> None:
        """Close (or wait for) an earlier answer left unfinished; refuse if another task is
        still reading it. Requests that do not stream through :meth:`take` call this first."""
        if self._open is None:
            return
        ref, done, owner = self._open
        previous = ref()
        if previous is None:  # dropped unfinished: the loop's finaliser records its turn
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), FINALISE_WITHIN)
            return
        task = asyncio.current_task()
        if getattr(previous, "ag_running", False) or (
                owner is not None and owner is not task and not owner.done()):
            raise ChatBusyError("the previous message is still being answered in another "
                                "task: wait for it (or close it) before sending the next")
        await previous.aclose()

    async def take(self, stream: AsyncGenerator[Any, None]) -> asyncio.Event:
        """Make ``stream`` the open answer; returns the token to :meth:`release` it with."""
        await self.settle()
        token = asyncio.Event()
        self._open = (weakref.ref(stream), token, asyncio.current_task())
        return token

    def release(self, token: asyncio.Event) -> None:
        """The answer that got ``token`` has ended."""
        token.set()
        if self._open is not None and self._open[1] is token:
            self._open = None

    async def aclose(self) -> None:
        """Close the open answer, unless another task is reading it."""
        previous = self._open[0]() if self._open is not None else None
        if previous is not None and not getattr(previous, "ag_running", False):
            await previous.aclose()
