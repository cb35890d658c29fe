"""From a model id in a request to the provider that answers it: the server's one seam.

Every endpoint that talks to a model calls :meth:`ModelResolver.resolve_model`; the server
never builds requests to providers another way. A model id is a named model of the settings
(``fast``) or ``provider:model`` (``ollama:llama3.2``, ``llamacpp:smollm2``).

Providers are created once per server and shared by every request (and by the model
registry); they are closed when the server stops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from modelplex.errors import ConfigurationError
from modelplex.manager import create_provider, parse_model_spec
from modelplex.plugins import Plugins, get_plugins
from modelplex.provider import Provider

__all__ = ["ModelResolver"]


class ModelResolver:
    """Resolves model ids to ``(provider, model name)`` over a shared provider pool.

    Args:
        plugins: where providers come from (default: the process-wide plugins).
        named_models: model ids that stand for a ``provider:model``.
        provider_config: keyword configuration per provider name.
    """

    def __init__(self, *, plugins: Plugins | None = None,
                 named_models: Mapping[str, str] | None = None,
                 provider_config: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.plugins = plugins or get_plugins()
        self.named_models = dict(named_models or {})
        self._config = {name: dict(cfg) for name, cfg in (provider_config or {}).items()}
        self._providers: dict[str, Provider] = {}

    def provider(self, name: str) -> Provider:
        """The shared instance of provider ``name``, created on first use."""
        provider = self._providers.get(name)
        if provider is None:
            provider = create_provider(name, self.plugins, **self._config.get(name, {}))
            self._providers[name] = provider
        return provider

    def resolve_model(self, model_id: str) -> tuple[Provider, str]:
        """The provider and model name for ``model_id``.

        Raises :class:`~modelplex.errors.UnknownProviderError` (no such provider) or
        :class:`~modelplex.errors.ConfigurationError` (not a model id).
        """
        if not model_id:
            raise ConfigurationError("model is required: name one as 'provider:model' or a "
                                     "named model (GET /v1/models lists them)")
        spec = self.named_models.get(model_id, model_id)
        provider_name, model = parse_model_spec(spec, self.plugins)
        provider = self.provider(provider_name)
        model = model or provider.default_model
        if not model:
            raise ConfigurationError(f"provider {provider_name!r} has no default model: "
                                     f"name one as '{provider_name}:MODEL'")
        return provider, model

    async def aclose(self) -> None:
        """Close every provider created."""
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            with contextlib.suppress(Exception):
                await provider.aclose()
