"""Reading a provider's streamed answer: JSON events, dispatch, stream end and in-stream errors.

Built on the line reader of :mod:`modelplex.http` (line-size limit included), these remove
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

Both readers are iterator objects, not generators, doing the line splitting, the JSON parse
and the checks in one step per event: reading through them costs what a hand-written loop
over the raw lines costs, and leaving one early leaves nothing to finalise. After the loop,
``reader.ended`` says whether the end marker arrived (for a provider that accepts a stream
without one, ``require_end=False``, and decides itself), and ``reader.cut_short()`` is the
error to raise when it did not. Nothing here validates or logs per event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any

import aiohttp

from modelplex._bodies import _Lines
from modelplex.chunks import StreamChunk
from modelplex.errors import ProviderError, StreamError, redact
from modelplex.http import (
    DEFAULT_MAX_LINE_BYTES,
    extract_error_message,
    loads,
    plain_text,
)

__all__ = ["NdjsonReader", "SseReader", "dispatch", "ndjson_json", "sse_json", "stream_error"]

Handler = Callable[[Any], StreamChunk | None]
ErrorFactory = Callable[[Any], ProviderError]


def stream_error(obj: Any, *, provider: str, secrets: Collection[str] = ()) -> StreamError:
    """The :class:`StreamError` for an error the provider reported inside a stream."""
    message = extract_error_message(obj) or "unknown error"
    return StreamError(f"{provider}: the server reported an error in its answer: "
                       f"{redact(message, *secrets)}", provider=provider)


def _cut_short(provider: str) -> StreamError:
    return StreamError(f"{provider}: the stream ended before the answer was finished (no end "
                       "marker; the connection was probably cut)", provider=provider)


class _JsonReader(_Lines):
    """What both readers share: the error hook, the end state and the checks' settings."""

    __slots__ = ("_error", "_error_key", "_objects_only", "_require_end", "_secrets",
                 "_stopped", "ended")

    def __init__(self, resp: aiohttp.ClientResponse, max_line_bytes: int, provider: str,
                 error_key: str | None, error: ErrorFactory | None, secrets: Collection[str],
                 require_end: bool, objects_only: bool) -> None:
        super().__init__(resp, max_line_bytes, provider)
        self._error_key = error_key
        self._error = error
        self._secrets = tuple(secrets)
        self._require_end = require_end
        self._objects_only = objects_only
        self._stopped = False
        #: whether the stream's end marker arrived
        self.ended = False

    def error(self, obj: Any) -> ProviderError:
        """The error for an in-stream error object (the ``error`` hook's, if given)."""
        if self._error is not None:
            return self._error(obj)
        return stream_error(obj, provider=self._provider, secrets=self._secrets)

    def cut_short(self) -> StreamError:
        """The error for a body that ended before its end marker."""
        return _cut_short(self._provider)

    def _finished(self) -> StopAsyncIteration:
        """At the end of the body: the end, or the error of a stream cut short."""
        self._stopped = True
        if self._require_end and not self.ended:
            raise self.cut_short()
        return StopAsyncIteration()

    def _malformed(self, data: bytes, kind: str) -> StreamError:
        return StreamError(f"{self._provider}: malformed {kind} in the stream: {data[:200]!r}",
                           provider=self._provider)

    def _unexpected(self, obj: Any) -> StreamError:
        return StreamError(f"{self._provider}: unexpected value in the stream: "
                           f"{redact(str(obj)[:200], *self._secrets)}", provider=self._provider)


#: The most text outside any SSE field kept to explain a body that is not an event stream
#: (lines are kept until it is reached; one line is bounded by ``max_line_bytes``).
_STRAY_LIMIT = 65536
_STRAY_CUT = 1 << 62


class SseReader(_JsonReader):
    """``(event, obj)`` for each Server-Sent Event of a body, JSON parsed (see :func:`sse_json`).

    Lines that are no SSE field are ignored, as the standard says, but kept (up to 64 KiB of lines):
    a server or proxy that answers a stream request with plain JSON (an error object with
    HTTP 200, or a whole non-streamed answer) or an HTML page sends only such lines. At the
    end of the body, kept text that is a JSON object is checked and yielded like an event
    (an error object raises); other text makes :meth:`cut_short` show it.
    """

    __slots__ = ("_done", "_end_events", "_error_events", "_is_end", "_stray", "_stray_size")

    _error_events: frozenset[str] | None

    def __init__(self, resp: aiohttp.ClientResponse, max_line_bytes: int, provider: str, *,
                 done: bytes | None, end_events: Collection[str],
                 is_end: Callable[[Any], bool] | None, require_end: bool,
                 error_events: Collection[str], error_key: str | None,
                 error: ErrorFactory | None, secrets: Collection[str],
                 objects_only: bool) -> None:
        super().__init__(resp, max_line_bytes, provider, error_key, error, secrets,
                         require_end, objects_only)
        self._done = done
        self._end_events = frozenset(end_events)
        self._is_end = is_end
        self._error_events = frozenset(error_events) or None
        self._stray: list[bytes] = []
        self._stray_size = 0

    async def __anext__(self) -> tuple[str | None, Any]:  # type: ignore[override]
        if self._stopped:
            raise StopAsyncIteration
        event: str | None = None
        data: list[bytes] = []
        lines = self._lines
        while True:
            if not lines:
                if not await self._fill():
                    if data:  # the last event, without the blank line after it
                        return self._event(event, b"\n".join(data))
                    if self._stray and not self.ended:
                        stray = self._stray_json()
                        if stray is not None:
                            return self._event(None, stray)
                    raise self._finished()
                lines = self._lines
            line = lines.pop()
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if not data:
                    event = None
                    continue
                # the event is complete (this is _event, inlined: it runs once per chunk)
                raw = data[0] if len(data) == 1 else b"\n".join(data)
                done = self._done
                if done is not None and raw.startswith(done) and raw.strip() == done:
                    self.ended = self._stopped = True
                    raise StopAsyncIteration
                try:
                    obj = loads(raw)
                except ValueError:
                    raise self._malformed(raw, "event") from None
                if type(obj) is dict:
                    key = self._error_key
                    if key is not None and obj.get(key) is not None:
                        raise self.error(obj)
                elif self._objects_only:
                    raise self._unexpected(obj)
                if event is not None and self._error_events and event in self._error_events:
                    raise self.error(obj)
                ends = self._end_events
                is_end = self._is_end
                if (ends and (event if event is not None else (
                        obj.get("type") if type(obj) is dict else None)) in ends) or (
                        is_end is not None and is_end(obj)):
                    self.ended = self._stopped = True
                return event, obj
            if line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            elif line.startswith(b":"):
                continue
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode()
            elif line.startswith(b"error:"):  # older llama.cpp servers
                event = "error"
                data.append(line[6:].strip())
            elif not line.startswith((b"id:", b"retry:")):  # not SSE: plain JSON, a page?
                if self._stray_size < _STRAY_LIMIT:  # (one line may be longer: whole JSON)
                    self._stray.append(line)
                    self._stray_size += len(line) + 1
                else:
                    self._stray_size = _STRAY_CUT  # more than is kept: not one JSON value

    def _stray_json(self) -> bytes | None:
        """The kept non-SSE text, if it is one JSON object (then it is consumed)."""
        raw = b"\n".join(self._stray).strip()
        if not raw.startswith(b"{") or self._stray_size == _STRAY_CUT:
            return None
        try:
            loads(raw)
        except ValueError:
            return None
        self._stray = []
        return raw

    def cut_short(self) -> StreamError:
        """The error for a body that ended before its end marker; when the body held text
        that is not an event stream (an HTML error page, say), that text."""
        if not self._stray:
            return super().cut_short()
        text = plain_text(redact(b"\n".join(self._stray).decode("utf-8", "replace"),
                                 *self._secrets), 300)
        return StreamError(f"{self._provider}: the answer is not an event stream (the "
                           f"server or a proxy in front of it sent): {text}",
                           provider=self._provider)

    def _event(self, event: str | None, raw: bytes) -> tuple[str | None, Any]:
        done = self._done
        if done is not None and raw.startswith(done) and raw.strip() == done:
            self.ended = self._stopped = True
            raise StopAsyncIteration
        try:
            obj = loads(raw)
        except ValueError:
            raise self._malformed(raw, "event") from None
        if type(obj) is dict:
            key = self._error_key
            if key is not None and obj.get(key) is not None:
                raise self.error(obj)
        elif self._objects_only:
            raise self._unexpected(obj)
        if event is not None and self._error_events and event in self._error_events:
            raise self.error(obj)
        self._check_end(event, obj)
        return event, obj

    def _check_end(self, event: str | None, obj: Any) -> None:
        if self._end_events:
            name = event if event is not None else (
                obj.get("type") if type(obj) is dict else None)
            if name in self._end_events:
                self.ended = self._stopped = True
        if self._is_end is not None and self._is_end(obj):
            self.ended = self._stopped = True


class NdjsonReader(_JsonReader):
    """Each value of a newline-delimited JSON body, checked (see :func:`ndjson_json`)."""

    __slots__ = ("_done_key",)

    def __init__(self, resp: aiohttp.ClientResponse, max_line_bytes: int, provider: str, *,
                 done_key: str | None, require_end: bool, error_key: str | None,
                 error: ErrorFactory | None, secrets: Collection[str],
                 objects_only: bool) -> None:
        super().__init__(resp, max_line_bytes, provider, error_key, error, secrets,
                         require_end, objects_only)
        self._done_key = done_key

    async def __anext__(self) -> Any:
        if self._stopped:
            raise StopAsyncIteration
        lines = self._lines
        while True:
            if not lines:
                if not await self._fill():
                    raise self._finished()
                lines = self._lines
            line = lines.pop()
            if not line or line.isspace():
                continue
            try:
                obj = loads(line)
            except ValueError:
                raise self._malformed(line, "line") from None
            if type(obj) is dict:
                key = self._error_key
                if key is not None and obj.get(key) is not None:
                    raise self.error(obj)
                key = self._done_key
                if key is not None and obj.get(key):
                    self.ended = self._stopped = True
            elif self._objects_only:
                raise self._unexpected(obj)
            return obj


def sse_json(resp: aiohttp.ClientResponse, *, provider: str,
             max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
             done: bytes | None = b"[DONE]", end_events: Collection[str] = (),
             is_end: Callable[[Any], bool] | None = None,
             require_end: bool | None = None,
             error_events: Collection[str] = ("error",), error_key: str | None = "error",
             error: ErrorFactory | None = None, secrets: Collection[str] = (),
             objects_only: bool = False) -> SseReader:
    """Yield ``(event, obj)``: each SSE event's name (or ``None``) and its parsed JSON data.

    Args:
        resp: the response (from :meth:`HttpClient.stream <modelplex.http.HttpClient.stream>`).
        provider: the provider's name, for error messages.
        max_line_bytes: longest line accepted (:class:`ResponseTooLargeError` beyond).
        done: the data that ends the stream without being yielded (``None``: no such marker).
        end_events: event names that end the stream; the event is yielded, then iteration
            stops. An event without an ``event:`` line is named by its data's ``type``.
        is_end: a predicate on the parsed data that marks the last event (yielded, then
            iteration stops), for APIs whose end marker is a field (TGI's
            ``generated_text``).
        require_end: raise :class:`StreamError` if the body ends before an end marker.
            Default: true when any end marker is configured. With ``False``, the reader's
            ``ended`` says after the loop whether the marker came.
        error_events: event names that carry an error; raised as :class:`StreamError`.
        error_key: a member whose presence (not ``None``) in an object marks an error
            (``None`` to turn off).
        error: builds the error for an error object (default :func:`stream_error`), for a
            provider that keeps more of its error's details (a :class:`StreamError`, or
            another :class:`~modelplex.errors.ProviderError` such as Ollama's
            :class:`ModelNotFoundError` for a pull of a model the registry lacks).
        secrets: strings to mask in error messages (besides anything shaped like a key).
        objects_only: raise :class:`StreamError` for data that is not a JSON object.
    """
    if require_end is None:
        require_end = bool(done or end_events or is_end)
    return SseReader(resp, max_line_bytes, provider, done=done, end_events=end_events,
                     is_end=is_end, require_end=require_end, error_events=error_events,
                     error_key=error_key, error=error, secrets=secrets,
                     objects_only=objects_only)


def ndjson_json(resp: aiohttp.ClientResponse, *, provider: str,
                max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                done_key: str | None = "done", require_end: bool | None = None,
                error_key: str | None = "error", error: ErrorFactory | None = None,
                secrets: Collection[str] = (), objects_only: bool = False) -> NdjsonReader:
    """Yield each object of a newline-delimited JSON stream, stopping after the last one.

    The object whose ``done_key`` member is true is the last: it is yielded, then iteration
    stops. A body that ends before it raises :class:`StreamError` (``require_end``, default
    true when ``done_key`` is set; with ``False`` the reader's ``ended`` says it); an object
    with an ``error_key`` member is raised as a :class:`StreamError` (built by ``error`` if
    given). A malformed line raises :class:`StreamError`, a line longer than
    ``max_line_bytes`` :class:`ResponseTooLargeError`; with ``objects_only`` a value that is
    not an object raises :class:`StreamError` too.
    """
    if require_end is None:
        require_end = done_key is not None
    return NdjsonReader(resp, max_line_bytes, provider, done_key=done_key,
                        require_end=require_end, error_key=error_key, error=error,
                        secrets=secrets, objects_only=objects_only)


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
