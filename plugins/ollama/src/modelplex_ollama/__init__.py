"""modelplex-ollama: the Ollama provider for modelplex.

This module holds only the plugin hooks; the provider is imported when it is first needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelplex.hookspecs import Register, hookimpl
from modelplex_ollama.__about__ import __version__

if TYPE_CHECKING:
    import click

__all__ = ["__version__", "register_commands", "register_providers"]


@hookimpl
def register_providers(register: Register) -> None:
    """Register :class:`~modelplex_ollama.provider.OllamaProvider` as ``ollama``."""
    from modelplex_ollama.provider import OllamaProvider

    register(OllamaProvider)


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add the ``modelplex ollama`` command group (copy, version)."""
    from modelplex_ollama.cli import ollama

    cli.add_command(ollama)
