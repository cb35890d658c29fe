"""``modelplex logs``: the stored conversations; and what ``modelplex chat -c/--cid`` continues."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from modelplex.errors import ConfigurationError

if TYPE_CHECKING:
    from modelplex.store.logs import ConversationsConfig, Exchange, LogStore

__all__ = ["chat_conversation", "logs"]


def _conversations_config() -> ConversationsConfig:
    from modelplex.config import get_config
    from modelplex.store.logs import ConversationsConfig

    return ConversationsConfig.parse(get_config().conversations)


def database_path() -> str | None:
    """The log database of the config file's ``[conversations] path``, else ``None``
    (the default in the data dir)."""
    return _conversations_config().path


def _store(database: str | None) -> LogStore:
    """The log store to read: ``--database`` (which must exist: reading a misspelt path made
    an empty database there, folders included), else the configured or default one."""
    from pathlib import Path

    from modelplex.store.logs import LogStore

    if database is not None and not Path(database).expanduser().exists():
        raise ConfigurationError(f"--database {database}: no such file; check the path "
                                 "(`modelplex logs path` prints the one modelplex chat uses)")
    return LogStore(database or database_path())


def chat_conversation(continue_last: bool, cid: str | None, no_log: bool
                      ) -> tuple[str | bool | None, str | None]:
    """The ``conversation=`` of ``modelplex chat`` and the model to use if none is given.

    ``-c`` continues the most recent conversation and ``--cid`` a given one, with the model
    it last used; otherwise a new conversation is logged unless logs are off or ``--no-log``.
    """
    from modelplex.store.logs import logs_enabled

    if not continue_last and cid is None:
        off = no_log or not logs_enabled() or not _conversations_config().log
        return (None if off else True), None
    store = _store(None)
    try:
        if cid is None:
            cid = store.last_conversation_id()
            if cid is None:
                raise ConfigurationError("no conversation to continue yet: start one with "
                                         "`modelplex chat`")
        last = store.recent(limit=1, conversation_id=cid)
        if not last and store.conversation(cid) is None:
            raise ConfigurationError(f"no conversation with id {cid!r}; "
                                     "`modelplex logs list -c` lists them")
        model = f"{last[0].provider}:{last[0].model}" if last else None
    finally:
        store.close()
    return cid, model


def _echo_exchange(ex: Exchange, *, full: bool) -> None:
    usage = ""
    if ex.prompt_tokens is not None or ex.completion_tokens is not None:
        usage = f", {ex.prompt_tokens or 0} + {ex.completion_tokens or 0} tokens"
    latency = f", {ex.latency:.2f} s" if ex.latency is not None else ""
    cached = ", cached" if ex.cached else ""
    click.echo(f"## {ex.created_at}  #{ex.id}  conversation {ex.conversation_id}  "
               f"{ex.provider}:{ex.model}{usage}{latency}{cached}")
    prompt, response = ex.prompt, ex.response
    if not full:
        prompt = prompt if len(prompt) <= 200 else prompt[:200] + "..."
        response = response if len(response) <= 400 else response[:400] + "..."
    click.echo(f"> {prompt}")
    if response:
        click.echo(response)
    if ex.error:
        click.echo(f"[error: {ex.error}]")
    click.echo()


def _output(exchanges: list[Exchange], as_json: bool, *, full: bool = False) -> None:
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in exchanges], indent=2))
        return
    for ex in exchanges:
        _echo_exchange(ex, full=full)


database_option = click.option("--database", type=click.Path(dir_okay=False),
                               help="The log database (default: the user's data dir).")


@click.group()
def logs() -> None:
    """Stored conversations: list, show, search; turn logging by `chat` on or off."""


@logs.command("list")
@click.option("-n", "--count", default=10, show_default=True, help="How many (0: all).")
@click.option("--cid", help="Only this conversation.")
@click.option("-c", "--conversations", is_flag=True, help="List conversations instead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@database_option
def logs_list(count: int, cid: str | None, conversations: bool, as_json: bool,
              database: str | None) -> None:
    """The newest exchanges (or conversations), newest first."""
    store = _store(database)
    try:
        if conversations:
            convs = store.conversations(limit=count or None)
            if as_json:
                click.echo(json.dumps([c.to_dict() for c in convs], indent=2))
            for c in [] if as_json else convs:
                click.echo(f"{c.id}  {c.updated_at}  {c.exchange_count:4} exchanges  "
                           f"{c.model or ''}".rstrip())
            return
        _output(store.recent(limit=count or None, conversation_id=cid), as_json)
    finally:
        store.close()


@logs.command("show")
@click.argument("cid")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@database_option
def logs_show(cid: str, as_json: bool, database: str | None) -> None:
    """Every exchange of conversation CID, oldest first."""
    store = _store(database)
    try:
        exchanges = store.exchanges(cid)
        if not exchanges and store.conversation(cid) is None:
            raise ConfigurationError(f"no conversation with id {cid!r}; "
                                     "`modelplex logs list -c` lists them")
        _output(exchanges, as_json, full=True)
    finally:
        store.close()


@logs.command("search")
@click.argument("query")
@click.option("-n", "--count", default=10, show_default=True, help="How many at most.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@database_option
def logs_search(query: str, count: int, as_json: bool, database: str | None) -> None:
    """Exchanges whose prompt or answer match QUERY (SQLite full-text search), best first."""
    store = _store(database)
    try:
        _output(store.search(query, limit=count), as_json)
    finally:
        store.close()


@logs.command("on")
def logs_on() -> None:
    """Log `modelplex chat` conversations (the default)."""
    from modelplex.store.logs import set_logs_enabled

    set_logs_enabled(True)
    click.echo("Logging is on.")


@logs.command("off")
def logs_off() -> None:
    """Stop logging `modelplex chat` conversations (`-c`/`--cid` still log theirs)."""
    from modelplex.store.logs import set_logs_enabled

    set_logs_enabled(False)
    click.echo("Logging is off.")


@logs.command("status")
def logs_status() -> None:
    """Whether logging is on, where the database is, and what it holds."""
    from pathlib import Path

    from modelplex.store.logs import default_path, logs_enabled

    on = logs_enabled() and _conversations_config().log
    click.echo(f"Logging is {'on' if on else 'off'}.")
    path = Path(database_path() or default_path()).expanduser()
    click.echo(f"Database: {path}")
    if path.exists():
        store = _store(None)
        try:
            count = len(store.conversations(limit=None))
            exchanges = store.exchange_count()
            click.echo(f"{count} conversations, {exchanges} exchanges, schema version "
                       f"{store.version}")
        finally:
            store.close()


@logs.command("path")
def logs_path() -> None:
    """Print the path of the log database."""
    from modelplex.store.logs import default_path

    click.echo(str(database_path() or default_path()))
