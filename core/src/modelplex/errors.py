"""The modelplex error tree.

Every error modelplex raises is a :class:`ModelplexError`::

    ModelplexError
    ├── ConfigurationError          bad configuration or input (names the field and the fix)
    │   ├── OptionsError            a provider option is unknown or out of range
    │   └── UnknownProviderError    no installed plugin provides that name
    ├── PluginError                 a plugin failed to load or clashes with another
    ├── ParseError                  a parser could not read a model's answer
    ├── ChatBusyError               a conversation's previous answer is still being read
    ├── UnsupportedOperationError   the provider cannot do that (embed, pull, ...)
    ├── StorageError                a store (cache, log, conversations) cannot be used:
    │                               names the file or URL and the fix
    └── ProviderError               talking to a provider failed
        ├── ProviderConnectionError     could not connect
        ├── ProviderTimeoutError        connect / first byte / between chunks / total timeout
        ├── StreamError                 the provider reported an error inside a stream,
        │                               or the stream broke off or was malformed
        ├── ResponseTooLargeError       a line or body exceeded the configured limit
        ├── RoutingError                every attempt of a named model failed (lists them)
        └── ProviderStatusError         the provider answered with an error status
            ├── BadRequestError         400, 422
            ├── AuthenticationError     401, 403
            ├── ModelNotFoundError      404
            ├── RateLimitError          429 (``retry_after``)
            │   └── ServerBusyError     503, 529 (``retry_after``)
            └── ServerError             other 5xx

Transport errors (aiohttp, asyncio timeouts, OS errors) are converted into these and chained
(``raise ... from err``). Messages never contain API keys: providers pass secrets as
:class:`pydantic.SecretStr` and :func:`redact` (:func:`modelplex.masking.mask`, the one
masking function of every printer) scrubs anything that is or looks like a secret.

A :class:`ProviderError` raised while streaming keeps what was streamed before it:
``err.partial_content`` (the text) and ``err.partial_chunks`` (the chunks), so nothing the
provider already delivered is lost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from modelplex.masking import MIN_SECRET_LENGTH, mask, mask_url

if TYPE_CHECKING:
    from modelplex.chunks import StreamChunk

__all__ = [
    "MIN_SECRET_LENGTH",
    "AuthenticationError",
    "BadRequestError",
    "ChatBusyError",
    "ChatError",
    "ConfigurationError",
    "ModelDownloadError",
    "ModelNotFoundError",
    "ModelplexError",
    "OptionsError",
    "ParseError",
    "PluginError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderStatusError",
    "ProviderTimeoutError",
    "RateLimitError",
    "ResponseTooLargeError",
    "RoutingError",
    "ServerBusyError",
    "ServerError",
    "StorageError",
    "StreamError",
    "UnknownProviderError",
    "UnsupportedOperationError",
    "did_you_mean",
    "mask",
    "mask_url",
    "redact",
    "redact_json",
]

def did_you_mean(word: object, choices: Iterable[object]) -> str:
    """`` (did you mean 'x'?)`` naming the choice closest to a misspelt ``word``, or ``""``
    when none is close: the tail of an "unknown key/option/name" message."""
    import difflib

    names = [str(c) for c in choices]
    text = str(word)
    lowered = {n.lower(): n for n in names}
    match = lowered.get(text.lower().replace("-", "_")) or lowered.get(text.lower())
    if match is None and len(text) >= 3:  # two letters swapped: "lgo" for "log"
        match = next((n for low, n in lowered.items() if sorted(low) == sorted(text.lower())),
                     None)
    if match is None and len(text) >= 3:  # a short form: "int" for "integer"
        longer = [n for low, n in lowered.items() if low.startswith(text.lower())]
        match = longer[0] if len(longer) == 1 else None
    if match is None:
        close = difflib.get_close_matches(text.lower(), list(lowered), n=1, cutoff=0.7)
        match = lowered[close[0]] if close else None
    return f" (did you mean {match!r}?)" if match is not None and match != text else ""


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with the given secrets, URL credentials, header values and anything shaped
    like an API key masked (:func:`modelplex.masking.mask` of a string)."""
    masked: str = mask(str(text), *secrets)
    return masked


def redact_json(value: Any, *secrets: str | None) -> Any:
    """A parsed JSON value with every secret masked (:func:`modelplex.masking.mask`)."""
    return mask(value, *secrets)


#: The longest wait a ``Retry-After`` may ask for, unless the config file's top-level
#: ``max_retry_after`` says otherwise (seconds).
DEFAULT_MAX_RETRY_AFTER = 300.0


_retry_after_limit: Callable[[], float] | None = None  # set by modelplex.config


def set_retry_after_limit(source: Callable[[], float] | None) -> None:
    """Where :func:`max_retry_after` reads the limit (:mod:`modelplex.config` sets it to the
    process configuration's ``max_retry_after`` when it is imported)."""
    global _retry_after_limit
    _retry_after_limit = source


def max_retry_after() -> float:
    """The longest ``Retry-After`` honoured: the config's ``max_retry_after``, else
    :data:`DEFAULT_MAX_RETRY_AFTER` (also when the config file cannot be read)."""
    source = _retry_after_limit
    if source is None:
        return DEFAULT_MAX_RETRY_AFTER
    try:
        return float(source())
    except (ModelplexError, OSError, ValueError):
        return DEFAULT_MAX_RETRY_AFTER


def clamp_retry_after(seconds: object) -> float | None:
    """A wait in seconds made safe to honour: ``None`` for anything that is no wait
    (garbage, NaN, a negative number), else at most :func:`max_retry_after` (so ``inf``,
    ``1e400`` and a date in 2099 become the maximum, never a wait for the life of the
    process). Every ``retry_after`` of an error goes through it."""
    if seconds is None or isinstance(seconds, bool):
        return None
    try:
        value = float(seconds)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    if math.isnan(value) or value < 0:
        return None
    return min(value, max_retry_after())


class _RetryAfter:
    """The ``retry_after`` attribute: every value set is passed through
    :func:`clamp_retry_after`."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, obj: object, owner: type | None = None) -> float | None:
        if obj is None:
            return None
        value: float | None = getattr(obj, self.slot, None)
        return value

    def __set__(self, obj: object, value: object) -> None:
        setattr(obj, self.slot, clamp_retry_after(value))


class ModelplexError(Exception):
    """Base class of every error modelplex raises."""


class ConfigurationError(ModelplexError):
    """Configuration or user input is invalid; the message names the field and the fix."""


class OptionsError(ConfigurationError):
    """A provider option is unknown, of the wrong type or out of range."""


class UnknownProviderError(ConfigurationError, KeyError):
    """No installed plugin provides the requested provider name."""

    def __init__(self, name: str, installed: list[str]) -> None:
        self.name = name
        self.installed = installed
        have = ", ".join(installed) if installed else "none"
        if not name:
            super().__init__("no provider named: write the model as 'provider:model', e.g. "
                             f"'ollama:llama3.2'. Installed providers: {have}.")
            return
        super().__init__(
            f"unknown provider {name!r}{did_you_mean(name, installed)}. "
            f"Installed providers: {have}. "
            f"Install another with `pip install modelplex-{name}` "
            "(run `modelplex plugins` to see what is installed)."
        )

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class PluginError(ModelplexError):
    """A plugin failed to import or register, or two plugins clash."""


class ParseError(ModelplexError):
    """A parser could not turn a model's answer into the expected structure.

    ``raw`` is the answer that failed; after re-asking, ``answers`` holds every raw answer
    the model gave (oldest first) and ``errors`` what was wrong with each.
    """

    def __init__(self, message: str, *, raw: str = "", answers: list[str] | None = None,
                 errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.raw = raw
        self.answers: list[str] = list(answers) if answers is not None else [raw]
        self.errors: list[str] = list(errors) if errors is not None else [message]


class ChatBusyError(ModelplexError):
    """A conversation was asked for a second answer while another task still reads the first."""


class ChatError(ModelplexError):
    """A chat operation failed; ``context`` holds what the caller wants to report with it.

    ``ChatError("no answer", {"model": "llama3.2"})``: the message, then a dict (empty when not
    given). For code that raises its own chat errors (the seeds' ``ChatError``); modelplex's
    own failures keep their precise classes (:class:`ProviderError` and the others).
    """

    def __init__(self, message: str, context: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.context: dict[str, Any] = dict(context or {})


class UnsupportedOperationError(ModelplexError):
    """The provider does not support the requested operation."""


class StorageError(ModelplexError):
    """A store cannot be used: a SQLite file that cannot be opened, is damaged or is not a
    database, or a server (Redis) that is down or refuses the password.

    The message names the file or URL (without its password) and the fix. A store never fails
    a request with it: the request path logs one warning and answers without the store; the
    commands that manage a store print it and exit with status 1. ``where`` is the file or
    URL, ``reason`` the underlying error, ``damaged`` whether the file exists but is not a
    usable database.
    """

    def __init__(self, message: str, *, where: str | None = None, reason: str = "",
                 damaged: bool = False) -> None:
        super().__init__(message)
        self.where = where
        self.reason = reason
        self.damaged = damaged


class ProviderError(ModelplexError):
    """Talking to a provider failed.

    Attributes:
        provider: the provider's name (``"ollama"``), when known.
        retriable: whether trying again later may succeed.
        partial_chunks: chunks streamed before the failure (empty if none).
    """

    retriable: bool = False

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.partial_chunks: list[StreamChunk] = []

    @property
    def partial_content(self) -> str:
        """The text streamed before the failure."""
        return "".join(c.content for c in self.partial_chunks)


class ProviderConnectionError(ProviderError):
    """The provider could not be reached (refused, DNS, TLS, reset before a response)."""

    retriable = True


class ProviderTimeoutError(ProviderError):
    """A timeout expired.

    ``phase`` is ``connect``, ``first_byte``, ``between_chunks`` or ``total``.
    """

    retriable = True

    def __init__(self, message: str, *, phase: str, timeout: float | None,
                 provider: str | None = None) -> None:
        super().__init__(message, provider=provider)
        self.phase = phase
        self.timeout = timeout


class StreamError(ProviderError):
    """The provider reported an error inside a stream, or the stream broke off or was malformed."""

    retriable = True


class ModelDownloadError(StreamError):
    """Downloading (pulling) a model failed: ``ModelDownloadError(model, reason, details)``.

    ``model`` is the model asked for, ``reason`` what went wrong (the server's words),
    ``details`` a dict of whatever else is known (the error body, the status). The message is
    ``"MODEL: REASON"`` unless a fuller one is given. A model the registry does not have is a
    :class:`ModelNotFoundError` instead.
    """

    def __init__(self, model: str, reason: str, details: dict[str, Any] | None = None, *,
                 provider: str | None = None, message: str | None = None) -> None:
        super().__init__(message or f"{model}: {reason}", provider=provider)
        self.model = model
        self.reason = reason
        self.details: dict[str, Any] = dict(details or {})


class ResponseTooLargeError(ProviderError):
    """A response line or body exceeded the configured size limit and was cut off."""


class RoutingError(ProviderError):
    """Every attempt of a named model (and of its fallbacks) failed, or none could be made.

    Attributes:
        attempts: one ``(deployment, error)`` pair per attempt, in order; the message lists
            each with its error class and status. The last error is also ``__cause__``.
        retry_after: seconds until a deployment is free again, when none could be tried
            (at most :func:`max_retry_after`).
    """

    retry_after = _RetryAfter()

    def __init__(self, message: str, *, attempts: list[tuple[str, ProviderError]],
                 provider: str | None = None) -> None:
        super().__init__(message, provider=provider)
        self.attempts = attempts
        self.retriable = bool(attempts) and all(err.retriable for _, err in attempts)
        self.retry_after = None


class ProviderStatusError(ProviderError):
    """The provider answered with an HTTP error status.

    Attributes:
        status_code: the HTTP status.
        body: the decoded error body (a dict or a string), secrets redacted.
    """

    def __init__(self, message: str, *, status_code: int, body: Any = None,
                 provider: str | None = None) -> None:
        super().__init__(message, provider=provider)
        self.status_code = status_code
        self.body = body


class BadRequestError(ProviderStatusError):
    """The provider rejected the request as invalid (400, 422)."""


class AuthenticationError(ProviderStatusError):
    """The provider rejected the credentials (401, 403)."""


class ModelNotFoundError(ProviderStatusError):
    """The requested model does not exist on the provider (404)."""


class RateLimitError(ProviderStatusError):
    """Too many requests (429). ``retry_after`` is in seconds, when the provider said; it is
    never negative nor longer than :func:`max_retry_after` (see :func:`clamp_retry_after`)."""

    retriable = True
    retry_after = _RetryAfter()

    def __init__(self, message: str, *, status_code: int = 429, body: Any = None,
                 retry_after: float | None = None, provider: str | None = None) -> None:
        retry_after = clamp_retry_after(retry_after)
        if retry_after is not None and "retry after" not in message:
            message += f" (retry after {retry_after:.3g} s)"
        super().__init__(message, status_code=status_code, body=body, provider=provider)
        self.retry_after = retry_after


class ServerBusyError(RateLimitError):
    """The provider is overloaded or its queue is full (503, 529); try again later."""


class ServerError(ProviderStatusError):
    """The provider failed internally (5xx)."""

    retriable = True
