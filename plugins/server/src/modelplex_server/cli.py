"""``modelplex serve`` and ``modelplex server-key``."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from modelplex.config import Config
    from modelplex_server.conversations import ConversationStore
    from modelplex_server.settings import KeyConfig, ServerSettings

__all__ = ["keys", "serve", "server_key"]

T = TypeVar("T")


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
@click.option("--workers", type=click.IntRange(1, 512),
              help="Processes serving the port (SO_REUSEPORT), supervised by this one; "
                   "default 1.")
@click.option("--graceful-timeout", type=click.FloatRange(min=0),
              help="Seconds requests in flight get to finish on SIGTERM/Ctrl-C (default 30).")
def serve(host: str | None, port: int | None, config_path: str | None,
          max_concurrency: int | None, no_access_log: bool, conversations: str | None,
          store: str | None, workers: int | None, graceful_timeout: float | None) -> None:
    """Serve every installed provider over an OpenAI-compatible API (/v1), a REST and
    WebSocket API (/api, /ws) and /openapi.json, until Ctrl-C."""
    import os

    from modelplex.config import set_config
    from modelplex_server.app import AppServer, create_app, serve as run
    from modelplex_server.settings import load_server_config
    from modelplex_server.sqlite_store import open_store
    from modelplex_server.workers import WORKER_ENV, watch_parent, worker_ready

    config, settings = load_server_config(config_path, host=host, port=port,
                                          max_concurrency=max_concurrency,
                                          access_log=False if no_access_log else None,
                                          conversations=conversations, store=store,
                                          workers=workers, shutdown_timeout=graceful_timeout)
    # The served file is the process's config too: what is read process-wide (the
    # Retry-After cap, [prices], [telemetry] content capture) comes from it, not another file.
    set_config(config)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    worker = os.environ.get(WORKER_ENV, "").partition(":")[0]
    if settings.workers > 1 and not worker:
        passed = {"--config": config_path, "--host": host,
                  "--max-concurrency": max_concurrency, "--conversations": conversations,
                  "--store": store, "--graceful-timeout": graceful_timeout}
        args = [part for name, value in passed.items() if value is not None
                for part in (name, str(value))]
        sys.exit(_supervise(settings, [*args, *(["--no-access-log"] if no_access_log
                                                  else [])]))
    kept_in = open_store(settings.store or settings.conversations)
    app = create_app(settings, config=config, conversations=kept_in,
                     logs=_log_database(config))

    def ready(server: AppServer) -> None:
        if worker:
            click.echo(f"worker {worker} (pid {os.getpid()}) listening on {server.url}",
                       err=True)
            worker_ready(server.sockets)  # checked to be listening in the port's group
            _settle_heap()
            return
        keys = f"{len(settings.keys)} API keys" if settings.keys else "no API keys"
        kept = getattr(kept_in, "path", None) or kept_in.describe()
        click.echo(f"modelplex serving on {server.url} ({keys}); conversations in {kept}; "
                   f"OpenAI base URL "
                   f"{server.url}/v1, API description {server.url}/openapi.json. "
                   "Ctrl-C stops.", err=True)
        _settle_heap()

    if worker:
        watch_parent()
    asyncio.run(run(app, on_ready=ready, reuse_port=bool(worker)))


def _supervise(settings: ServerSettings, args: list[str]) -> int:
    """Run ``settings.workers`` workers on one port (:mod:`modelplex_server.workers`)."""
    from modelplex.errors import ConfigurationError
    from modelplex_server.app import _bind_error, bind_host
    from modelplex_server.workers import Supervisor, reserve_port, worker_command

    host = bind_host(settings)
    try:
        reserved = reserve_port(host, settings.port)
    except OSError as err:
        raise ConfigurationError(_bind_error(host, settings.port, err)) from None
    with reserved:
        port = reserved.getsockname()[1]
        command = worker_command(["serve", *args, "--host", host, "--port", str(port),
                                  "--workers", "1"])
        supervisor = Supervisor(command, settings.workers,
                                graceful_timeout=settings.shutdown_timeout)
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

        def ready() -> None:
            keys = f"{len(settings.keys)} API keys" if settings.keys else "no API keys"
            click.echo(f"modelplex serving on {url} ({keys}; {settings.workers} workers); "
                       f"OpenAI base URL {url}/v1, API description {url}/openapi.json. "
                       "Ctrl-C stops.", err=True)

        return supervisor.run(ready)


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


@click.group("keys")
def keys() -> None:
    """API keys kept in the server's store (shared by every worker and replica using it):
    create, list, revoke."""


def _store_options(func: Any) -> Any:
    func = click.option("--store", metavar="URL|PATH",
                        help="The store (default: [server] store of the config).")(func)
    return click.option("--config", "config_path", type=click.Path(dir_okay=False),
                        help="The modelplex config file (default MODELPLEX_CONFIG).")(func)


def _with_store(config_path: str | None, store: str | None,
                work: Callable[[ConversationStore], Awaitable[T]]) -> T:
    """Run ``work`` on the configured store, then close it."""
    from modelplex_server.settings import load_server_config
    from modelplex_server.sqlite_store import open_store

    _, settings = load_server_config(config_path, store=store)

    async def run() -> T:
        opened = open_store(settings.store or settings.conversations)
        try:
            await opened.open()
            return await work(opened)
        finally:
            await opened.aclose()

    return asyncio.run(run())


@keys.command("create")
@click.option("--name", required=True, help="The key's name (shown in logs, owns its "
                                            "conversations).")
@click.option("--rpm", type=click.IntRange(min=1), help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(min=1), help="Tokens per minute.")
@click.option("--concurrency", type=click.IntRange(min=1), help="Requests at once.")
@click.option("--budget", metavar="AMOUNT/PERIOD",
              help="Spend per day, week or month: '50/month' (USD) or '2M tokens/day'.")
@click.option("--models", metavar="IDS", help="Comma-separated model ids (glob patterns) "
                                              "the key may use; all if unset.")
@click.option("--admin", is_flag=True, help="May manage keys and see every conversation.")
@_store_options
def keys_create(name: str, rpm: int | None, tpm: int | None, concurrency: int | None,
                budget: str | None, models: str | None, admin: bool,
                config_path: str | None, store: str | None) -> None:
    """Make a key: prints it once (only its hash is kept)."""
    from pydantic import ValidationError

    from modelplex.errors import ConfigurationError
    from modelplex_server.conversations import KeyExistsError
    from modelplex_server.errors import ApiError
    from modelplex_server.keys import KeyCreate, make_key

    try:
        spec = KeyCreate(name=name, rate_limit=rpm, tpm=tpm, concurrency=concurrency,
                         budget=budget, admin=admin,
                         models=[m.strip() for m in models.split(",") if m.strip()]
                         if models else None)
    except ValidationError as err:
        # name the option, not the model's field, and drop pydantic's "Value error, "
        options = {"rate_limit": "--rpm"}
        hints = sorted({repr(options.get(str(e["loc"][0]), "--" + str(e["loc"][0])))
                        for e in err.errors() if e["loc"]})
        raise click.BadParameter(
            "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in err.errors()),
            param_hint=" / ".join(hints) or None) from None
    try:
        secret, stored = _with_store(config_path, store, lambda s: make_key(s, spec))
    except (KeyExistsError, ApiError) as err:
        raise ConfigurationError(str(err)) from None
    click.echo(f"API key (shown once): {secret}", err=True)
    click.echo(f"created key {stored.key.name!r}: {_limits_text(stored.key)}")


def _limits_text(key: KeyConfig) -> str:
    parts = [f"{key.rate_limit} requests/min" if key.rate_limit else None,
             f"{key.tpm} tokens/min" if key.tpm else None,
             f"{key.concurrency} at once" if key.concurrency else None,
             f"budget {key.budget}" if key.budget else None,
             "models " + ", ".join(key.models) if key.models is not None else "all models",
             "admin" if key.admin else None]
    return ", ".join(p for p in parts if p)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@_store_options
def keys_list(as_json: bool, config_path: str | None, store: str | None) -> None:
    """The store's keys (revoked ones too), with their limits and this period's spend."""
    import json

    from modelplex_server.budgets import Budget, period_bounds

    async def work(opened: ConversationStore) -> list[dict[str, Any]]:
        rows = []
        for stored in await opened.list_keys():
            row = stored.public()
            if stored.key.budget:
                budget = Budget.parse(stored.key.budget)
                period, _, _ = period_bounds(budget.period)
                row["budget"] = budget.describe(await opened.get_spend(stored.key.name, period))
            rows.append(row)
        return rows

    rows = _with_store(config_path, store, work)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("no keys (make one with `modelplex keys create --name NAME`)")
        return
    click.echo(f"{'NAME':<16} {'STATUS':<8} {'RPM':>6} {'TPM':>8} {'BUDGET':<22} "
               f"{'SPENT':>12}  MODELS")
    for row in rows:
        budget = row["budget"] if isinstance(row["budget"], dict) else None
        spent = ("-" if budget is None else f"{budget['spent']:.2f}" if budget["unit"] == "usd"
                 else str(int(budget["spent"])))
        click.echo(f"{row['name']:<16} {'revoked' if row['revoked_at'] else 'active':<8} "
                   f"{row['rate_limit'] or '-':>6} {row['tpm'] or '-':>8} "
                   f"{_budget_text(row):<22} "
                   f"{spent:>12}  {','.join(row['models']) if row['models'] else '*'}")


def _budget_text(row: dict[str, Any]) -> str:
    budget = row.get("budget")
    if not isinstance(budget, dict):
        return "-"
    amount = budget["amount"]
    return (f"{int(amount)} tokens/{budget['period']}" if budget["unit"] == "tokens"
            else f"{amount:g} USD/{budget['period']}")


@keys.command("revoke")
@click.argument("name")
@_store_options
def keys_revoke(name: str, config_path: str | None, store: str | None) -> None:
    """Revoke the key NAME (within seconds on every server using the store)."""
    from modelplex.errors import ConfigurationError

    async def work(opened: ConversationStore) -> bool:
        return await opened.revoke_key(name)

    if not _with_store(config_path, store, work):
        raise ConfigurationError(f"no active key {name!r} in the store")
    click.echo(f"revoked key {name!r}")
