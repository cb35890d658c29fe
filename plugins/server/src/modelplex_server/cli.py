"""``modelplex serve`` and ``modelplex server-key``."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from modelplex.config import Config

__all__ = ["serve", "server_key"]


@click.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1; other addresses "
                             "need API keys).")
@click.option("--port", type=int, help="Port (default 8000; 0 picks a free one).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="The modelplex config file (TOML or JSON: [server], [providers.NAME], "
                   "[models.NAME]); default MODELPLEX_CONFIG.")
@click.option("--max-concurrency", type=int, help="Model requests at once (more get 503).")
@click.option("--no-access-log", is_flag=True, help="Do not log each request.")
@click.option("--conversations", metavar="PATH|memory",
              help="Where /api conversations are kept: a SQLite file, or 'memory' (lost on "
                   "exit); default <data dir>/server-conversations.db.")
@click.option("--store", metavar="URL|PATH|memory",
              help="Where conversations are kept, shared by replicas: a postgresql:// URL "
                   "(modelplex-server[postgresql]), a SQLite file or 'memory'; wins over "
                   "--conversations.")
def serve(host: str | None, port: int | None, config_path: str | None,
          max_concurrency: int | None, no_access_log: bool, conversations: str | None,
          store: str | None) -> None:
    """Serve every installed provider over an OpenAI-compatible API (/v1), a REST and
    WebSocket API (/api, /ws) and /openapi.json, until Ctrl-C."""
    from modelplex_server.app import AppServer, create_app, serve as run
    from modelplex_server.settings import load_server_config
    from modelplex_server.sqlite_store import open_store

    config, settings = load_server_config(config_path, host=host, port=port,
                                          max_concurrency=max_concurrency,
                                          access_log=False if no_access_log else None,
                                          conversations=conversations, store=store)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    kept_in = open_store(settings.store or settings.conversations)
    app = create_app(settings, config=config, conversations=kept_in,
                     logs=_log_database(config))

    def ready(server: AppServer) -> None:
        keys = f"{len(settings.keys)} API keys" if settings.keys else "no API keys"
        kept = getattr(kept_in, "path", None) or kept_in.describe()
        click.echo(f"modelplex serving on {server.url} ({keys}); conversations in {kept}; "
                   f"OpenAI base URL "
                   f"{server.url}/v1, API description {server.url}/openapi.json. "
                   "Ctrl-C stops.", err=True)
        _settle_heap()

    asyncio.run(run(app, on_ready=ready))


def _log_database(config: Config) -> str | None:
    """Where exchanges are stored: the database ``modelplex chat`` stores them in with the same
    config (``[conversations]``; none after ``modelplex logs off`` or with ``log = false``)."""
    from modelplex.store.logs import ConversationsConfig, default_path, logs_enabled

    settings = ConversationsConfig.parse(config.conversations)
    if not settings.log or not logs_enabled():
        return None
    return settings.path or str(default_path())


def _settle_heap() -> None:
    """Collect once after start-up, then leave what start-up built (imports, plugins, the app)
    out of later collections: the first full collection after the imports is a pause of tens
    of milliseconds, and every full collection would rescan those objects, both landing in
    some request's latency (the gateway's p99) instead of before traffic."""
    gc.collect()
    gc.freeze()


@click.command("server-key")
@click.option("--name", default="default", show_default=True, help="The key's name.")
def server_key(name: str) -> None:
    """Make a new API key for `modelplex serve`: prints the key (give it to the client, it is
    not stored) and the config lines holding its hash."""
    from modelplex.config import to_toml
    from modelplex_server.settings import generate_key, hash_key

    key = generate_key()
    click.echo(f"API key (shown once): {key}", err=True)
    # the name escaped: whatever it holds, the block is one key with this name and hash
    click.echo("[[server.keys]]\n" + to_toml({"name": name, "hash": hash_key(key)}), nl=False)
