"""modelplex-huggingface: Hugging Face's router, TGI and TEI, one provider name per endpoint.

Importing this module does no I/O and imports nothing heavy: the providers and the endpoint
configuration are loaded when modelplex asks for providers.
"""

from __future__ import annotations

from typing import Any

from modelplex.hookspecs import Register, hookimpl
from modelplex_huggingface.__about__ import __version__

__all__ = ["__version__", "provider_class", "register_providers"]


def provider_class(kind: str) -> Any:
    """The provider class of an endpoint kind: ``router``, ``tgi`` or ``tei``."""
    if kind == "tgi":
        from modelplex_huggingface.tgi import TGIProvider

        return TGIProvider
    if kind == "tei":
        from modelplex_huggingface.tei import TEIProvider

        return TEIProvider
    from modelplex_huggingface.router import HFRouterProvider

    return HFRouterProvider


def _broken(message: str) -> Any:
    def factory(**_config: Any) -> Any:
        from modelplex.errors import ConfigurationError

        raise ConfigurationError(message)

    return factory


@hookimpl
def register_providers(register: Register) -> None:
    """Register ``huggingface``, ``tgi``, ``tei`` and one provider per configured endpoint."""
    from functools import partial

    from modelplex_huggingface.config import load_endpoints

    for kind in ("router", "tgi", "tei"):
        register(provider_class(kind))
    for endpoint in load_endpoints():
        if endpoint.error:
            register(_broken(endpoint.error), name=endpoint.name)
        else:
            register(partial(provider_class(endpoint.settings["kind"]),
                             **endpoint.provider_kwargs(exclude=("kind",))),
                     name=endpoint.name)
