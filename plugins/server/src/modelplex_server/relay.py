"""How the gateway's APIs answer a model request: whole, or streamed as the API's events.

Shared by the Responses API, the Messages API, chat completions and completions:

* :func:`answer_whole`: the provider's non-streaming request, counted in a gateway slot;
* :func:`answer_streamed`: the stream inside a gateway slot, its first chunk awaited before
  any header is sent (so an error before it is a proper HTTP status), counted as an open
  stream and closed however the response ends;
* :func:`relay` (the Responses and Messages APIs): a stream's chunks handed to the API's
  event writer (plain text on its fast path), and a failure after the headers written as the
  API's error event;
* :func:`field_message`: a message built from a request field, a 400 naming the field when
  it is not valid.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from pydantic import ValidationError

from modelplex.chunks import ChatResponse, StreamChunk, ToolCall
from modelplex.provider import ChatRequest, Provider
from modelplex.types import ChatMessage
from modelplex_server.errors import ApiError, from_exception
from modelplex_server.gateway import Gateway, first_chunk

__all__ = ["EventWriter", "answer_streamed", "answer_whole", "field_message", "relay"]


def field_message(field: str, **kwargs: Any) -> ChatMessage:
    """``ChatMessage(**kwargs)``; a 400 naming ``field`` (its ``param``) when it is invalid."""
    try:
        return ChatMessage(**kwargs)
    except ValidationError as err:
        detail = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
        raise ApiError(400, f"{field}: {detail}", param=field) from None


async def answer_whole(gateway: Gateway, provider: Provider, chat: ChatRequest) -> ChatResponse:
    """The whole answer to ``chat`` (the provider's non-streaming request) in a gateway
    slot (503 when the server is at its limit)."""
    with gateway.slot():
        return await provider.complete_request(chat)


async def answer_streamed(
        gateway: Gateway, provider: Provider, chat: ChatRequest,
        respond: Callable[[AsyncIterator[StreamChunk], StreamChunk | None],
                          Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """``respond(rest, first)`` with the stream of ``chat``: its first chunk (``None`` for an
    empty stream) and the rest, in a gateway slot, counted as an open stream while it is
    answered; the stream is closed when ``respond`` returns or raises."""
    with gateway.slot():
        stream = provider.stream_request(chat)
        first, rest = await first_chunk(stream)
        gateway.streams_open += 1
        try:
            async with contextlib.aclosing(stream):
                return await respond(rest, first)
        finally:
            gateway.streams_open -= 1


class EventWriter(Protocol):
    """What :func:`relay` writes a stream's chunks with (each API has its own)."""

    async def reasoning(self, text: str) -> None:
        """Write a piece of the model's reasoning (or leave it out)."""

    async def text(self, text: str) -> None:
        """Write a piece of answer text."""

    async def tool(self, call: ToolCall) -> None:
        """Write one tool call."""


async def _write(writer: EventWriter, chunk: StreamChunk) -> None:
    if chunk.reasoning:
        await writer.reasoning(chunk.reasoning)
    if chunk.content:
        await writer.text(chunk.content)
    for call in chunk.tool_calls or ():
        await writer.tool(call)


async def relay(resp: web.StreamResponse, stream: AsyncIterator[StreamChunk],
                first: StreamChunk | None, writer: EventWriter,
                failed: Callable[[ApiError], bytes]) -> tuple[bool, StreamChunk | None]:
    """Write ``first`` and the rest of ``stream`` with ``writer`` (its reasoning, text and
    tool calls, in this order; a plain text chunk straight to ``writer.text``).

    Returns whether the stream ended well and its last chunk. A failure after the headers
    (anything but the client going away) is written as ``failed(error)`` and ends the
    response (``write_eof``); the caller writes the API's end otherwise.
    """
    last = first
    try:
        if first is not None:
            await _write(writer, first)
            async for chunk in stream:
                last = chunk
                if chunk.tool_calls is None and chunk.reasoning is None:
                    if chunk.content:
                        await writer.text(chunk.content)
                else:
                    await _write(writer, chunk)
    except ConnectionResetError:
        raise
    except Exception as err:  # after the headers: the API's error event
        await resp.write(failed(from_exception(err)))
        await resp.write_eof()
        return False, last
    return True, last
