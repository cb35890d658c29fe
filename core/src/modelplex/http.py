"""Shared aiohttp machinery for providers that speak HTTP.

:class:`HttpClient` holds one :class:`aiohttp.ClientSession` for the lifetime of a provider
instance and gives it:

* four timeouts (:class:`Timeouts`): connect, first byte (until the response headers),
  between chunks (silence while streaming) and total;
* status-to-error mapping into :mod:`modelplex.errors`, with transport errors converted and
  chained and secrets redacted;
* line readers for NDJSON (:func:`iter_ndjson`) and Server-Sent Events (:func:`iter_sse`) that
  follow the parsing rules every provider needs (``data:`` with or without a space, ``:``
  comments ignored, unknown events passed through, old llama.cpp ``error:`` lines), with a
  limit on line size;
* cancellation that closes the upstream connection when a stream is left before its end, so
  the server stops generating and frees its slot.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import attrs

from modelplex import errors

__all__ = [
    "HttpClient",
    "Timeouts",
    "dumps",
    "error_from_status",
    "extract_error_message",
    "iter_lines",
    "iter_ndjson",
    "iter_sse",
    "loads",
    "parse_retry_after",
]

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


@attrs.frozen
class Timeouts:
    """Timeouts in seconds; ``None`` disables one.

    ``connect``: establishing the connection. ``first_byte``: from sending the request to the
    response headers (a local server may load a model first). ``between_chunks``: the longest
    silence allowed while reading a response. ``total``: the whole request, stream included.
    """

    connect: float | None = 10.0
    first_byte: float | None = 600.0
    between_chunks: float | None = 120.0
    total: float | None = None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import time

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def extract_error_message(body: Any) -> str:
    """The human message in an error body of any provider's shape."""
    if isinstance(body, dict):
        err = body.get("error", body.get("message", body.get("detail")))
        if isinstance(err, dict):
            return str(err.get("message") or err.get("type") or err)
        if err is not None:
            return str(err)
        return json.dumps(body)[:500]
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return str(body)[:500] if body else ""


_STATUS_CLASSES: dict[int, type[errors.ProviderStatusError]] = {
    400: errors.BadRequestError,
    422: errors.BadRequestError,
    401: errors.AuthenticationError,
    403: errors.AuthenticationError,
    404: errors.ModelNotFoundError,
    429: errors.RateLimitError,
    503: errors.ServerBusyError,
    529: errors.ServerBusyError,
}


def error_from_status(status: int, body: Any, headers: Mapping[str, str] | None = None, *,
                      provider: str | None = None, secrets: tuple[str, ...] = ()
                      ) -> errors.ProviderStatusError:
    """Map an HTTP error status and body to the matching :class:`ProviderStatusError`."""
    message = errors.redact(extract_error_message(body), *secrets)
    text = f"{provider or 'provider'} returned HTTP {status}" + (f": {message}" if message else "")
    cls = _STATUS_CLASSES.get(status)
    if cls is None:
        cls = errors.ServerError if status >= 500 else errors.ProviderStatusError
    if issubclass(cls, errors.RateLimitError):
        return cls(text, status_code=status, body=body, provider=provider,
                   retry_after=parse_retry_after(headers or {}))
    return cls(text, status_code=status, body=body, provider=provider)


ErrorFactory = Callable[[int, Any, Mapping[str, str]], errors.ProviderError | None]


class HttpClient:
    """One provider's HTTP connection pool, timeouts and error mapping.

    Args:
        base_url: e.g. ``http://127.0.0.1:11434``; request paths are appended to it.
        provider: the provider's name, used in error messages.
        headers: sent with every request (API keys go here and are redacted from errors).
        timeouts: see :class:`Timeouts`.
        secrets: extra strings to redact from error messages.
        error_factory: called with ``(status, body, headers)`` before the default mapping;
            return an error to use it, or ``None`` for the default.
        verify_tls: verify server certificates (default). Turning it off warns.
        max_line_bytes / max_body_bytes: limits on one streamed line / a whole body.
        limit: most connections open at once (0 = no limit).
        connect_hint: appended to the error when the server refuses the connection, e.g.
            how to start it.
    """

    def __init__(self, base_url: str, *, provider: str, headers: Mapping[str, str] | None = None,
                 timeouts: Timeouts | None = None, secrets: tuple[str, ...] = (),
                 error_factory: ErrorFactory | None = None, verify_tls: bool = True,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, limit: int = 0,
                 connect_hint: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.provider = provider
        self.headers = dict(headers or {})
        self.timeouts = timeouts or Timeouts()
        self.secrets = tuple(s for s in secrets if s) + tuple(
            v.split(" ", 1)[-1] for k, v in self.headers.items()
            if k.lower() in ("authorization", "x-api-key", "api-key") and v)
        self.error_factory = error_factory
        self.verify_tls = verify_tls
        self.max_line_bytes = max_line_bytes
        self.max_body_bytes = max_body_bytes
        self.limit = limit
        self.connect_hint = connect_hint
        self._session: aiohttp.ClientSession | None = None
        if not verify_tls:
            warnings.warn(f"{provider}: TLS certificate verification is turned off",
                          UserWarning, stacklevel=2)

    def __repr__(self) -> str:
        return f"HttpClient({self.base_url!r}, provider={self.provider!r})"

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session, created on first use inside the running event loop."""
        if self._session is None or self._session.closed:
            t = self.timeouts
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.limit,
                                               ssl=self.verify_tls),
                timeout=aiohttp.ClientTimeout(total=t.total, sock_connect=t.connect,
                                              sock_read=t.first_byte),
                headers=self.headers,
            )
        return self._session

    async def aclose(self) -> None:
        """Close the session and every pooled connection."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def url(self, path: str) -> str:
        """The absolute URL of ``path``."""
        return path if "://" in path else self.base_url + path

    # -- errors -----------------------------------------------------------------------------
    def _transport_error(self, err: BaseException, *, phase: str) -> errors.ProviderError:
        t = self.timeouts
        name = self.provider
        if isinstance(err, aiohttp.ConnectionTimeoutError):
            return errors.ProviderTimeoutError(
                f"{name}: connecting to {self.base_url} took longer than {t.connect} s",
                phase="connect", timeout=t.connect, provider=name)
        if isinstance(err, aiohttp.ServerTimeoutError):
            if phase == "headers":
                return errors.ProviderTimeoutError(
                    f"{name}: no response from {self.base_url} within {t.first_byte} s",
                    phase="first_byte", timeout=t.first_byte, provider=name)
            return errors.ProviderTimeoutError(
                f"{name}: the stream from {self.base_url} was silent for more than "
                f"{t.between_chunks} s", phase="between_chunks", timeout=t.between_chunks,
                provider=name)
        if isinstance(err, TimeoutError):
            return errors.ProviderTimeoutError(
                f"{name}: the request to {self.base_url} took longer than {t.total} s in total",
                phase="total", timeout=t.total, provider=name)
        if isinstance(err, aiohttp.ClientConnectorError):
            hint = f". {self.connect_hint}" if self.connect_hint else ""
            return errors.ProviderConnectionError(
                f"{name}: cannot connect to {self.base_url} "
                f"({err.os_error.strerror or err}){hint}", provider=name)
        if phase == "body":
            return errors.StreamError(
                f"{name}: the connection to {self.base_url} broke off mid-response "
                f"({type(err).__name__}: {errors.redact(str(err), *self.secrets)})", provider=name)
        return errors.ProviderConnectionError(
            f"{name}: request to {self.base_url} failed "
            f"({type(err).__name__}: {errors.redact(str(err), *self.secrets)})", provider=name)

    async def _raise_for_status(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status < 400:
            return
        try:
            raw = await resp.content.read(65536)
        except (aiohttp.ClientError, TimeoutError):
            raw = b""
        text = errors.redact(raw.decode("utf-8", "replace"), *self.secrets)
        try:  # redacted before parsing, so no secret the server echoed stays in err.body
            body: Any = loads(text) if text else None
        except ValueError:
            body = text
        headers = resp.headers
        err: errors.ProviderError | None = None
        if self.error_factory is not None:
            err = self.error_factory(resp.status, body, headers)
        if err is None:
            err = error_from_status(resp.status, body, headers, provider=self.provider,
                                    secrets=self.secrets)
        raise err

    # -- requests ---------------------------------------------------------------------------
    async def request_json(self, method: str, path: str, payload: Any = None) -> Any:
        """Send a request and return the decoded JSON body (``None`` for an empty body)."""
        async with self.stream(method, path, payload) as resp:
            raw = await read_body(resp, self.max_body_bytes, provider=self.provider)
        try:
            return loads(raw) if raw.strip() else None
        except ValueError as err:
            raise errors.StreamError(
                f"{self.provider}: the response was not valid JSON: {raw[:200]!r}",
                provider=self.provider) from err

    @asynccontextmanager
    async def stream(self, method: str, path: str, payload: Any = None,
                     headers: Mapping[str, str] | None = None
                     ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open a request and yield the response once its status is known to be good.

        Leaving the block before the body was read to its end closes the connection, so the
        server stops generating; otherwise the connection goes back to the pool.
        """
        data = None
        send_headers = dict(headers) if headers else {}
        if payload is not None:
            data = dumps(payload)
            send_headers["Content-Type"] = "application/json"
        try:
            resp = await self.session.request(method, self.url(path), data=data,
                                              headers=send_headers or None)
        except aiohttp.ClientError as err:
            raise self._transport_error(err, phase="headers") from err
        except TimeoutError as err:
            raise self._transport_error(err, phase="headers") from err
        finished = False
        try:
            await self._raise_for_status(resp)
            if resp.connection is not None and resp.connection.protocol is not None:
                resp.connection.protocol.read_timeout = self.timeouts.between_chunks
                if not resp.content.is_eof():  # re-arm: the running timer has the old limit
                    resp.connection.protocol.start_timeout()
            yield resp
            finished = True
        except aiohttp.ClientError as err:
            raise self._transport_error(err, phase="body") from err
        except TimeoutError as err:
            raise self._transport_error(err, phase="body") from err
        finally:
            if finished and not resp.content.at_eof():
                await _drain_tail(resp)
            if resp.content.at_eof():
                resp.release()
            else:
                resp.close()


async def _drain_tail(resp: aiohttp.ClientResponse, limit: int = 65536,
                      within: float = 0.25) -> None:
    """Read what little is left after a stream's end marker, so the connection can be reused.

    A provider stops reading at ``[DONE]`` or ``done: true``; the body's last bytes (the
    chunked-encoding terminator) may still be on their way. More than ``limit`` bytes, a
    silence over ``within`` seconds (the connection's own read timer, cheaper than a new
    timeout per request) or reading past ``within`` seconds means the server is still
    sending: the caller closes the connection.
    """
    content = resp.content
    protocol = resp.connection.protocol if resp.connection is not None else None
    if protocol is None:
        return
    protocol.read_timeout = within
    protocol.start_timeout()
    deadline = asyncio.get_running_loop().time() + within
    size = 0
    with suppress(TimeoutError, aiohttp.ClientError):
        while not content.at_eof() and size <= limit:
            size += len(await content.readany())
            if asyncio.get_running_loop().time() > deadline:
                return


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


async def iter_lines(resp: aiohttp.ClientResponse, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                     *, provider: str = "provider") -> AsyncIterator[bytes]:
    """Yield the lines of a response body as bytes, without their ``\\n``.

    A line split across network reads is joined; a line longer than ``max_line_bytes`` raises
    :class:`ResponseTooLargeError` instead of growing without bound.
    """
    content = resp.content
    buf = b""
    while True:
        data = await content.readany()
        if not data:
            break
        if buf:
            data = buf + data
        lines = data.split(b"\n")
        buf = lines.pop()
        # a complete line that arrived in one read is held to the same limit as a growing one
        if len(data) > max_line_bytes and (
                len(buf) > max_line_bytes or any(len(x) > max_line_bytes for x in lines)):
            raise errors.ResponseTooLargeError(
                f"{provider}: a response line exceeded the limit of {max_line_bytes} bytes",
                provider=provider)
        for line in lines:
            yield line
    if buf:
        yield buf


async def iter_ndjson(resp: aiohttp.ClientResponse, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                      *, provider: str = "provider") -> AsyncIterator[Any]:
    """Yield each JSON object of a newline-delimited JSON body, skipping blank lines."""
    async for line in iter_lines(resp, max_line_bytes, provider=provider):
        if not line or line.isspace():
            continue
        try:
            yield loads(line)
        except ValueError as err:
            raise errors.StreamError(
                f"{provider}: malformed line in the stream: {line[:200]!r}", provider=provider
            ) from err


async def iter_sse(resp: aiohttp.ClientResponse, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                   *, provider: str = "provider") -> AsyncIterator[tuple[str | None, bytes]]:
    """Yield ``(event, data)`` for each Server-Sent Event of a body.

    ``event`` is the ``event:`` name or ``None``; ``data`` joins the event's ``data:`` lines
    with ``\\n``. Comment lines (``:``) are skipped; a non-standard ``error:`` line (older
    llama.cpp servers) yields ``("error", payload)``. The OpenAI ``[DONE]`` marker is passed
    through as data for the caller to recognise.
    """
    event: str | None = None
    data: list[bytes] = []
    async for line in iter_lines(resp, max_line_bytes, provider=provider):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if data:
                yield event, data[0] if len(data) == 1 else b"\n".join(data)
                data = []
            event = None
            continue
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b":"):
            continue
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode()
        elif line.startswith(b"error:"):
            event = "error"
            data.append(line[6:].strip())
    if data:
        yield event, b"\n".join(data)
