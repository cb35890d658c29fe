"""``HttpProvider``: the base class of a provider that talks to a server over HTTP.

It holds what every HTTP provider would otherwise write by hand: the base URL, the headers
(a ``User-Agent``, ``Accept: application/json``, the API key in its header), one
:class:`~modelplex.http.HttpClient` for the instance's lifetime (connection pool, timeouts,
status-to-error mapping, secrets redacted), a ``repr`` that shows the masked URL and never the
key, :meth:`HttpProvider.aclose`, and a hint added to the error when nothing answers at the
base URL ("is the server running? start it with ...").

A subclass sets class attributes and writes only its wire format::

    class AcmeProvider(HttpProvider):
        name = "acme"
        default_base_url = "http://127.0.0.1:8080"
        connect_hint = "No Acme server answers at {url}: start it with `acme serve`"

        async def _stream(self, request):
            async with self.http.stream("POST", "/api/chat", body) as resp:
                ...

Its constructor takes the keywords users write in ``[providers.acme]``: ``base_url``,
``api_key``, ``headers``, ``timeouts``, ``verify_tls`` and ``default_model``. A subclass with
more configuration defines its own ``__init__`` and passes these on to
``super().__init__(...)``; the hooks :meth:`HttpProvider._status_error` (map a server's own
error bodies) and :meth:`HttpProvider._auth_headers` (how the key is sent) cover the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import SecretStr

from modelplex.__about__ import __version__
from modelplex.errors import ProviderError, mask_url
from modelplex.http import HttpClient, Timeouts, check_headers
from modelplex.provider import Provider

__all__ = ["HttpProvider", "secret_value"]


def secret_value(value: str | SecretStr | None) -> str | None:
    """The plain text of a key given as a string or a :class:`SecretStr`, without the
    surrounding whitespace a pasted key or ``$(cat key.txt)`` brings (a trailing line break
    made every request fail on its header); ``None`` if empty."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str):
        value = value.strip()
    return value or None


class HttpProvider(Provider):
    """A provider whose model runs behind an HTTP API.

    Args:
        base_url: the API root; default :attr:`default_base_url`. Paths given to
            ``self.http`` are appended to it.
        api_key: sent in :attr:`api_key_header` (``Authorization: Bearer KEY`` by default);
            kept as a :class:`~pydantic.SecretStr` in :attr:`api_key` and redacted from every
            error message, error body and ``repr``.
        headers: more headers for every request (each value is treated as a credential:
            redacted from errors, dropped on a redirect to another host).
        timeouts: a number of seconds (the total per request), a mapping of ``connect``,
            ``first_byte``, ``between_chunks`` and ``total`` seconds, or a
            :class:`~modelplex.http.Timeouts`.
        verify_tls: verify the server's certificate (default).
        default_model: the model used when users name only the provider.

    Attributes:
        base_url: the API root, without a trailing ``/``.
        api_key: the key as a :class:`SecretStr`, or ``None``.
        http: the :class:`~modelplex.http.HttpClient`: ``request_json``, ``stream``,
            ``max_line_bytes``, ``secrets``.
    """

    #: the API root used when no ``base_url`` is given
    default_base_url: ClassVar[str] = "http://127.0.0.1:8080"
    #: the header that carries the API key, and what comes before the key in it
    api_key_header: ClassVar[str] = "Authorization"
    api_key_prefix: ClassVar[str] = "Bearer "
    #: the ``User-Agent`` header (default ``modelplex/VERSION``)
    user_agent: ClassVar[str | None] = None
    #: added to the error when nothing listens at the base URL: how to start the server or
    #: where to point the provider. ``{url}`` is replaced by the base URL (credentials masked).
    connect_hint: ClassVar[str | None] = None
    #: the timeouts a user's ``timeouts`` start from (``None``: :class:`Timeouts`' defaults)
    default_timeouts: ClassVar[Timeouts | None] = None
    #: the variable that holds the key of a hosted API that needs one
    #: (``"ANTHROPIC_API_KEY"``): without a key and at :attr:`default_base_url`, the provider
    #: is not configured (:meth:`missing_setting`) and is never contacted to list or check
    key_env: ClassVar[str | None] = None

    base_url: str
    api_key: SecretStr | None
    http: HttpClient

    def __init__(self, *, base_url: str | None = None, api_key: str | SecretStr | None = None,
                 headers: Mapping[str, str] | None = None,
                 timeouts: Timeouts | Mapping[str, Any] | float | None = None,
                 verify_tls: bool = True, default_model: str | None = None) -> None:
        if default_model is not None:
            self.default_model = default_model
        self.base_url = (base_url or type(self).default_base_url).rstrip("/")
        key = secret_value(api_key)
        self.api_key = SecretStr(key) if key else None
        send = {"User-Agent": self.user_agent or f"modelplex/{__version__}",
                "Accept": "application/json",
                **check_headers(headers, field=f"{self.name}: headers")}
        if key:
            send.update(self._auth_headers(key))
        if self.default_timeouts is not None:
            timeouts = Timeouts.parse(timeouts, base=self.default_timeouts,
                                      field=f"{self.name}: timeouts")
        self.http = HttpClient(self.base_url, provider=self.name, headers=send,
                               timeouts=timeouts, secrets=(key,) if key else (),
                               error_factory=self._status_error, verify_tls=verify_tls,
                               connect_hint=self._connect_hint())

    def missing_setting(self) -> str | None:
        """:attr:`key_env` when the provider has no key and talks to its default (hosted)
        base URL; None when it has a key, a base URL of the user's, or needs no key."""
        if self.key_env is None or self.api_key is not None:
            return None
        if self.base_url != type(self).default_base_url.rstrip("/"):
            return None  # a server of the user's: it may need no key
        return self.key_env

    def _auth_headers(self, key: str) -> dict[str, str]:
        """The headers that send ``key``: ``{api_key_header: api_key_prefix + key}``."""
        return {self.api_key_header: self.api_key_prefix + key}

    def _connect_hint(self) -> str | None:
        """The hint for a refused connection: :attr:`connect_hint` with ``{url}`` filled in,
        and, for a hosted API without a key (:meth:`missing_setting`), the variable to set:
        offline, "cannot connect" alone would hide that the key is missing too."""
        hint = type(self).connect_hint
        hint = hint.replace("{url}", mask_url(self.base_url)) if hint else None
        try:
            missing = self.missing_setting()
        except Exception:  # a subclass not fully built yet: no key hint
            missing = None
        if missing:
            key = (f"No API key is set either: set {missing} (or api_key in "
                   f"[providers.{self.name}] of the config file)")
            hint = f"{hint} {key}" if hint else key
        elif hint is None and self._serves_locally_or_own():  # say what to do about it
            hint = (f"Nothing answers at {mask_url(self.base_url)}: start the server there, or "
                    f"fix its address ([providers.{self.name}] in the config file)")
        return hint

    def _serves_locally_or_own(self) -> bool:
        """Whether :attr:`base_url` is a server of the user's: on this machine, or not the
        class's hosted default (whose failure is the network's, not a server to start)."""
        import ipaddress
        from urllib.parse import urlsplit

        if self.base_url != type(self).default_base_url.rstrip("/"):
            return True
        host = urlsplit(self.base_url).hostname or ""
        try:
            return host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def _status_error(self, status: int, body: Any,
                      headers: Mapping[str, str]) -> ProviderError | None:
        """The error for an HTTP error status, or ``None`` for the default mapping.

        ``body`` is the parsed error body with secrets already redacted. Override to map a
        server's own error shapes (a 400 that means "unknown model", a hint on a 401).
        """
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {mask_url(self.base_url)}>"

    async def aclose(self) -> None:
        """Close the connection pool (harmless when called again)."""
        await self.http.aclose()
