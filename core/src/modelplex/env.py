"""Typed readers for the ``MODELPLEX_*`` environment variables.

Every variable modelplex reads goes through one of these readers, so a bad value is always a
:class:`~modelplex.errors.ConfigurationError` that names the variable and the values it
accepts, never a ``ValueError`` traceback or a value silently taken as something else. Unset
and empty variables mean "use the default".

===================================  =========================================================
variable                             reader
===================================  =========================================================
``MODELPLEX_DEBUG``                  :func:`debug` (``1/true/yes/on`` or ``0/false/no/off``)
``MODELPLEX_DEFAULT_MODEL``          :func:`default_model` (``provider:model``)
``MODELPLEX_CONFIG``                 :func:`config_file` (the configuration file)
``MODELPLEX_MAX_MESSAGE_LENGTH``     :func:`max_message_length` (a whole number > 0)
``MODELPLEX_LOAD_PLUGINS``           :func:`name_list` (comma-separated; empty loads none)
``MODELPLEX_DISABLE_PLUGINS``        :func:`name_list`
``MODELPLEX_TIMEOUT``                :func:`timeouts` (seconds > 0, or ``none``)
``MODELPLEX_CONNECT_TIMEOUT``        :func:`timeouts`
``MODELPLEX_FIRST_BYTE_TIMEOUT``     :func:`timeouts`
``MODELPLEX_BETWEEN_CHUNKS_TIMEOUT`` :func:`timeouts`
``MODELPLEX_DATA_DIR``               :func:`get_str` (a folder; :mod:`modelplex.paths`)
``MODELPLEX_CACHE_DIR``              :func:`get_str` (a folder; :mod:`modelplex.paths`)
``MODELPLEX_OTEL``                   :func:`otel` (telemetry on/off; :mod:`modelplex.telemetry`)
``MODELPLEX_OTEL_CAPTURE_CONTENT``   :func:`otel_capture_content` (message content in spans)
===================================  =========================================================

Plugins read their own ``MODELPLEX_<PLUGIN>_*`` variables with the same helpers
(:func:`get_bool`, :func:`get_int`, :func:`get_seconds`, :func:`get_str`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from modelplex.errors import ConfigurationError

__all__ = [
    "TIMEOUT_VARIABLES",
    "debug",
    "default_model",
    "get_bool",
    "get_int",
    "get_seconds",
    "get_str",
    "lookup",
    "max_message_length",
    "name_list",
    "otel",
    "otel_capture_content",
    "timeouts",
]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_NONE = frozenset({"none", "off", "0", "inf"})

#: The timeout variables, by :class:`~modelplex.http.Timeouts` field.
TIMEOUT_VARIABLES: Mapping[str, str] = {
    "total": "MODELPLEX_TIMEOUT",
    "connect": "MODELPLEX_CONNECT_TIMEOUT",
    "first_byte": "MODELPLEX_FIRST_BYTE_TIMEOUT",
    "between_chunks": "MODELPLEX_BETWEEN_CHUNKS_TIMEOUT",
}


_ENVIRON = os.environ  # the process's environment, as CPython keeps it (see lookup)
_ENCODED: dict[str, object] = {}  # variable name -> its key in os.environ's own dict


def lookup(name: str) -> str | None:
    """``os.environ.get(name)``: the variable's text, ``None`` when unset.

    The same answer, got without the two ``KeyError``s ``os.environ`` raises and catches
    inside for a name that is not set (about 0.5 us each time: the request path asks about
    unset variables on every conversation). CPython's ``os.environ`` keeps the environment
    in a dict under encoded names (``_data``, written by every change made through
    ``os.environ``); it is read there, with each name encoded once. When ``os.environ`` was
    replaced (a test's plain dict) or is not that mapping (another Python), it is asked.
    """
    environ = os.environ
    data = getattr(environ, "_data", None)
    if environ is not _ENVIRON or type(data) is not dict:
        return environ.get(name)
    key = _ENCODED.get(name)
    if key is None:
        key = environ.encodekey(name)
        if len(_ENCODED) < 256:  # names come from the code: a few dozen
            _ENCODED[name] = key
    value = data.get(key)
    return None if value is None else environ.decodevalue(value)


def _raw(name: str, env: Mapping[str, str] | None) -> str | None:
    value = lookup(name) if env is None else env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def get_str(name: str, default: str | None = None, *,
            env: Mapping[str, str] | None = None) -> str | None:
    """The variable's text, stripped; ``default`` when unset or empty."""
    value = _raw(name, env)
    return default if value is None else value


def get_bool(name: str, default: bool = False, *, env: Mapping[str, str] | None = None) -> bool:
    """``1``, ``true``, ``yes``, ``on`` are true; ``0``, ``false``, ``no``, ``off`` false."""
    value = _raw(name, env)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"{name}={value!r} is not a yes/no value: use 1, true, yes or on "
                             "to turn it on, 0, false, no or off to turn it off")


def get_int(name: str, default: int, *, minimum: int | None = None,
            env: Mapping[str, str] | None = None) -> int:
    """A whole number, at least ``minimum`` when given."""
    value = _raw(name, env)
    if value is None:
        return default
    try:
        number = int(value.replace("_", ""))
    except ValueError:
        number = None
    if number is None or (minimum is not None and number < minimum):
        need = f"a whole number >= {minimum}" if minimum is not None else "a whole number"
        raise ConfigurationError(f"{name}={value!r} is not valid: use {need} "
                                 f"(default {default})")
    return number


def get_seconds(name: str, *, env: Mapping[str, str] | None = None
                ) -> tuple[bool, float | None]:
    """``(set, seconds)``: a number of seconds > 0, or ``none`` (also ``off``, ``0``) for no
    limit. ``set`` is false when the variable is unset or empty."""
    value = _raw(name, env)
    if value is None:
        return False, None
    if value.lower() in _NONE:
        return True, None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if math.isnan(seconds) or seconds <= 0:
        raise ConfigurationError(f"{name}={value!r} is not valid: use a number of seconds > 0, "
                                 "or none for no limit")
    return True, seconds


def debug(env: Mapping[str, str] | None = None) -> bool:
    """``MODELPLEX_DEBUG``: print tracebacks on errors."""
    return get_bool("MODELPLEX_DEBUG", env=env)


def default_model(env: Mapping[str, str] | None = None) -> str | None:
    """``MODELPLEX_DEFAULT_MODEL``: the model used when none is named."""
    return get_str("MODELPLEX_DEFAULT_MODEL", env=env)


DEFAULT_MAX_MESSAGE_LENGTH = 1_000_000


def config_file(env: Mapping[str, str] | None = None) -> str | None:
    """``MODELPLEX_CONFIG``: the configuration file (see :mod:`modelplex.config`)."""
    return get_str("MODELPLEX_CONFIG", env=env)


def max_message_length(env: Mapping[str, str] | None = None) -> int:
    """``MODELPLEX_MAX_MESSAGE_LENGTH``: the longest message accepted, in characters."""
    return get_int("MODELPLEX_MAX_MESSAGE_LENGTH", DEFAULT_MAX_MESSAGE_LENGTH, minimum=1,
                   env=env)


DEFAULT_POOL_LINGER = 0.0


def pool_linger(env: Mapping[str, str] | None = None) -> float:
    """``MODELPLEX_POOL_LINGER``: seconds the process-wide provider pool keeps a provider
    nobody holds open (default 0: closed at once; ``none`` and ``off`` mean 0 too)."""
    name = "MODELPLEX_POOL_LINGER"
    value = _raw(name, env)
    if value is None:
        return DEFAULT_POOL_LINGER
    if value.lower() in ("none", "off"):
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigurationError(f"{name}={value!r} is not valid: use a number of seconds >= 0 "
                                 f"(0, the default, closes providers at once)")
    return seconds


def name_list(name: str, env: Mapping[str, str] | None = None) -> set[str] | None:
    """A comma-separated list of names; ``None`` when unset (an empty value is an empty set)."""
    raw = (os.environ if env is None else env).get(name)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def timeouts(env: Mapping[str, str] | None = None) -> dict[str, float | None]:
    """The timeouts set by ``MODELPLEX_*TIMEOUT`` variables, as a mapping for
    :meth:`modelplex.http.Timeouts.parse` (only the ones that are set)."""
    found: dict[str, float | None] = {}
    for field, name in TIMEOUT_VARIABLES.items():
        given, seconds = get_seconds(name, env=env)
        if given:
            found[field] = seconds
    return found


def otel(env: Mapping[str, str] | None = None) -> bool | None:
    """``MODELPLEX_OTEL``: OpenTelemetry traces and metrics on (``1``) or off (``0``);
    ``None`` when unset (on when an OpenTelemetry SDK is configured)."""
    if _raw("MODELPLEX_OTEL", env) is None:
        return None
    return get_bool("MODELPLEX_OTEL", env=env)


def otel_capture_content(env: Mapping[str, str] | None = None) -> bool | None:
    """``MODELPLEX_OTEL_CAPTURE_CONTENT``: put message content in spans (``1``) or never
    (``0``); ``None`` when unset (the config file decides, default off)."""
    if _raw("MODELPLEX_OTEL_CAPTURE_CONTENT", env) is None:
        return None
    return get_bool("MODELPLEX_OTEL_CAPTURE_CONTENT", env=env)
