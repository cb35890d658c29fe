"""``modelplex cache stats|clear``: the response cache on disk (or another backend).

A cache that cannot be used (a damaged file, a Redis that is down or refuses the password)
is one line naming it and the fix, and exit status 1: backends raise
:class:`~modelplex.errors.StorageError`, and anything else a third-party backend raises is
turned into one here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from modelplex.errors import ConfigurationError, ModelplexError, StorageError

if TYPE_CHECKING:
    from modelplex.caches import Cache

__all__ = ["cache"]

T = TypeVar("T")


def _open(backend: str | None, path: str | None, url: str | None) -> Cache:
    from modelplex.caches import CacheConfig, open_cache
    from modelplex.config import get_config

    configured = dict(get_config().cache)  # the config file's [cache] table, if any
    if backend is None or backend == configured.get("backend", "memory"):
        fields: dict[str, Any] = configured if configured.get("backend") else {}
    else:
        fields = {}
    fields = {**fields, "backend": backend or fields.get("backend") or "sqlite"}
    if path:
        from pathlib import Path

        if not Path(path).expanduser().parent.exists():  # folders were made for a typo
            raise ConfigurationError(f"--path {path}: no such folder; check the path (without "
                                     "--path, the configured or default cache is used)")
        fields["path"] = path
    if url:
        fields["url"] = url
    return open_cache(CacheConfig.parse(fields))


def _use(backend: str | None, path: str | None, url: str | None,
         action: Callable[[Cache], Awaitable[T]]) -> T:
    """Open the cache, run ``action`` on it and close it; a failure that is not a modelplex
    error (a third-party backend's own) becomes a :class:`StorageError` naming the cache."""
    async def run() -> T:
        store = None
        try:
            store = _open(backend, path, url)
            return await action(store)
        except ModelplexError:
            raise
        except Exception as err:
            what = repr(store) if store is not None else f"cache {backend or ''}".strip()
            raise StorageError(f"{what}: {type(err).__name__}: {err}", reason=str(err)
                               ) from err
        finally:
            if store is not None:
                await store.aclose()

    return asyncio.run(run())


def _backend_options(f: Any) -> Any:
    f = click.option("--url", help="redis: the server URL (default $MODELPLEX_REDIS_URL).")(f)
    f = click.option("--path", type=click.Path(dir_okay=False),
                     help="sqlite: the database (default: the user's cache dir).")(f)
    return click.option("-b", "--backend",
                        help="The cache: sqlite, redis, or another registered name (default: "
                             "the config file's [cache] backend, else sqlite).")(f)


@click.group()
def cache() -> None:
    """The response cache: counters and clearing."""


@cache.command("stats")
@_backend_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cache_stats(backend: str | None, path: str | None, url: str | None, as_json: bool) -> None:
    """Hits, misses and entries of the cache."""
    async def stats_of(store: Cache) -> dict[str, Any]:
        return (await store.stats()).to_dict()

    stats = _use(backend, path, url, stats_of)
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    rate = stats["hit_rate"]
    rows = [("backend", stats["backend"]), ("location", stats["location"]),
            ("entries", stats["size"]), ("hits", stats["hits"]), ("misses", stats["misses"]),
            ("hit rate", f"{rate:.1%}" if rate is not None else "-")]
    for name, value in rows:
        if value is not None:
            click.echo(f"{name:9} {value}")


@cache.command("clear")
@_backend_options
def cache_clear(backend: str | None, path: str | None, url: str | None) -> None:
    """Remove every entry (and reset the counters)."""
    async def clear(store: Cache) -> int:
        return await store.clear()

    click.echo(f"Removed {_use(backend, path, url, clear)} entries.")
