"""Timeouts for the ``modelplex`` command: flags, ``MODELPLEX_*TIMEOUT`` variables, defaults.

The command waits less than the library does by default: a stalled server must not keep a
person at the terminal waiting ten minutes. Later sources win: :data:`CLI_TIMEOUTS`, then the
environment variables, then the flags. The result is passed as ``timeouts=`` to every provider
whose factory takes that keyword (the built-in HTTP providers and any third-party provider
that accepts it), so there is one spelling everywhere.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from modelplex import env

if TYPE_CHECKING:
    from modelplex.http import Timeouts

__all__ = ["CLI_TIMEOUTS", "accepts_keyword", "provider_configs", "provider_timeouts",
           "timeout_options"]

F = TypeVar("F", bound=Callable[..., Any])

#: The command's defaults: connect 10 s, first byte 120 s, between chunks 30 s, no total.
CLI_TIMEOUTS: dict[str, float | None] = {"connect": 10.0, "first_byte": 120.0,
                                         "between_chunks": 30.0, "total": None}


# click's ParamType became generic (one type argument in 8.4, two in 8.5): stay unsubscripted
_ParamType = click.ParamType


class Seconds(_ParamType):  # type: ignore[type-arg, misc, unused-ignore]
    """A number of seconds > 0, or ``none`` for no limit."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float | None:
        if value is None or isinstance(value, float):
            return value
        text = str(value).strip().lower()
        if text in ("none", "off", "0", "inf"):
            return None
        try:
            seconds = float(text)
        except ValueError:
            seconds = -1.0
        if not seconds > 0:
            self.fail(f"{value!r} is not a number of seconds > 0 (or none for no limit)",
                      param, ctx)
        return seconds


_FLAGS = (  # (flag, Timeouts field, help)
    ("--timeout", "total", "Most seconds for a whole request, stream included "
                           "(default none; env MODELPLEX_TIMEOUT)."),
    ("--connect-timeout", "connect", "Seconds to establish a connection "
                                     "(default 10; env MODELPLEX_CONNECT_TIMEOUT)."),
    ("--first-byte-timeout", "first_byte", "Seconds to wait for the answer to start "
                                           "(default 120; env MODELPLEX_FIRST_BYTE_TIMEOUT)."),
    ("--between-chunks-timeout", "between_chunks",
     "Longest silence in seconds while the answer streams "
     "(default 30; env MODELPLEX_BETWEEN_CHUNKS_TIMEOUT)."),
)


def timeout_options(command: F) -> F:
    """Add the four timeout flags to a click command (as ``timeout_<field>`` parameters)."""
    for flag, field, text in reversed(_FLAGS):
        command = click.option(flag, f"timeout_{field}", type=Seconds(), default=None,
                               help=text)(command)
    return command


def resolve(flags: dict[str, Any] | None = None, *, file: Any = None) -> Timeouts:
    """Defaults, then ``file`` (a provider's ``timeouts`` in the config file), then environment
    variables, then flags (``timeout_<field>`` values that are set; ``None`` from a flag means
    the flag was not given)."""
    from modelplex.http import Timeouts  # aiohttp: only for the commands that talk

    base = Timeouts(**CLI_TIMEOUTS)
    if file is not None:
        base = Timeouts.parse(file, base=base, field="timeouts in the config file")
    timeouts = Timeouts.parse(env.timeouts(), base=base, field="environment")
    given = {key.removeprefix("timeout_"): value for key, value in (flags or {}).items()
             if key.startswith("timeout_") and value is not None}
    # `--timeout none` arrives as None too: click passes the converted value, so look again
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        for _flag, field, _text in _FLAGS:
            source = ctx.get_parameter_source(f"timeout_{field}")
            if source is click.core.ParameterSource.COMMANDLINE:
                given[field] = ctx.params.get(f"timeout_{field}")
    return Timeouts.parse(given, base=timeouts, field="timeout flags")


def accepts_keyword(factory: Any, name: str) -> bool:
    """Whether calling ``factory`` with the keyword ``name`` is expected to work.

    Follows :func:`functools.partial` and, for classes, the ``__init__`` of each base class a
    ``**kwargs`` passes on to.
    """
    while isinstance(factory, functools.partial):
        if name in factory.keywords:
            return True
        factory = factory.func
    functions = ([vars(klass)["__init__"] for klass in factory.__mro__
                  if "__init__" in vars(klass)] if isinstance(factory, type) else [factory])
    for function in functions:
        try:
            parameters = inspect.signature(function).parameters
        except (TypeError, ValueError):
            return False
        found = parameters.get(name)
        if found is not None and found.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                inspect.Parameter.POSITIONAL_OR_KEYWORD):
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return False
    return False


def provider_timeouts(timeouts: Timeouts) -> dict[str, dict[str, Any]]:
    """``provider_config`` giving ``timeouts`` to every installed provider that takes them."""
    from modelplex.plugins import get_plugins

    return {name: {"timeouts": timeouts}
            for name, reg in get_plugins().registry("providers").items()
            if accepts_keyword(reg.obj, "timeouts")}


def provider_configs(flags: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``provider_config`` for the command: every provider that takes ``timeouts`` gets the
    command's defaults, then its ``[providers.NAME] timeouts`` from the config file, then the
    environment, then the flags."""
    from modelplex.config import get_config
    from modelplex.plugins import get_plugins

    tables = get_config().providers
    return {name: {"timeouts": resolve(flags, file=tables.get(name, {}).get("timeouts"))}
            for name, reg in get_plugins().registry("providers").items()
            if accepts_keyword(reg.obj, "timeouts")}
