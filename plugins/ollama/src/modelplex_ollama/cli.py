"""``modelplex ollama ...``: the Ollama-only commands (the provider is imported on use)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:
    from modelplex_ollama.provider import OllamaProvider

T = TypeVar("T")

__all__ = ["ollama"]


def _with_provider(host: str | None, action: Callable[[OllamaProvider], Awaitable[T]]) -> T:
    from modelplex_ollama.provider import OllamaProvider

    async def run() -> T:
        provider = OllamaProvider(host=host)
        try:
            return await action(provider)
        finally:
            await provider.aclose()

    return asyncio.run(run())


@click.group()
@click.option("--host", help="The Ollama server (default: OLLAMA_HOST, else 127.0.0.1:11434).")
@click.pass_context
def ollama(ctx: click.Context, host: str | None) -> None:
    """Ollama-only commands (model management works through `modelplex models`)."""
    ctx.obj = host


@ollama.command()
@click.pass_obj
def version(host: str | None) -> None:
    """Print the Ollama server's version."""
    click.echo(_with_provider(host, lambda p: p.version()))


@ollama.command()
@click.argument("source")
@click.argument("destination")
@click.pass_obj
def copy(host: str | None, source: str, destination: str) -> None:
    """Copy the model SOURCE under the new name DESTINATION."""
    _with_provider(host, lambda p: p.copy_model(source, destination))
    click.echo(f"copied {source} to {destination}")
