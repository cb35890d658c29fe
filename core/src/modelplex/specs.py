"""Model specs: ``"provider:model"`` to a provider name and model, and providers by name.

Both are used wherever a model is named: :class:`~modelplex.manager.ChatManager`, the provider
pool, the request pipeline, the registry and the CLI. (Re-exported from
:mod:`modelplex.manager`, where they were defined at first.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from modelplex import env
from modelplex._keywords import check_keywords
from modelplex.errors import ConfigurationError, ModelplexError, did_you_mean
from modelplex.plugins import Plugins, get_plugins
from modelplex.provider import Provider
from modelplex.types import ModelConfig

__all__ = ["DEFAULT_PROVIDER", "create_provider", "get_available_providers", "model_and_options",
           "parse_model_spec"]

DEFAULT_PROVIDER = "llamacpp"
"""The provider used when no model is named and none is configured."""


def parse_model_spec(spec: str | None, plugins: Plugins | None = None) -> tuple[str, str | None]:
    """Split ``"provider:model"`` into ``(provider, model)``.

    ``"ollama"`` alone means that provider's default model; ``None`` means the configured
    default (``MODELPLEX_DEFAULT_MODEL``, else the embedded llama.cpp provider). Model names may
    contain colons (``ollama:llama3.2:latest``); the part before the first colon must be an
    installed provider.
    """
    plugins = plugins or get_plugins()
    if spec:
        head, sep, rest = spec.partition(":")
        if head in plugins.registry("providers"):  # the usual case, without sorting names
            return head, (rest or None)
    names = plugins.provider_names()
    if not spec:
        spec = env.default_model() or ""
    if not spec:
        if DEFAULT_PROVIDER in names:
            return DEFAULT_PROVIDER, None
        if len(names) == 1:
            return names[0], None
        raise ConfigurationError(
            "no model given: pass one as 'provider:model' (e.g. -m ollama:llama3.2) or set "
            "MODELPLEX_DEFAULT_MODEL; installed providers: " + (", ".join(names) or "none"))
    head, sep, rest = spec.partition(":")
    if head in names:
        return head, (rest or None)
    if sep or not names:
        plugins.get("providers", head)  # raises UnknownProviderError listing the installed ones
    raise ConfigurationError(
        f"model {spec!r}{_near_name(spec, names)} does not name a provider: write it as "
        "'provider:model' "
        f"(installed providers: {', '.join(names)}); to add a provider, "
        f"`pip install modelplex-{head}` or see `modelplex plugins`")


def model_and_options(model: Any, options: Mapping[str, Any] | None
                      ) -> tuple[str | None, Mapping[str, Any] | None]:
    """The spec of ``model`` (a spec, a name or ``None`` as they are; a
    :class:`~modelplex.types.ModelConfig`'s name) and the options to use (``options`` over a
    ModelConfig's sampling settings). Anything else is a :class:`ConfigurationError`."""
    if isinstance(model, ModelConfig):
        return model.name, {**model.request_options(), **(options or {})}
    if model is not None and not isinstance(model, str):
        raise ConfigurationError("model must be 'provider:model', a model name or a "
                                 f"modelplex.ModelConfig (got {type(model).__name__})")
    return model, options


def _near_name(spec: str, providers: list[str]) -> str:
    """`` (did you mean 'fast'?)`` for a misspelt provider or named model of the config."""
    from modelplex.config import get_config

    try:
        named = list(get_config().models)
    except ModelplexError:  # a broken config file is reported elsewhere
        named = []
    return did_you_mean(spec, [*providers, *named])


def create_provider(name: str, config: Mapping[str, Any] | Plugins | Any = None, /, *,
                    plugins: Plugins | None = None, **kwargs: Any) -> Provider:
    """Build the provider registered as ``name`` with its configuration.

    The configuration is keywords (``create_provider("ollama", host="gpu-box")``), a dict of
    them given second (``create_provider("ollama", {"host": "gpu-box"})``) or an object with
    ``to_dict()`` returning one (``OllamaConfig``); keywords win over the dict. The plugins to
    use may be given second too (``create_provider("ollama", plugins)``) or as ``plugins=``.
    """
    if isinstance(config, Plugins):
        plugins, config = plugins or config, None
    if config is not None and not isinstance(config, Mapping):
        to_dict = getattr(config, "to_dict", None)
        if not callable(to_dict):
            raise ConfigurationError(
                f"provider {name!r}: the configuration must be a dict of constructor keywords "
                f"or have to_dict() (got {type(config).__name__})")
        config = to_dict()
    config = {**dict(config or {}), **kwargs}
    factory = (plugins or get_plugins()).get("providers", name)
    check_keywords(factory, config, name)
    try:
        provider = factory(**config)
    except ModelplexError:
        raise
    except (TypeError, ValueError, AttributeError, ValidationError) as err:
        raise ConfigurationError(f"provider {name!r} could not be configured: {err}") from err
    if not isinstance(provider, Provider):
        raise ConfigurationError(f"provider {name!r} factory returned {provider!r}, "
                                 "not a modelplex.Provider")
    return provider


def get_available_providers(plugins: Plugins | None = None) -> list[str]:
    """The names of the installed providers, sorted (``["llamacpp", "ollama", ...]``)."""
    return sorted((plugins or get_plugins()).provider_names())
