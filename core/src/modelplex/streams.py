"""Reading a provider's streamed answer: JSON events, dispatch, stream end and in-stream errors.

Built on the line readers of :mod:`modelplex.http` (line-size limit included), these remove
the protocol code every HTTP provider would otherwise write by hand:

* :func:`sse_json` yields ``(event, parsed JSON)`` for each Server-Sent Event; it stops at
  the end marker (OpenAI's ``data: [DONE]``, or an end event such as Anthropic's
  ``message_stop``), raises :class:`~modelplex.errors.StreamError` when the body ends without
  one (the connection was cut mid-answer), and turns an in-stream error (an ``error`` event,
  or an object with an ``error`` member) into a :class:`StreamError` with the provider's
  message, secrets redacted;
* :func:`dispatch` calls one handler per event name and yields the chunks they return;
* :func:`ndjson_json` does the same for newline-delimited JSON (Ollama style: the last object
  has ``"done": true``);
* :func:`stream_error` builds the :class:`StreamError` for an error object.

A provider's ``_stream`` using them::

    async with self.http.stream("POST", "/v1/chat/completions", body) as resp:
        async for _event, obj in sse_json(resp, provider=self.name):
            ...  # one parsed chunk object; [DONE], errors and cut streams are handled

Nothing here validates or logs per event: the per-event cost is one JSON parse and a dict
lookup.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any

import aiohttp

from modelplex.chunks import StreamChunk
from modelplex.errors import StreamError, redact
from modelplex.http import (
    DEFAULT_MAX_LINE_BYTES,
    extract_error_message,
    iter_ndjson,
    iter_sse,
    loads,
)

__all__ = ["dispatch", "ndjson_json", "sse_json", "stream_error"]

Handler = Callable[[Any], StreamChunk | None]


def stream_error(obj: Any, *, provider: str, secrets: Collection[str] = ()) -> StreamError:
    """The :class:`StreamError` for an error the provider reported inside a stream."""
    message = extract_error_message(obj) or "unknown error"
    return StreamError(f"{provider}: the server reported an error in its answer: "
                       f"{redact(message, *secrets)}", provider=provider)


def _cut_short(provider: str) -> StreamError:
    return StreamError(f"{provider}: the stream ended before the answer was finished (no end "
                       "marker; the connection was probably cut)", provider=provider)


async def sse_json(resp: aiohttp.ClientResponse, *, provider: str,
                   max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                   done: bytes | None = b"[DONE]", end_events: Collection[str] = (),
                   is_end: Callable[[Any], bool] | None = None,
                   require_end: bool | None = None,
                   error_events: Collection[str] = ("error",), error_key: str | None = "error",
                   secrets: Collection[str] = ()) -> AsyncIterator[tuple[str | None, Any]]:
    """Yield ``(event, obj)``: each SSE event's name (or ``None``) and its parsed JSON data.

    Args:
        resp: the response (from :meth:`HttpClient.stream <modelplex.http.HttpClient.stream>`).
        provider: the provider's name, for error messages.
        max_line_bytes: longest line accepted (:class:`ResponseTooLargeError` beyond).
        done: the data that ends the stream without being yielded (``None``: no such marker).
        end_events: event names that end the stream; the event is yielded, then iteration
            stops.
        is_end: a predicate on the parsed data that marks the last event (yielded, then
            iteration stops), for APIs whose end marker is a field (TGI's
            ``generated_text``).
        require_end: raise :class:`StreamError` if the body ends before an end marker.
            Default: true when any end marker is configured.
        error_events: event names that carry an error; raised as :class:`StreamError`.
        error_key: a member whose presence (not ``None``) in an object marks an error
            (``None`` to turn off).
        secrets: strings to mask in error messages (besides anything shaped like a key).
    """
    if require_end is None:
        require_end = bool(done or end_events or is_end)
    async for event, data in iter_sse(resp, max_line_bytes, provider=provider):
        if done is not None and data.startswith(done) and data.strip() == done:
            return
        try:
            obj = loads(data)
        except ValueError:
            raise StreamError(f"{provider}: malformed event in the stream: {data[:200]!r}",
                              provider=provider) from None
        if (event is not None and event in error_events) or (
                error_key is not None and type(obj) is dict and obj.get(error_key) is not None):
            raise stream_error(obj, provider=provider, secrets=secrets)
        yield event, obj
        if (event is not None and event in end_events) or (is_end is not None and is_end(obj)):
            return
    if require_end:
        raise _cut_short(provider)


async def ndjson_json(resp: aiohttp.ClientResponse, *, provider: str,
                      max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                      done_key: str | None = "done", require_end: bool | None = None,
                      error_key: str | None = "error",
                      secrets: Collection[str] = ()) -> AsyncIterator[Any]:
    """Yield each object of a newline-delimited JSON stream, stopping after the last one.

    The object whose ``done_key`` member is true is the last: it is yielded, then iteration
    stops. A body that ends before it raises :class:`StreamError` (``require_end``, default
    true when ``done_key`` is set); an object with an ``error_key`` member is raised as a
    :class:`StreamError`. A malformed line raises :class:`StreamError`, a line longer than
    ``max_line_bytes`` :class:`ResponseTooLargeError`.
    """
    if require_end is None:
        require_end = done_key is not None
    async for obj in iter_ndjson(resp, max_line_bytes, provider=provider):
        if type(obj) is dict:
            if error_key is not None and obj.get(error_key) is not None:
                raise stream_error(obj, provider=provider, secrets=secrets)
            if done_key is not None and obj.get(done_key):
                yield obj
                return
        yield obj
    if require_end:
        raise _cut_short(provider)


async def dispatch(events: AsyncIterator[tuple[str | None, Any]],
                   handlers: Mapping[str, Handler], *, type_key: str = "type"
                   ) -> AsyncIterator[StreamChunk]:
    """Call the handler of each event and yield the chunks handlers return.

    An event is named by its SSE ``event:`` field or, when it has none, by its data's
    ``type_key`` member. Handlers take the parsed data and return a :class:`StreamChunk` or
    ``None``; events without a handler (``ping``, new event types) are skipped, as the
    protocols require::

        chunks = dispatch(sse_json(resp, provider=self.name, done=None,
                                   end_events=("message_stop",)),
                          {"content_block_delta": state.delta,
                           "message_delta": state.finish})
    """
    get = handlers.get
    async for event, obj in events:
        name = event if event is not None else (
            obj.get(type_key) if type(obj) is dict else None)
        handler = get(name) if name is not None else None
        if handler is not None:
            chunk = handler(obj)
            if chunk is not None:
                yield chunk
