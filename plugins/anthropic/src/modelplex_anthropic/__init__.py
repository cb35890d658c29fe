"""modelplex-anthropic: Anthropic's Messages API as the ``anthropic`` provider.

Importing this module does no I/O and imports nothing heavy; the provider is imported when
modelplex asks for it.
"""

from __future__ import annotations

from modelplex.hookspecs import Register, hookimpl
from modelplex_anthropic.__about__ import __version__

__all__ = ["__version__", "register_providers"]


@hookimpl
def register_providers(register: Register) -> None:
    """Register the ``anthropic`` provider."""
    from modelplex_anthropic.provider import AnthropicProvider

    register(AnthropicProvider)
