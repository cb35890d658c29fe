"""modelplex-lmstudio: LM Studio's local server as the ``lmstudio`` provider.

Importing this module does no I/O; the provider is imported when modelplex asks for it.
"""

from __future__ import annotations

from modelplex.hookspecs import Register, hookimpl
from modelplex_lmstudio.__about__ import __version__

__all__ = ["__version__", "register_providers"]


@hookimpl
def register_providers(register: Register) -> None:
    """Register the ``lmstudio`` provider."""
    from modelplex_lmstudio.provider import LMStudioProvider

    register(LMStudioProvider)
