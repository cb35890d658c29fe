"""modelplex-server: ``modelplex serve``, an OpenAI-compatible gateway and seed 003's REST API.

This module holds only the plugin hook; the web application is imported when the command runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelplex.hookspecs import hookimpl
from modelplex_server.__about__ import __version__

if TYPE_CHECKING:
    import click

__all__ = ["__version__", "register_commands"]


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``modelplex serve`` and ``modelplex server-key``."""
    from modelplex_server.cli import keys, serve, server_key

    cli.add_command(serve)
    cli.add_command(server_key)
    cli.add_command(keys)
