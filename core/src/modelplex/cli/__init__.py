"""The ``modelplex`` command.

Errors print one line and exit with status 1 (a traceback only with ``--debug``); Ctrl-C
exits with 130. Heavy modules are imported inside the command that needs them.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from modelplex import cli_timeouts
from modelplex.__about__ import __version__
from modelplex.errors import ModelplexError, redact

if TYPE_CHECKING:
    from modelplex.manager import ChatManager
    from modelplex.provider import Provider
    from modelplex.types import ModelInfo

T = TypeVar("T")

__all__ = ["cli", "main"]


def _run(coro: Awaitable[T]) -> T:
    async def runner() -> T:
        return await coro

    return asyncio.run(runner())


def parse_option_value(value: str) -> Any:
    """A ``-o KEY VALUE`` value: JSON when it parses (numbers, lists, booleans), else text."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def _options(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {key.replace("-", "_"): parse_option_value(value) for key, value in pairs}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="modelplex")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
def cli(debug: bool) -> None:
    """modelplex: talk to any language model through one command."""


# -- chat ---------------------------------------------------------------------------------------
@cli.command()
@click.argument("prompt", required=False)
@click.option("-m", "--model",
              help="provider:model (llamacpp:smollm2, ollama:llama3.2) or a named model of "
                   "the config")
@click.option("-s", "--system", help="System prompt.")
@click.option("-o", "--option", "option_pairs", nargs=2, multiple=True,
              metavar="KEY VALUE", help="Provider option, e.g. -o temperature 0.2")
@click.option("--mode", type=click.Choice(["precise", "balanced", "creative"]),
              help="Sampling preset.")
@click.option("-u", "--usage", "show_usage", is_flag=True,
              help="Print token usage and timings to stderr after the answer.")
@click.option("-t", "--template", help="Run a prompt template (see `modelplex templates`).")
@click.option("-p", "--param", "param_pairs", nargs=2, multiple=True, metavar="KEY VALUE",
              help="A template field, e.g. -p task 'What is 17 * 3?'")
@click.option("--schema", type=click.Path(dir_okay=False),
              help="Answer as JSON matching this JSON-schema file; prints the JSON.")
@click.option("--json", "as_json", is_flag=True, help="Answer with a JSON object; prints it.")
@click.option("-c", "--continue", "continue_last", is_flag=True,
              help="Continue the most recent conversation.")
@click.option("--cid", help="Continue the conversation with this id (`modelplex logs list -c`).")
@click.option("--no-log", is_flag=True, help="Do not store this conversation.")
@click.option("--cache", "cache_backend", metavar="BACKEND",
              help="Answer from a response cache when possible: memory, sqlite, redis, ...")
@cli_timeouts.timeout_options
def chat(prompt: str | None, model: str | None, system: str | None,
         option_pairs: Sequence[tuple[str, str]], mode: str | None, show_usage: bool,
         template: str | None = None, param_pairs: Sequence[tuple[str, str]] = (),
         schema: str | None = None, as_json: bool = False, continue_last: bool = False,
         cid: str | None = None, no_log: bool = False, cache_backend: str | None = None,
         **timeouts: float | None) -> None:
    """Chat with a model: one-shot with PROMPT (or stdin), interactive without.

    In the interactive session, /model provider:model switches model (the history is kept),
    /clear forgets the history and /exit leaves; Ctrl-C stops an answer. With -t, --schema or
    --json the answer is structured, validated and printed as JSON. Conversations are stored
    (see `modelplex logs`); -c continues the last one, --cid ID a given one.
    """
    from modelplex.cli_logs import chat_conversation, database_path
    from modelplex.manager import ChatManager

    if prompt is None and not sys.stdin.isatty():  # undecodable bytes are refused clearly
        prompt = sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
    config = cli_timeouts.provider_configs(timeouts)
    conversation, last_model = chat_conversation(continue_last, cid, no_log)
    model = model or last_model
    manager = ChatManager(system_prompt=system, mode=mode, options=_options(option_pairs),
                          provider_config=config, conversation=conversation,
                          cache=cache_backend, logs=database_path())
    if template or param_pairs or schema or as_json:
        from modelplex.cli_structured import run_structured_chat

        _run(run_structured_chat(manager, model, prompt, template=template, pairs=param_pairs,
                                 schema=schema, as_json=as_json, show_usage=show_usage))
        return
    if prompt is not None:
        _run(_one_shot(manager, model, prompt, show_usage))
    else:
        _interactive(manager, model, show_usage)


async def _stream_answer(chat: ChatManager, prompt: str, show_usage: bool) -> None:
    import time

    start = time.perf_counter()
    usage = None
    last_text = ""
    try:
        async for chunk in chat.send_message(prompt):
            if chunk.content:
                sys.stdout.write(chunk.content)
                sys.stdout.flush()
                last_text = chunk.content
            if chunk.usage is not None:
                usage = chunk.usage
    finally:  # end the answer's line, also when an error or Ctrl-C cuts it short
        if last_text and not last_text.endswith("\n"):
            sys.stdout.write("\n")
            sys.stdout.flush()
    if not last_text:
        sys.stdout.write("\n")
    if show_usage and usage is not None:
        estimate = " (estimated)" if usage.estimated else ""
        click.echo(f"[{chat.session.provider}:{chat.session.model}] prompt {usage.prompt_tokens}"
                   f", completion {usage.completion_tokens} tokens{estimate}, "
                   f"{time.perf_counter() - start:.2f} s", err=True)


async def _one_shot(manager: ChatManager, model: str | None, prompt: str,
                    show_usage: bool) -> None:
    async with manager as chat:
        await chat.initialize_model(model)
        await _stream_answer(chat, prompt, show_usage)


def _interactive(manager: ChatManager, model: str | None, show_usage: bool) -> None:
    # One event loop for the session, with input() outside it: Ctrl-C at the prompt leaves
    # (status 130); Ctrl-C during an answer cancels that answer, whose part is kept.
    with asyncio.Runner() as runner:
        try:
            session = runner.run(manager.initialize_model(model))
            click.echo(f"Chatting with {session.provider}:{session.model}. Type /exit to leave,"
                       " /model provider:model to switch, /clear to forget.", err=True)
            while (text := _next_line()) not in ("/exit", "/quit", "exit", "quit", None):
                if text == "/clear":
                    manager.clear_history()
                elif text.startswith("/model"):
                    spec = text.removeprefix("/model").strip()
                    try:
                        session = runner.run(manager.initialize_model(spec or None))
                    except ModelplexError as err:
                        click.echo(f"Error: {redact(str(err))}", err=True)
                        continue
                    click.echo(f"Now chatting with {session.provider}:{session.model}.",
                               err=True)
                elif text:
                    try:
                        runner.run(_stream_answer(manager, text, show_usage))
                    except ModelplexError as err:
                        click.echo(f"Error: {redact(str(err))}", err=True)
                    except KeyboardInterrupt:
                        click.echo("(stopped; the part received is kept)", err=True)
        finally:
            runner.run(manager.aclose())


def _next_line() -> str | None:
    """The next line typed, stripped; ``None`` at the end of input (Ctrl-D)."""
    try:
        return input("> ").strip()
    except EOFError:
        return None


# -- models -------------------------------------------------------------------------------------
@cli.group()
def models() -> None:
    """List, inspect and manage models."""


def _provider_names(only: str | None) -> list[str]:
    from modelplex.plugins import get_plugins

    plugins = get_plugins()
    if only:
        plugins.get("providers", only)  # clear error if unknown
        return [only]
    return plugins.provider_names()


async def _with_provider(name: str, action: Callable[[Provider], Awaitable[T]]) -> T:
    from modelplex.config import get_config
    from modelplex.pool import get_pool

    timeouts = cli_timeouts.provider_configs().get(name, {})
    pool = get_pool()  # built with the config's [providers.NAME] keywords, then the timeouts
    provider = await pool.acquire(name, {**get_config().provider_kwargs(name), **timeouts})
    try:
        return await action(provider)
    finally:
        await pool.release(provider)


def _model_rows(infos: list[ModelInfo]) -> list[list[str]]:
    return [[i.id, i.family or "", i.parameter_size or "", i.quantization or "", i.size or "",
             str(i.context_length or "")] for i in infos]


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@models.command("list")
@click.option("-p", "--provider", multiple=True, help="Only this provider (repeatable).")
@click.option("-s", "--search", "query", help="Words the model's name or family must contain.")
@click.option("-c", "--capability", multiple=True,
              help="Required capability, e.g. tools, vision, embeddings, json (repeatable).")
@click.option("--min-context", type=int, help="Smallest context length in tokens.")
@click.option("--local/--remote", "local", default=None,
              help="Only in-process or loopback providers / only remote ones.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_list(provider: tuple[str, ...], query: str | None, capability: tuple[str, ...],
                min_context: int | None, local: bool | None, as_json: bool) -> None:
    """List the models of every provider, fetched concurrently (a provider that is down is
    reported, not fatal), optionally searched and filtered."""
    from modelplex.registry import ModelRegistry

    names = [n for p in provider for n in _provider_names(p)] or None

    async def gather() -> tuple[list[ModelInfo], dict[str, str]]:
        from modelplex.cli_config import configured_providers

        async with configured_providers() as (get_provider, named), ModelRegistry(
                providers=names, get_provider=get_provider, named_models=named) as registry:
            found = await registry.search(query, capability=list(capability),
                                          min_context=min_context, local=local)
            return found, await registry.errors()

    found, failed = _run(gather())
    if as_json:
        click.echo(json.dumps({"models": [m.model_dump(mode="json") for m in found],
                               "errors": failed}, indent=2))
    else:
        _print_table(["MODEL", "FAMILY", "PARAMS", "QUANT", "SIZE", "CONTEXT", "CAPABILITIES"],
                     [[*row, ",".join(m.capabilities)]
                      for row, m in zip(_model_rows(found), found, strict=True)])
        for name, err in failed.items():
            click.echo(f"{name}: unavailable: {err}", err=True)
    if failed and not found and len(failed) == len(names or _provider_names(None)):
        sys.exit(1)


@models.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_show(name: str, as_json: bool) -> None:
    """Show one model, named provider:model."""
    from modelplex.specs import parse_model_spec

    provider_name, model = parse_model_spec(name)

    async def show(p: Provider) -> ModelInfo:
        return await p.show_model(model or p.default_model or "")

    info = _run(_with_provider(provider_name, show))
    data = info.model_dump(mode="json")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        if value not in (None, [], {}):
            click.echo(f"{key:15} {value}")


@models.command("pull")
@click.argument("name")
def models_pull(name: str) -> None:
    """Download a model, named provider:model, with a progress bar."""
    from modelplex.specs import parse_model_spec

    provider_name, model = parse_model_spec(name)
    if not model:
        raise click.UsageError("name the model to pull as provider:model")

    async def pull(p: Provider) -> None:
        from modelplex.progress import ProgressBar

        bar = ProgressBar(sys.stderr)
        async for event in p.pull_model(model):
            bar.update(event)
        bar.finish()

    _run(_with_provider(provider_name, pull))


@models.command("rm")
@click.argument("name")
def models_rm(name: str) -> None:
    """Delete a model, named provider:model."""
    from modelplex.specs import parse_model_spec

    provider_name, model = parse_model_spec(name)
    if not model:
        raise click.UsageError("name the model to delete as provider:model")
    _run(_with_provider(provider_name, lambda p: p.delete_model(model)))
    click.echo(f"deleted {name}")


@models.command("ps")
@click.option("-p", "--provider", help="Only this provider.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_ps(provider: str | None, as_json: bool) -> None:
    """List the models loaded in memory now."""
    from modelplex.errors import UnsupportedOperationError

    async def gather() -> list[ModelInfo]:
        found: list[ModelInfo] = []
        for name in _provider_names(provider):
            try:
                found += await _with_provider(name, lambda p: p.list_loaded_models())
            except UnsupportedOperationError:
                continue
            except ModelplexError as err:
                click.echo(f"{name}: unavailable: {err}", err=True)
        return found

    found = _run(gather())
    if as_json:
        click.echo(json.dumps([m.model_dump(mode="json") for m in found], indent=2))
    else:
        _print_table(["MODEL", "SIZE", "CONTEXT"],
                     [[m.id, m.size or "", str(m.context_length or "")] for m in found])


# -- providers and plugins ----------------------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def providers(as_json: bool) -> None:
    """Each installed provider and whether it is healthy."""
    from modelplex.types import HealthStatus

    async def check(name: str) -> HealthStatus:
        try:
            return await asyncio.wait_for(_with_provider(name, lambda p: p.health()), 30)
        except ModelplexError as err:
            return HealthStatus(provider=name, healthy=False, detail=str(err))
        except TimeoutError:
            return HealthStatus(provider=name, healthy=False, detail="no answer within 30 s")

    async def gather() -> list[HealthStatus]:
        return list(await asyncio.gather(*(check(n) for n in _provider_names(None))))

    statuses = _run(gather())
    if as_json:
        click.echo(redact(json.dumps([s.model_dump(mode="json") for s in statuses], indent=2)))
        return
    if not statuses:
        click.echo("No providers installed. Install one, e.g. `pip install modelplex-llamacpp`.")
    for s in statuses:
        state = "ok" if s.healthy else "unavailable"
        extra = [f"{s.model_count} models"] if s.model_count is not None else []
        if s.version:
            extra.append(f"version {s.version}")
        if s.detail:
            extra.append(redact(s.detail))
        click.echo(f"{s.provider:12} {state:12} {'; '.join(extra)}".rstrip())


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--all", "include_builtins", is_flag=True, help="Include the built-ins.")
def plugins(as_json: bool, include_builtins: bool) -> None:
    """Installed plugins: name, version, hooks and load error if any."""
    from modelplex.plugins import list_plugins

    infos = list_plugins(include_builtins=include_builtins)
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    if not infos:
        click.echo("No plugins installed.")
    for info in infos:
        line = f"{info.name:12} {info.version or '-':10} {', '.join(info.hooks)}"
        click.echo(line + (f"\n    error: {info.error}" if info.error else ""))


def _add_lazy_commands() -> None:
    from modelplex.cli_cache import cache
    from modelplex.cli_logs import logs
    from modelplex.cli_structured import templates

    cli.add_command(templates)
    cli.add_command(cache)
    cli.add_command(logs)


_add_lazy_commands()


# -- config and stats (modelplex.cli_config) ---------------------------------------------------
def _register_config_commands() -> None:
    from modelplex.cli_config import register

    register(cli)


_register_config_commands()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``modelplex`` command."""
    from modelplex import env

    args = list(sys.argv[1:] if argv is None else argv)
    end = args.index("--") if "--" in args else len(args)  # after `--`, --debug is a prompt
    debug = "--debug" in args[:end]
    if debug:  # accepted anywhere before `--`, not only before the command
        args = ["--debug", *(a for a in args[:end] if a != "--debug"), *args[end:]]
    try:
        debug = debug or env.debug()
        from modelplex.plugins import get_plugins

        get_plugins().add_commands(cli)
        cli.main(args=args, prog_name="modelplex", standalone_mode=False)
    except ModelplexError as err:
        if debug:
            traceback.print_exc()
        click.echo(f"Error: {redact(str(err))}", err=True)
        sys.exit(1)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.Abort as err:
        if isinstance(err.__cause__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            sys.exit(130)
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as err:  # the output could not be written: a full disk, a closed pipe
        if debug:
            traceback.print_exc()
        _silence_stdout()
        if not isinstance(err, BrokenPipeError):
            what = "cannot write the output" if err.errno in _OUTPUT_ERRNOS else "error"
            click.echo(f"Error: {what}: {err.strerror or err}"
                       + (f": {err.filename}" if err.filename else ""), err=True)
        sys.exit(1)


_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EPIPE, errno.EIO, errno.EBADF, errno.EDQUOT}


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that flushing it at exit fails no more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):
        pass
