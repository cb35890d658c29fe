"""Turning exceptions from outside modelplex into the error tree.

:class:`~modelplex.provider.Provider` calls :func:`foreign_error` when an exception that is
not a :class:`~modelplex.errors.ModelplexError` escapes a provider (an aiohttp error from a
provider written on raw aiohttp, a ``KeyError`` from a reply of an unexpected shape), so
callers only ever catch modelplex errors. The original is kept as ``__cause__``.

aiohttp is not imported here: its classes are recognised only when it is already loaded.
Private: the provider base class is its only user.
"""

from __future__ import annotations

import sys
from typing import Any

from modelplex import errors

__all__ = ["foreign_error"]


def _aiohttp_error(err: BaseException, provider: str, text: str) -> errors.ProviderError | None:
    aiohttp: Any = sys.modules.get("aiohttp")
    if aiohttp is None or not isinstance(err, aiohttp.ClientError):
        return None
    if isinstance(err, aiohttp.ClientResponseError) and err.status >= 400:
        from modelplex.http import error_from_status

        return error_from_status(err.status, err.message, err.headers or {}, provider=provider)
    if isinstance(err, aiohttp.ServerTimeoutError):
        return errors.ProviderTimeoutError(f"{provider}: timed out ({text})",
                                           phase="between_chunks", timeout=None,
                                           provider=provider)
    if isinstance(err, aiohttp.ClientConnectorError | aiohttp.ClientOSError):
        return errors.ProviderConnectionError(f"{provider}: cannot connect ({text})",
                                              provider=provider)
    if isinstance(err, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return errors.StreamError(f"{provider}: the response broke off ({text})",
                                  provider=provider)
    return errors.ProviderConnectionError(f"{provider}: request failed ({text})",
                                          provider=provider)


def foreign_error(err: BaseException, provider: str | None) -> errors.ProviderError:
    """The :class:`ProviderError` that stands for ``err``, a non-modelplex exception.

    aiohttp errors map to their kind (an error status to the ``ProviderStatusError`` family,
    a refused connection to :class:`ProviderConnectionError`, a broken body to
    :class:`StreamError`), timeouts to :class:`ProviderTimeoutError`, connection-level
    ``OSError`` to :class:`ProviderConnectionError`, anything else to a plain
    :class:`ProviderError` naming the exception's type. Messages are redacted. The caller
    chains it: ``raise foreign_error(err, name) from err``.
    """
    name = provider or "provider"
    text = errors.redact(f"{type(err).__name__}: {err}")
    mapped = _aiohttp_error(err, name, text)
    if mapped is not None:
        return mapped
    if isinstance(err, TimeoutError):
        return errors.ProviderTimeoutError(f"{name}: timed out ({text})", phase="total",
                                           timeout=None, provider=name)
    if isinstance(err, ConnectionError):
        return errors.ProviderConnectionError(f"{name}: connection failed ({text})",
                                              provider=name)
    return errors.ProviderError(f"{name}: the provider failed unexpectedly ({text})",
                                provider=name)
