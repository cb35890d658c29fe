"""Small helpers every ``modelplex`` subcommand shares: running a coroutine, ``-o KEY VALUE``
values, tables, and a provider of the pool for the length of one action.

Nothing here imports a subcommand module, so the command modules can all import this one
without a cycle.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from modelplex import interrupt
from modelplex.cli.timeouts import provider_configs

if TYPE_CHECKING:
    from modelplex.provider import Provider

T = TypeVar("T")

__all__ = ["check_text", "options", "parse_option_value", "print_table", "provider_names", "run",
           "with_provider"]


def run(coro: Awaitable[T]) -> T:
    """Run ``coro`` in a new event loop and return its result."""
    async def runner() -> T:
        return await coro

    return interrupt.run(runner())  # asyncio.run, where Ctrl-C is never lost


def parse_option_value(value: str) -> Any:
    """A ``-o KEY VALUE`` value: JSON when it parses (numbers, lists, booleans), else text."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def check_text(value: str, what: str) -> str:
    """``value`` if it is text; a :class:`ConfigurationError` naming ``what`` when it holds
    bytes that are not UTF-8 (an argument's undecodable bytes arrive as lone surrogates)."""
    for index, char in enumerate(value):
        if "\udc80" <= char <= "\udcff":
            from modelplex.errors import ConfigurationError

            raise ConfigurationError(f"{what} is not valid text: character {index} is an "
                                     f"undecodable byte ({char!a}); give the text as UTF-8")
    return value


def options(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """``-o KEY VALUE`` pairs as provider options (``-`` in a key becomes ``_``)."""
    return {check_text(key, "an option name").replace("-", "_"):
            parse_option_value(check_text(value, f"option {key!r}")) for key, value in pairs}


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Print ``rows`` under ``header`` in left-aligned columns."""
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def provider_names(only: str | None) -> list[str]:
    """The installed providers' names, or just ``only`` (a clear error if it is unknown)."""
    from modelplex.plugins import get_plugins

    plugins = get_plugins()
    if only:
        plugins.get("providers", only)  # clear error if unknown
        return [only]
    return plugins.provider_names()


async def with_provider(name: str, action: Callable[[Provider], Awaitable[T]]) -> T:
    """Run ``action`` with provider ``name`` from the pool, built with the config's
    ``[providers.NAME]`` keywords and the command's timeouts, released after."""
    from modelplex.config import get_config
    from modelplex.pool import get_pool

    timeouts = provider_configs().get(name, {})
    pool = get_pool()  # built with the config's [providers.NAME] keywords, then the timeouts
    provider = await pool.acquire(name, {**get_config().provider_kwargs(name), **timeouts})
    try:
        return await action(provider)
    finally:
        await pool.release(provider)
