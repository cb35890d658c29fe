"""Bodies on the wire: the JSON codec, whole-body reads with a limit, and line readers.

:func:`loads`/:func:`dumps` use orjson when it is installed (about three times faster) and the
standard library otherwise. :func:`iter_ndjson` and :func:`iter_sse` follow the parsing rules
every provider needs (``data:`` with or without a space, ``:`` comments ignored, unknown events
passed through, old llama.cpp ``error:`` lines), with a limit on line size. They are iterator
objects, not generators, so leaving one early leaves nothing for the garbage collector.
:func:`plain_text` makes an error body readable (an HTML error page becomes its text).
:mod:`modelplex.http` re-exports every name here: import them from there (this module is
private).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, Self

import aiohttp

from modelplex import errors

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_LINE_BYTES", "dumps", "iter_lines",
           "iter_ndjson", "iter_sse", "loads", "loads_body", "plain_text", "read_body"]

try:  # orjson is optional; it parses about three times faster
    import orjson

    loads: Callable[[bytes | str], Any] = orjson.loads

    def dumps(obj: Any) -> bytes:
        """Serialize to compact JSON bytes."""
        data: bytes = orjson.dumps(obj)
        return data

except ImportError:  # pragma: no cover - depends on the environment
    loads = json.loads

    def dumps(obj: Any) -> bytes:
        """Serialize to compact JSON bytes."""
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


_HTML_START = re.compile(r"\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body)\b",
                         re.I | re.S)
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.I | re.S)
_HTML_HIDDEN = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.I | re.S)
_HTML_TAG = re.compile(r"<[^>]*>")


def plain_text(text: str, limit: int = 500) -> str:
    """``text`` as a short readable message: an HTML page (the error page of a proxy, load
    balancer or CDN in front of the server) becomes its title and visible text, marked as
    such; anything else is cut to ``limit`` characters."""
    if not _HTML_START.match(text[:2000]):
        return text[:limit]
    import html

    text = text[:65536]
    title_match = _HTML_TITLE.search(text)
    title = " ".join(html.unescape(title_match.group(1)).split()) if title_match else ""
    body = " ".join(html.unescape(_HTML_TAG.sub(" ", _HTML_HIDDEN.sub(" ", text))).split())
    shown = body if title and body.startswith(title) else \
        f"{title}: {body}" if title and body else title or body
    note = " (an HTML page: probably from a proxy in front of the server, or the wrong URL)"
    return shown[:max(limit - len(note), 20)].rstrip() + note


async def read_body(resp: aiohttp.ClientResponse, limit: int, *, provider: str) -> bytes:
    """Read a whole body, refusing one larger than ``limit`` bytes."""
    length = resp.content_length
    if length is not None and length > limit:
        raise errors.ResponseTooLargeError(
            f"{provider}: the response is {length} bytes, over the limit of {limit}",
            provider=provider)
    parts: list[bytes] = []
    size = 0
    while True:
        data = await resp.content.readany()
        if not data:
            return b"".join(parts)
        size += len(data)
        if size > limit:
            raise errors.ResponseTooLargeError(
                f"{provider}: the response exceeded the limit of {limit} bytes",
                provider=provider)
        parts.append(data)


def loads_body(raw: bytes, *, provider: str) -> Any:
    """A whole response body parsed as JSON (``None`` when empty); a body that is not JSON
    raises :class:`~modelplex.errors.StreamError` showing it, an HTML page (a web UI or a
    proxy's page at the configured address) as its text."""
    if not raw.strip():
        return None
    try:
        return loads(raw)
    except ValueError as err:
        text = raw[:65536].decode("utf-8", "replace")
        shown = plain_text(text, 300)
        detail = f"{shown}: check the base URL" if shown != text[:300] else repr(raw[:200])
        raise errors.StreamError(f"{provider}: the response was not valid JSON: {detail}",
                                 provider=provider) from err


class _Lines:
    """The lines of a response body as bytes, without their ``\\n``.

    An async iterator object rather than a generator: there is nothing to close, so leaving it
    early leaves no generator for the event loop to finalise later. A line split across network
    reads is joined; a line longer than ``max_line_bytes`` raises
    :class:`~modelplex.errors.ResponseTooLargeError` instead of growing without bound.
    """

    __slots__ = ("_buf", "_content", "_eof", "_lines", "_max", "_provider")

    def __init__(self, resp: aiohttp.ClientResponse, max_line_bytes: int, provider: str) -> None:
        self._content = resp.content
        self._max = max_line_bytes
        self._provider = provider
        self._buf = b""
        self._lines: list[bytes] = []  # reversed: the next line is at the end
        self._eof = False

    def __aiter__(self) -> Self:
        return self

    async def _fill(self) -> bool:
        """Read until a line is ready; false at the end of the body."""
        while not self._lines:
            if self._eof:
                return False
            data = await self._content.readany()
            if not data:
                self._eof = True
                if self._buf:
                    self._lines = [self._buf]
                    self._buf = b""
                continue
            if self._buf:
                data = self._buf + data
            lines = data.split(b"\n")
            self._buf = lines.pop()
            limit = self._max
            # a complete line that arrived in one read is held to the same limit
            if len(data) > limit and (len(self._buf) > limit or
                                      any(len(x) > limit for x in lines)):
                raise errors.ResponseTooLargeError(
                    f"{self._provider}: a response line exceeded the limit of {limit} bytes",
                    provider=self._provider)
            lines.reverse()
            self._lines = lines
        return True

    async def __anext__(self) -> bytes:
        if not self._lines and not await self._fill():
            raise StopAsyncIteration
        return self._lines.pop()


class _NDJSON(_Lines):
    """Each JSON value of a newline-delimited JSON body, blank lines skipped."""

    __slots__ = ()

    async def __anext__(self) -> Any:
        while True:
            if not self._lines and not await self._fill():
                raise StopAsyncIteration
            line = self._lines.pop()
            if not line or line.isspace():
                continue
            try:
                return loads(line)
            except ValueError as err:
                raise errors.StreamError(
                    f"{self._provider}: malformed line in the stream: {line[:200]!r}",
                    provider=self._provider) from err


class _SSE(_Lines):
    """``(event, data)`` for each Server-Sent Event of a body (see :func:`iter_sse`)."""

    __slots__ = ()

    async def __anext__(self) -> tuple[str | None, bytes]:  # type: ignore[override]
        event: str | None = None
        data: list[bytes] = []
        while True:
            if not self._lines and not await self._fill():
                if data:
                    return event, b"\n".join(data)
                raise StopAsyncIteration
            line = self._lines.pop()
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    return event, data[0] if len(data) == 1 else b"\n".join(data)
                event = None
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            elif line.startswith(b":"):
                continue
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode()
            elif line.startswith(b"error:"):
                event = "error"
                data.append(line[6:].strip())


def iter_lines(resp: aiohttp.ClientResponse, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
               *, provider: str = "provider") -> AsyncIterator[bytes]:
    """The lines of a response body as bytes, without their ``\\n``.

    A line split across network reads is joined; a line longer than ``max_line_bytes`` raises
    :class:`ResponseTooLargeError` instead of growing without bound.
    """
    return _Lines(resp, max_line_bytes, provider)


def iter_ndjson(resp: aiohttp.ClientResponse, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                *, provider: str = "provider") -> AsyncIterator[Any]:
    """Each JSON object of a newline-delimited JSON body, skipping blank lines."""
    return _NDJSON(resp, max_line_bytes, provider)


def iter_sse(resp: aiohttp.ClientResponse, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
             *, provider: str = "provider") -> AsyncIterator[tuple[str | None, bytes]]:
    """``(event, data)`` for each Server-Sent Event of a body.

    ``event`` is the ``event:`` name or ``None``; ``data`` joins the event's ``data:`` lines
    with ``\\n``. Comment lines (``:``) are skipped; a non-standard ``error:`` line (older
    llama.cpp servers) yields ``("error", payload)``. The OpenAI ``[DONE]`` marker is passed
    through as data for the caller to recognise.
    """
    return _SSE(resp, max_line_bytes, provider)
