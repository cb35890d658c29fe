"""Shared aiohttp machinery for providers that speak HTTP.

:class:`HttpClient` holds one :class:`aiohttp.ClientSession` for the lifetime of a provider
instance and gives it:

* four timeouts (:class:`Timeouts`): connect, first byte (until the response headers),
  between chunks (silence while streaming) and total, with one parser
  (:meth:`Timeouts.parse`) for every spelling a user may give;
* checked configuration: the base URL (scheme, host, port), header names and values,
  ``verify_tls``; bad values are a :class:`~modelplex.errors.ConfigurationError` naming them;
* redirects followed by hand: a redirect to another origin drops every credential header
  (everything but a few harmless ones), and a ``POST`` is never silently turned into a ``GET``;
* status-to-error mapping into :mod:`modelplex.errors`, with transport errors converted and
  chained and secrets redacted;
* line readers for NDJSON (:func:`iter_ndjson`) and Server-Sent Events (:func:`iter_sse`) that
  follow the parsing rules every provider needs (``data:`` with or without a space, ``:``
  comments ignored, unknown events passed through, old llama.cpp ``error:`` lines), with a
  limit on line size. They are plain iterator objects, not generators: a reader left before
  its end leaves nothing for the garbage collector to finalise;
* cancellation that closes the upstream connection when a stream is left before its end, so
  the server stops generating and frees its slot.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import attrs
from yarl import URL

from modelplex import errors
from modelplex._bodies import (  # re-exported: the readers were defined here at first
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_LINE_BYTES,
    dumps,
    iter_lines,
    iter_ndjson,
    iter_sse,
    loads,
    loads_body,
    plain_text,
    read_body,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_LINE_BYTES",
    "HttpClient",
    "Timeouts",
    "check_base_url",
    "check_headers",
    "dumps",
    "error_from_status",
    "extract_error_message",
    "iter_lines",
    "iter_ndjson",
    "iter_sse",
    "loads",
    "loads_body",
    "parse_retry_after",
    "plain_text",
    "read_body",
]

TIMEOUT_FIELDS = ("connect", "first_byte", "between_chunks", "total")


def _seconds(value: Any, field: str) -> float | None:
    """A timeout in seconds: a positive finite number, or ``None`` for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) \
            or value <= 0:
        raise errors.ConfigurationError(
            f"{field} must be a number of seconds > 0, or null/None for no limit "
            f"(got {value!r})")
    return None if math.isinf(value) else float(value)


def _validate_seconds(instance: Any, attribute: Any, value: Any) -> None:
    _seconds(value, f"timeouts.{attribute.name}")


@attrs.frozen
class Timeouts:
    """Timeouts in seconds; ``None`` disables one.

    ``connect``: establishing the connection. ``first_byte``: from sending the request to the
    response headers (a local server may load a model first). ``between_chunks``: the longest
    silence allowed while reading a response. ``total``: the whole request, stream included.

    Every provider's ``timeouts=`` argument (and a config file's ``timeouts`` key) goes through
    :meth:`parse`, so all of them accept the same spellings.
    """

    connect: float | None = attrs.field(default=10.0, validator=_validate_seconds)
    first_byte: float | None = attrs.field(default=600.0, validator=_validate_seconds)
    between_chunks: float | None = attrs.field(default=120.0, validator=_validate_seconds)
    total: float | None = attrs.field(default=None, validator=_validate_seconds)

    @classmethod
    def parse(cls, value: Timeouts | Mapping[str, Any] | float | None, *,
              field: str = "timeouts", base: Timeouts | None = None) -> Timeouts:
        """Read timeouts from any of their spellings.

        * ``None``: ``base`` (default: the defaults above);
        * a :class:`Timeouts`: itself;
        * a number: the ``total`` time allowed for a request, in seconds;
        * a mapping with any of ``connect``, ``first_byte``, ``between_chunks`` and ``total``
          (the others keep their values from ``base``); ``None`` turns one off.

        Anything else, an unknown key, or a value that is not a number > 0 raises
        :class:`~modelplex.errors.ConfigurationError` naming ``field`` and the key.
        """
        start = base or cls()
        if value is None:
            return start
        if isinstance(value, Timeouts):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return attrs.evolve(start, total=_seconds(value, field))
        if isinstance(value, Mapping):
            unknown = sorted(str(k) for k in value if k not in TIMEOUT_FIELDS)
            if unknown:
                raise errors.ConfigurationError(
                    f"{field}: unknown timeout(s) {', '.join(map(repr, unknown))}; valid: "
                    f"{', '.join(TIMEOUT_FIELDS)}{errors.did_you_mean(unknown[0], TIMEOUT_FIELDS)}")
            return attrs.evolve(start, **{str(k): _seconds(v, f"{field}.{k}")
                                          for k, v in value.items()})
        raise errors.ConfigurationError(
            f"{field} must be a number of seconds (the total per request) or a mapping of "
            f"{', '.join(TIMEOUT_FIELDS)} to seconds (got {value!r})")


_PORTLESS = re.compile(r"^[a-z][a-z0-9+.\-]*://[^/?#]*:(/|$|\?|#)", re.I)


def check_base_url(url: Any, *, field: str = "base_url") -> str:
    """``url`` if it is a usable ``http(s)://host[:port][/path]`` address, else a
    :class:`~modelplex.errors.ConfigurationError` naming ``field`` and what is wrong."""
    if not isinstance(url, str) or not url.strip():
        raise errors.ConfigurationError(f"{field} must be a URL such as http://localhost:8000 "
                                        f"(got {url!r})")
    shown = errors.mask_url(url)
    split = urlsplit(url.strip())
    if split.scheme not in ("http", "https"):
        raise errors.ConfigurationError(f"{field} must start with http:// or https:// "
                                        f"(got {shown!r})")
    if not split.hostname:
        raise errors.ConfigurationError(f"{field} {shown!r} has no host name")
    try:
        port = split.port
    except ValueError:
        port = -1
    if (port is not None and not 0 < port < 65536) or _PORTLESS.match(url.strip()):
        raise errors.ConfigurationError(f"{field} {shown!r} has an invalid port: use a number "
                                        "from 1 to 65535")
    return url


_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(r"[\r\n\x00]")


def check_headers(headers: Any, *, field: str = "headers") -> dict[str, str]:
    """A copy of ``headers`` if every name is an HTTP token and every value a string without
    CR, LF or NUL; otherwise a :class:`~modelplex.errors.ConfigurationError` naming it."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise errors.ConfigurationError(f"{field} must map header names to string values "
                                        f"(got {type(headers).__name__})")
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise errors.ConfigurationError(f"{field}: {name!r} is not a valid header name")
        if not isinstance(value, str):
            raise errors.ConfigurationError(f"{field}: the value of {name!r} must be a string "
                                            f"(got {type(value).__name__})")
        if _BAD_VALUE.search(value):
            raise errors.ConfigurationError(f"{field}: the value of {name!r} holds a line break "
                                            "or NUL character, which HTTP does not allow")
        out[name] = value
    return out


#: Headers still sent after a redirect to another origin; every other header (keys, tokens,
#: anything the user configured) is dropped.
SAFE_REDIRECT_HEADERS = frozenset({"user-agent", "accept", "content-type", "accept-encoding"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10


def _split_login(url: str, headers: Mapping[str, str], provider: str) -> tuple[str, str | None]:
    """``url`` without ``user:password@``, and those as a ``Basic`` Authorization value."""
    split = urlsplit(url)
    if split.username is None and split.password is None:
        return url, None
    if any(name.lower() == "authorization" for name in headers):
        raise errors.ConfigurationError(
            f"{provider}: the base URL holds a user name and password and an API key "
            "(Authorization header) is set too; HTTP sends only one: remove one of them")
    import base64
    from urllib.parse import unquote, urlunsplit

    pair = f"{unquote(split.username or '')}:{unquote(split.password or '')}"
    bare = urlunsplit(split._replace(netloc=split.netloc.rsplit("@", 1)[1]))
    return bare, "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def _origin(url: URL) -> tuple[str, str | None, int | None]:
    return url.scheme, url.host, url.port


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None and not hasattr(headers, "getall"):  # a plain dict: any case
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _wait_seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) or value < 0 else value


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date).

    The one parser of these headers, for every provider (and through their errors, the router
    and the server). Garbage, a negative number or NaN is no wait (``None``); any wait is at
    most :func:`modelplex.errors.max_retry_after` (``inf``, ``1e400`` or a date in 2099 become
    that maximum); a date in the past is 0.
    """
    ms = _header(headers, "retry-after-ms")
    if ms:
        seconds = _wait_seconds(ms.strip())
        if seconds is not None:
            return errors.clamp_retry_after(seconds / 1000)
    value = (_header(headers, "retry-after") or "").strip()
    if not value:
        return None
    if value[0] in "+-.0123456789" or value.lower().startswith(("inf", "nan")):
        return errors.clamp_retry_after(_wait_seconds(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=UTC)
    import time

    return errors.clamp_retry_after(max(0.0, when.timestamp() - time.time()))


def extract_error_message(body: Any) -> str:
    """The human message in an error body of any provider's shape (an HTML error page as
    its text, see :func:`plain_text`)."""
    if isinstance(body, dict):
        err = body.get("error", body.get("message", body.get("detail")))
        if isinstance(err, dict):
            return str(err.get("message") or err.get("type") or err)
        if err is not None:
            return str(err)
        return json.dumps(body)[:500]
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    return plain_text(str(body)) if body else ""


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
    """Map an HTTP error status and body to the matching :class:`ProviderStatusError`.

    A 429 or 503 says how long to wait when the server sent ``Retry-After`` (or, Hugging
    Face's way while a model loads, an ``estimated_time`` in the body). A 408 (the
    server timed the request out) may be retried; the ``x-should-retry: true|false`` header
    (OpenAI, Anthropic) decides over the status, as their SDKs let it.
    """
    message = errors.redact(extract_error_message(body), *secrets)
    text = f"{provider or 'provider'} returned HTTP {status}" + (f": {message}" if message else "")
    cls = _STATUS_CLASSES.get(status)
    if cls is None:
        cls = errors.ServerError if status >= 500 else errors.ProviderStatusError
    if issubclass(cls, errors.RateLimitError):
        wait = parse_retry_after(headers or {})
        hint = body.get("estimated_time") if isinstance(body, dict) else None
        if wait is None and isinstance(hint, int | float):
            wait = errors.clamp_retry_after(hint)  # Hugging Face, while a model loads
        err: errors.ProviderStatusError = cls(text, status_code=status, body=body,
                                              provider=provider, retry_after=wait)
    else:
        err = cls(text, status_code=status, body=body, provider=provider)
    should = _header(headers or {}, "x-should-retry")
    if should in ("true", "false"):
        err.retriable = should == "true"
    elif status == 408:
        err.retriable = True
    return err


ErrorFactory = Callable[[int, Any, Mapping[str, str]], errors.ProviderError | None]


#: Failures before any response that mean a reused connection had been closed by the server.
_STALE_CONNECTION = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


class HttpClient:
    """One provider's HTTP connection pool, timeouts and error mapping.

    Args:
        base_url: e.g. ``http://127.0.0.1:11434``; request paths are appended to it.
        provider: the provider's name, used in error messages.
        headers: sent with every request (API keys go here and are redacted from errors).
            Checked: names must be HTTP tokens, values strings without line breaks.
        timeouts: anything :meth:`Timeouts.parse` accepts.
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
                 timeouts: Timeouts | Mapping[str, Any] | float | None = None,
                 secrets: tuple[str, ...] = (),
                 error_factory: ErrorFactory | None = None, verify_tls: bool = True,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, limit: int = 0,
                 connect_hint: str | None = None) -> None:
        base_url = check_base_url(base_url, field=f"{provider}: base URL").rstrip("/")
        #: the base URL as shown in messages: user name, password and keys masked
        self.display_url = errors.mask_url(base_url)
        self.provider = provider
        self.headers = check_headers(headers, field=f"{provider}: headers")
        base_url, login = _split_login(base_url, self.headers, provider)
        self.base_url = base_url
        if login:  # sent as a header, so that a redirect to another host drops it too
            self.headers["Authorization"] = login
        self.timeouts = Timeouts.parse(timeouts, field=f"{provider}: timeouts")
        if not isinstance(verify_tls, bool):
            raise errors.ConfigurationError(f"{provider}: verify_tls must be true or false "
                                            f"(got {verify_tls!r})")
        # every configured header value may be a credential; short ones are not masked
        self.secrets = tuple(s for s in secrets if s) + tuple(
            v.split(" ", 1)[-1] for k, v in self.headers.items()
            if k.lower() not in SAFE_REDIRECT_HEADERS and v)
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
        return f"HttpClient({self.display_url!r}, provider={self.provider!r})"

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
            )  # headers go with each request, so a redirect to another host can drop them
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
        url = self.display_url
        if isinstance(err, aiohttp.ConnectionTimeoutError):
            return errors.ProviderTimeoutError(
                f"{name}: connecting to {url} took longer than {t.connect} s",
                phase="connect", timeout=t.connect, provider=name)
        if isinstance(err, aiohttp.ServerTimeoutError):
            if phase == "headers":
                return errors.ProviderTimeoutError(
                    f"{name}: no response from {url} within {t.first_byte} s",
                    phase="first_byte", timeout=t.first_byte, provider=name)
            return errors.ProviderTimeoutError(
                f"{name}: the stream from {url} was silent for more than "
                f"{t.between_chunks} s", phase="between_chunks", timeout=t.between_chunks,
                provider=name)
        if isinstance(err, TimeoutError):
            return errors.ProviderTimeoutError(
                f"{name}: the request to {url} took longer than {t.total} s in total",
                phase="total", timeout=t.total, provider=name)
        if isinstance(err, aiohttp.ClientSSLError):
            reason = errors.redact(str(getattr(err, "certificate_error", None)
                                       or err.os_error or err), *self.secrets)
            return errors.ProviderConnectionError(
                f"{name}: TLS error connecting to {url} ({reason}); check the server's "
                "certificate and the https:// address (or turn verify_tls off for a server "
                "you trust)", provider=name)
        if isinstance(err, aiohttp.ClientConnectorError):
            hint = f". {self.connect_hint}" if self.connect_hint else ""
            return errors.ProviderConnectionError(
                f"{name}: cannot connect to {url} "
                f"({err.os_error.strerror or err}){hint}", provider=name)
        if phase == "body":
            return errors.StreamError(
                f"{name}: the connection to {url} broke off mid-response "
                f"({type(err).__name__}: {errors.redact(str(err), *self.secrets)})", provider=name)
        return errors.ProviderConnectionError(
            f"{name}: request to {url} failed "
            f"({type(err).__name__}: {errors.redact(str(err), *self.secrets)})", provider=name)

    async def _raise_for_status(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status < 400:
            return
        try:
            raw = await resp.content.read(65536)
        except (aiohttp.ClientError, TimeoutError):
            raw = b""
        text = raw.decode("utf-8", "replace")
        try:  # masked after parsing, in string values only: the keys stay intact
            body: Any = errors.redact_json(loads(text), *self.secrets) if text.strip() else None
        except ValueError:
            body = errors.redact(text, *self.secrets)
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
        return loads_body(raw, provider=self.provider)

    @asynccontextmanager
    async def stream(self, method: str, path: str, payload: Any = None,
                     headers: Mapping[str, str] | None = None, *, body: bytes | None = None
                     ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open a request and yield the response once its status is known to be good.

        ``payload`` is sent as JSON; ``body`` as raw bytes (give its ``Content-Type`` in
        ``headers``: a multipart file upload, say). Leaving the block before the body was read
        to its end closes the connection, so the server stops generating; otherwise the
        connection goes back to the pool.
        """
        data = body
        send_headers = {**self.headers, **headers} if headers else dict(self.headers)
        if payload is not None:
            data = dumps(payload)
            send_headers["Content-Type"] = "application/json"
        try:
            resp = await self._follow(method, self.url(path), data, send_headers)
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


    async def _follow(self, method: str, url: str, data: bytes | None,
                      headers: dict[str, str]) -> aiohttp.ClientResponse:
        """Send the request, following redirects ourselves.

        A redirect to another origin (scheme, host or port) drops every header but
        :data:`SAFE_REDIRECT_HEADERS`; a 301/302/303 answer to anything but GET or HEAD is
        refused (following it would silently turn the request into a GET without its body).
        """
        origin = _origin(URL(url))
        for _ in range(MAX_REDIRECTS + 1):
            try:
                resp = await self.session.request(method, url, data=data, headers=headers,
                                                  allow_redirects=False)
            except _STALE_CONNECTION as err:
                if isinstance(err, aiohttp.ClientConnectorError):
                    raise
                # A pooled keep-alive connection the server closed just as it was reused
                # (llama.cpp's llama-server closes one right after a stream): no response
                # came, so send once more, on a new connection.
                resp = await self.session.request(method, url, data=data, headers=headers,
                                                  allow_redirects=False)
            location = resp.headers.get("Location")
            if resp.status not in _REDIRECTS or not location:
                return resp
            target = resp.url.join(URL(location))
            resp.release()
            shown = errors.mask_url(str(target))
            if resp.status in (301, 302, 303) and method not in ("GET", "HEAD"):
                raise errors.ProviderStatusError(
                    f"{self.provider}: {method} {errors.mask_url(url)} was redirected "
                    f"(HTTP {resp.status}) to {shown}; modelplex does not turn it into a GET "
                    "without its body: set the provider's address to the new location",
                    status_code=resp.status, provider=self.provider)
            if target.scheme not in ("http", "https"):
                raise errors.ProviderConnectionError(
                    f"{self.provider}: refused a redirect to {shown}", provider=self.provider)
            if _origin(target) != origin:
                headers = {k: v for k, v in headers.items()
                           if k.lower() in SAFE_REDIRECT_HEADERS}
            url = str(target)
        raise errors.ProviderConnectionError(
            f"{self.provider}: more than {MAX_REDIRECTS} redirects from {self.display_url}",
            provider=self.provider)


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
