"""``modelplex chat``: one-shot or interactive chat, plain or structured (``-t``, ``--schema``,
``--json``), continuing a stored conversation with ``-c``/``--cid``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from modelplex import interrupt
from modelplex.cli._common import options, run
from modelplex.cli.logs import chat_conversation, database_path
from modelplex.cli.structured import run_structured_chat
from modelplex.cli.timeouts import provider_configs, timeout_options
from modelplex.errors import ConfigurationError, ModelplexError, redact

if TYPE_CHECKING:
    from modelplex.manager import ChatManager

__all__ = ["chat"]


@click.command()
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
@click.option("--mcp", "mcp_names", multiple=True, metavar="NAME",
              help="Offer the tools of this configured MCP server (repeatable).")
@click.option("--resource", "resources", multiple=True, metavar="SERVER:URI",
              help="Attach an MCP server's resource to the prompt as context (repeatable).")
@timeout_options
def chat(prompt: str | None, model: str | None, system: str | None,
         option_pairs: Sequence[tuple[str, str]], mode: str | None, show_usage: bool,
         template: str | None = None, param_pairs: Sequence[tuple[str, str]] = (),
         schema: str | None = None, as_json: bool = False, continue_last: bool = False,
         cid: str | None = None, no_log: bool = False, cache_backend: str | None = None,
         mcp_names: Sequence[str] = (), resources: Sequence[str] = (),
         **timeouts: float | None) -> None:
    """Chat with a model: one-shot with PROMPT (or stdin), interactive without.

    In the interactive session, /model provider:model switches model (the history is kept),
    /clear forgets the history and /exit leaves; Ctrl-C stops an answer. With -t, --schema or
    --json the answer is structured, validated and printed as JSON. Conversations are stored
    (see `modelplex logs`); -c continues the last one, --cid ID a given one. --mcp NAME
    lets the model call the tools of an [mcp.NAME] server (destructive ones after a y/n);
    --resource SERVER:URI puts an MCP resource before PROMPT as context.
    """
    from modelplex.cli.mcp import ask_confirmation
    from modelplex.manager import ChatManager

    if prompt is None and not sys.stdin.isatty():  # undecodable bytes are refused clearly
        prompt = _read_stdin()
    config = provider_configs(timeouts)
    conversation, last_model = chat_conversation(continue_last, cid, no_log)
    model = model or last_model
    manager = ChatManager(system_prompt=system, mode=mode, options=options(option_pairs),
                          provider_config=config, conversation=conversation,
                          cache=cache_backend, logs=database_path(), mcp=mcp_names,
                          confirm=ask_confirmation)
    if resources and (prompt is None or template or param_pairs or schema or as_json):
        raise click.UsageError("--resource attaches context to a PROMPT: give one (and no "
                               "-t, --schema or --json)")
    if template or param_pairs or schema or as_json:
        run(run_structured_chat(manager, model, prompt, template=template, pairs=param_pairs,
                                 schema=schema, as_json=as_json, show_usage=show_usage))
        return
    if prompt is not None:
        if not prompt.strip():
            raise ConfigurationError("the prompt is empty: give it as PROMPT "
                                     "(modelplex chat \"...\") or on standard input, or run "
                                     "modelplex chat alone in a terminal to chat")
        run(_one_shot(manager, model, prompt, show_usage, tuple(resources)))
    else:
        _interactive(manager, model, show_usage)


def _read_stdin() -> str:
    """The prompt piped to standard input, read up to the longest message accepted (so a
    gigabyte piped in by mistake is refused without being held in memory)."""
    from modelplex import env

    limit = env.max_message_length()
    data = sys.stdin.buffer.read(limit * 4 + 1)  # UTF-8 takes at most 4 bytes a character
    if len(data) > limit * 4:
        raise ConfigurationError(
            f"standard input holds more than {limit:,} characters, the longest message "
            "accepted: shorten it or raise MODELPLEX_MAX_MESSAGE_LENGTH")
    return data.decode("utf-8", "surrogateescape")


async def _stream_answer(chat: ChatManager, prompt: str, show_usage: bool,
                         resources: Sequence[str] = ()) -> None:
    import time

    start = time.perf_counter()
    if chat.mcp_servers or resources:  # the tool loop, MCP context: whole answers
        meta = await chat.get_response_with_meta(prompt, resources=resources or None)
        click.echo(meta.content)
        if show_usage:
            click.echo(f"[{chat.session.provider}:{chat.session.model}] prompt "
                       f"{meta.prompt_tokens}, completion {meta.completion_tokens} tokens, "
                       f"{time.perf_counter() - start:.2f} s", err=True)
        return
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
                    show_usage: bool, resources: Sequence[str] = ()) -> None:
    async with manager as chat:
        await chat.initialize_model(model)
        await _stream_answer(chat, prompt, show_usage, resources)


def _interactive(manager: ChatManager, model: str | None, show_usage: bool) -> None:
    # One event loop for the session, with input() outside it: Ctrl-C at the prompt leaves
    # (status 130); Ctrl-C during an answer cancels that answer, whose part is kept.
    with asyncio.Runner() as runner:
        try:
            session = interrupt.run(manager.initialize_model(model), runner)
            click.echo(f"Chatting with {session.provider}:{session.model}. Type /exit to leave,"
                       " /model provider:model to switch, /clear to forget.", err=True)
            while (text := _next_line()) not in ("/exit", "/quit", "exit", "quit", None):
                if text == "/clear":
                    manager.clear_history()
                elif text.startswith("/model"):
                    spec = text.removeprefix("/model").strip()
                    try:
                        session = interrupt.run(manager.initialize_model(spec or None),
                                                runner)
                    except ModelplexError as err:
                        click.echo(f"Error: {redact(str(err))}", err=True)
                        continue
                    click.echo(f"Now chatting with {session.provider}:{session.model}.",
                               err=True)
                elif text:
                    try:
                        interrupt.run(_stream_answer(manager, text, show_usage), runner)
                    except ModelplexError as err:
                        click.echo(f"Error: {redact(str(err))}", err=True)
                    except KeyboardInterrupt:
                        click.echo("(stopped; the part received is kept)", err=True)
        finally:
            interrupt.run(manager.aclose(), runner)


def _next_line() -> str | None:
    """The next line typed, stripped; ``None`` at the end of input (Ctrl-D)."""
    try:
        if sys.stdin.isatty() and sys.stdout.isatty():
            return input("> ").strip()  # GNU readline: line editing and history
        return interrupt.read_line("> ").strip()  # input() could miss a Ctrl-C
    except EOFError:
        return None
