"""Sampling presets (:class:`ChatMode`) and how they fit each provider's option ranges.

The presets are written for the common ranges (temperature 0 to 2, top_p 0 to 1). A provider
whose ``Options`` declare another range gets the preset scaled into it (a provider with
temperature 0 to 1 gets half the temperature), and a preset option the provider does not have
is left out, so choosing a mode never makes a provider reject the request.

:class:`Sampling` is a conversation's options and mode together: what each request is sent
(the preset fitted to the provider under the options) and how a change is checked before it
is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import annotated_types
from pydantic import BaseModel

from modelplex.errors import ConfigurationError

if TYPE_CHECKING:
    from modelplex.provider import CommonOptions, Provider
    from modelplex.types import ChatSession

__all__ = ["COMMON_RANGES", "MODE_PRESETS", "ChatMode", "Sampling", "fit_preset", "parse_mode"]


class ChatMode(StrEnum):
    """Sampling presets: low, medium and high temperature."""

    PRECISE = "precise"
    BALANCED = "balanced"
    CREATIVE = "creative"


MODE_PRESETS: dict[ChatMode, dict[str, float]] = {
    ChatMode.PRECISE: {"temperature": 0.2, "top_p": 0.5},
    ChatMode.BALANCED: {"temperature": 0.7, "top_p": 0.9},
    ChatMode.CREATIVE: {"temperature": 1.1, "top_p": 0.98},
}

#: The ranges the presets are written for.
COMMON_RANGES: dict[str, tuple[float, float]] = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0)}


def parse_mode(mode: Any) -> ChatMode | None:
    """``mode`` as a :class:`ChatMode` (``None`` stays ``None``); a clear error otherwise."""
    if mode is None or isinstance(mode, ChatMode):
        return mode
    try:
        return ChatMode(mode)
    except ValueError:
        valid = ", ".join(m.value for m in ChatMode)
        raise ConfigurationError(f"mode {mode!r} is not one of {valid}") from None


def _bounds(field: Any) -> tuple[float | None, float | None]:
    low: float | None = None
    high: float | None = None
    for meta in getattr(field, "metadata", []):
        if isinstance(meta, annotated_types.Ge):
            low = float(meta.ge)  # type: ignore[arg-type]
        elif isinstance(meta, annotated_types.Gt):
            low = float(meta.gt)  # type: ignore[arg-type]
        elif isinstance(meta, annotated_types.Le):
            high = float(meta.le)  # type: ignore[arg-type]
        elif isinstance(meta, annotated_types.Lt):
            high = float(meta.lt)  # type: ignore[arg-type]
    return low, high


def fit_preset(mode: ChatMode, options: type[BaseModel]) -> dict[str, float]:
    """The preset of ``mode`` for a provider whose options model is ``options``."""
    fitted: dict[str, float] = {}
    for key, value in MODE_PRESETS[mode].items():
        field = options.model_fields.get(key)
        if field is None:
            continue  # the provider has no such option: send nothing
        low, high = _bounds(field)
        common_low, common_high = COMMON_RANGES[key]
        if low is not None and high is not None and (low, high) != (common_low, common_high):
            value = low + (value - common_low) / (common_high - common_low) * (high - low)
        if high is not None:
            value = min(value, high)
        if low is not None:
            value = max(value, low)
        fitted[key] = round(value, 4)
    return fitted


_SAME: Any = object()  # Sampling.keep: the mode stays


class Sampling:
    """A conversation's provider options and :class:`ChatMode`.

    ``options`` must be a mapping (a clear :class:`ConfigurationError` otherwise); ``mode`` a
    :class:`ChatMode`, its name or ``None``.
    """

    __slots__ = ("_pending", "mode", "options")

    def __init__(self, options: Mapping[str, Any] | None = None, mode: Any = None) -> None:
        if options is not None and not isinstance(options, Mapping):
            raise ConfigurationError("options must map option names to values, e.g. "
                                     f"{{'temperature': 0.2}} (got {type(options).__name__})")
        self.options: dict[str, Any] = dict(options or {})
        self.mode: ChatMode | None = parse_mode(mode or None)
        #: what :meth:`keep` validated last, for the next :meth:`check` of the same provider
        #: without options (a conversation's first message): validated once, used once
        self._pending: tuple[Provider, CommonOptions] | None = None

    def merged(self, options: Mapping[str, Any], provider: Provider | None,
               mode: ChatMode | None) -> dict[str, Any]:
        """``mode``'s preset (fitted to ``provider``, else as written) under ``options``."""
        merged: dict[str, Any] = {}
        if isinstance(mode, ChatMode):
            merged = fit_preset(mode, provider.Options) if provider is not None \
                else dict(MODE_PRESETS[mode])
        merged.update(options)
        return merged

    def check(self, provider: Provider, options: Mapping[str, Any] | None = None
              ) -> CommonOptions:
        """The validated options of a request to ``provider``: the kept ones and ``options``
        over the mode's preset."""
        unused, self._pending = self._pending, None
        if unused is not None and unused[0] is provider and not options:
            return unused[1]  # the same inputs, validated by keep() and seen by nobody yet
        return provider.parse_options(self.merged({**self.options, **(options or {})},
                                                  provider, self.mode))

    def keep(self, provider: Provider | None, session: ChatSession | None,
             options: Mapping[str, Any] | None = None, mode: Any = _SAME
             ) -> CommonOptions | None:
        """Add ``options`` to the kept ones and use ``mode`` (if given) once ``provider`` (if
        any) accepts them; ``session`` shows the result. Returns the validated options
        (``None`` without a provider)."""
        # self.options is replaced, never changed in place: without new options it is kept
        kept = {**self.options, **options} if options else self.options
        mode = self.mode if mode is _SAME else parse_mode(mode)
        validated = None
        if provider is not None:
            validated = provider.parse_options(self.merged(kept, provider, mode))
            if session is not None:
                session.temperature = validated.temperature
                session.top_p = validated.top_p
                session.max_tokens = validated.max_tokens
        self.options, self.mode = kept, mode
        # the next check() would validate the same inputs: it takes this instance, so the
        # caller reads it and does not keep it
        self._pending = None if provider is None or validated is None else (provider, validated)
        return validated
