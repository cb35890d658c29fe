"""The telemetry settings (``[telemetry]``, ``MODELPLEX_OTEL``) and whether an OpenTelemetry SDK
is configured: what decides if the telemetry layer is built and whether content is captured.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from modelplex import env
from modelplex.errors import ConfigurationError

if TYPE_CHECKING:
    from modelplex.config import Config


_KEYS = frozenset({"enabled", "capture_content"})
_SCOPE = "modelplex"


@attrs.frozen
class TelemetrySettings:
    """Whether the telemetry layer is built and what it records.

    ``enabled``: ``True`` always, ``False`` never, ``None`` (default) when an OpenTelemetry
    SDK tracer or meter provider is configured. ``capture_content``: record messages, system
    instructions and tool definitions in spans (off by default: they may hold personal data).
    """

    enabled: bool | None = None
    capture_content: bool = False

    @classmethod
    def from_config(cls, config: Config | None = None,
                    environ: Mapping[str, str] | None = None) -> TelemetrySettings:
        """The ``[telemetry]`` table of ``config``, with ``MODELPLEX_OTEL`` and
        ``MODELPLEX_OTEL_CAPTURE_CONTENT`` over it."""
        table: Mapping[str, Any] = config.telemetry if config is not None else {}
        unknown = sorted(set(table) - _KEYS)
        if unknown:
            raise ConfigurationError(f"telemetry.{unknown[0]}: unknown key; valid keys are "
                                     f"{', '.join(sorted(_KEYS))}")
        values: dict[str, bool | None] = {}
        for key in sorted(_KEYS):
            value = table.get(key)
            if value is not None and not isinstance(value, bool):
                raise ConfigurationError(f"telemetry.{key} must be true or false "
                                         f"(got {value!r})")
            values[key] = value
        on = env.otel(environ)
        capture = env.otel_capture_content(environ)
        return cls(enabled=on if on is not None else values["enabled"],
                   capture_content=bool(capture if capture is not None
                                        else values["capture_content"]))


#: the settings of the last configs seen, by identity: (config, its table as read, the two
#: variables as read, the settings). Read again when the table or a variable changed.
_settings_cache: dict[int, tuple[Any, dict[str, Any], str | None, str | None,
                                 TelemetrySettings]] = {}
_SETTINGS_CACHE_SIZE = 32


def settings_for(config: Config | None) -> TelemetrySettings:
    """:meth:`TelemetrySettings.from_config` of ``config`` and the environment as they are
    now, without parsing them again for every stack built (a ChatManager per conversation
    builds one per conversation): kept per config object, checked against its ``[telemetry]``
    table and the two variables' text on every call."""
    on = env.lookup("MODELPLEX_OTEL")
    capture = env.lookup("MODELPLEX_OTEL_CAPTURE_CONTENT")
    table = config.telemetry if config is not None else None
    cached = _settings_cache.get(id(config))
    if (cached is not None and cached[0] is config and cached[2] == on
            and cached[3] == capture and (table is None or cached[1] == table)):
        return cached[4]
    settings = TelemetrySettings.from_config(config)  # raises on a bad table: not kept
    if len(_settings_cache) >= _SETTINGS_CACHE_SIZE:
        del _settings_cache[next(iter(_settings_cache))]
    _settings_cache[id(config)] = (config, dict(table or {}), on, capture, settings)
    return settings


# -- is an SDK there? ----------------------------------------------------------------------------
_meter_providers: list[Any] = []


def add_meter_provider(meter_provider: Any) -> None:
    """Record metrics to ``meter_provider`` too (besides the global one): the server's
    ``/metrics`` uses a private one. The layer is built while one is added."""
    if all(mp is not meter_provider for mp in _meter_providers):
        _meter_providers.append(meter_provider)


def remove_meter_provider(meter_provider: Any) -> None:
    """Stop recording to ``meter_provider``."""
    _meter_providers[:] = [mp for mp in _meter_providers if mp is not meter_provider]


_ABSENT = object()


def _surely_unset(module: Any, attribute: str, variable: str) -> bool:
    """Whether the OpenTelemetry API's ``get_tracer_provider()`` / ``get_meter_provider()``
    would give its proxy, known without asking it: no global provider was set (the API's
    module-level ``attribute``, ``_TRACER_PROVIDER`` / ``_METER_PROVIDER``) and its
    ``variable`` (``OTEL_PYTHON_*_PROVIDER``, which names a provider to load) is unset.

    This is the API's own first test. Asked through the API, the variable is read from
    ``os.environ``, which raises and catches two exceptions for an unset name, on every
    stack built; :func:`modelplex.env.lookup` reads it without them. An API without that
    attribute (another version) is always asked (``False``)."""
    return getattr(module, attribute, _ABSENT) is None and env.lookup(variable) is None


def _sdk_tracer_provider() -> bool:
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:  # nobody imported the API: nobody configured a provider
        return False
    if _surely_unset(trace, "_TRACER_PROVIDER", "OTEL_PYTHON_TRACER_PROVIDER"):
        return False
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def _sdk_meter_provider() -> bool:
    metrics = sys.modules.get("opentelemetry.metrics")
    if metrics is None:
        return False
    internal = sys.modules.get("opentelemetry.metrics._internal")  # where the API keeps it
    if internal is not None and _surely_unset(internal, "_METER_PROVIDER",
                                              "OTEL_PYTHON_METER_PROVIDER"):
        return False
    provider = metrics.get_meter_provider()
    return type(provider).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")


def enabled(settings: TelemetrySettings) -> bool:
    """Whether a telemetry layer is worth building now."""
    if settings.enabled is not None:
        return settings.enabled
    return bool(_meter_providers) or _sdk_tracer_provider() or _sdk_meter_provider()


def _capture_content() -> bool:
    try:
        from modelplex.config import get_config

        return TelemetrySettings.from_config(get_config()).capture_content
    except ConfigurationError:
        return False
