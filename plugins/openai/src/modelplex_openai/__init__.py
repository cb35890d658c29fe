"""modelplex-openai: OpenAI and every OpenAI-compatible server, one provider name per endpoint.

Importing this module does no I/O and imports nothing heavy: the provider and the endpoint
configuration are loaded when modelplex asks for providers.
"""

from __future__ import annotations

from typing import Any

from modelplex.hookspecs import Register, hookimpl
from modelplex_openai.__about__ import __version__

__all__ = ["__version__", "register_providers"]


def _broken(message: str) -> Any:
    def factory(**_config: Any) -> Any:
        from modelplex.errors import ConfigurationError

        raise ConfigurationError(message)

    return factory


@hookimpl
def register_providers(register: Register) -> None:
    """Register ``openai`` and one provider per configured endpoint."""
    from functools import partial

    from modelplex.errors import ConfigurationError
    from modelplex_openai.config import load_endpoints
    from modelplex_openai.provider import OpenAIProvider

    try:
        endpoints = load_endpoints()
    except ConfigurationError as err:
        # the provider stays listed and says what is wrong when used, instead of vanishing
        register(_broken(str(err)), name=OpenAIProvider.name)
        return
    register(OpenAIProvider)
    for endpoint in endpoints:
        if endpoint.error:
            register(_broken(endpoint.error), name=endpoint.name)
        else:
            register(partial(OpenAIProvider, **endpoint.provider_kwargs()), name=endpoint.name)
