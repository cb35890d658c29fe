"""modelplex-ollama: the Ollama provider for modelplex.

This module holds only the plugin hooks; the provider is imported when it is first needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelplex.hookspecs import Register, hookimpl
from modelplex_ollama.__about__ import __version__

if TYPE_CHECKING:
    import click

    from modelplex_ollama.config import OllamaConfig as OllamaConfig
    from modelplex_ollama.provider import OllamaProvider as OllamaProvider

__all__ = ["OllamaConfig", "OllamaProvider", "__version__", "register_commands",
           "register_providers"]

_LAZY = {"OllamaConfig": "modelplex_ollama.config", "OllamaProvider": "modelplex_ollama.provider"}


def __getattr__(name: str) -> Any:
    """``OllamaProvider`` and ``OllamaConfig``, imported on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelplex_ollama' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
