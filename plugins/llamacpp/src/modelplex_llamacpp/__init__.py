"""modelplex-llamacpp: run GGUF models in-process with llama.cpp.

This module holds only the plugin's hook implementations; the provider (and llama_cpp) are
imported when modelplex asks for them.
"""

from __future__ import annotations

from modelplex.hookspecs import Register, hookimpl
from modelplex_llamacpp.__about__ import __version__

__all__ = ["__version__", "register_providers"]


@hookimpl
def register_providers(register: Register) -> None:
    """Register the ``llamacpp`` provider."""
    from modelplex_llamacpp.provider import LlamaCppProvider

    register(LlamaCppProvider)
