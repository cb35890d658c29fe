"""``modelplex cache stats|clear``: the response cache on disk (or another backend)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from modelplex.caches import Cache

__all__ = ["cache"]


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
        fields["path"] = path
    if url:
        fields["url"] = url
    return open_cache(CacheConfig.parse(fields))


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
    async def run() -> dict[str, Any]:
        store = _open(backend, path, url)
        try:
            return (await store.stats()).to_dict()
        finally:
            await store.aclose()

    stats = asyncio.run(run())
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
    async def run() -> int:
        store = _open(backend, path, url)
        try:
            return await store.clear()
        finally:
            await store.aclose()

    click.echo(f"Removed {asyncio.run(run())} entries.")
