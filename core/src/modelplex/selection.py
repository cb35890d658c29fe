"""Choosing a model by criteria: :class:`ModelCriteria` and :class:`ModelSelector`.

::

    selector = ModelSelector(registry)
    info = await selector.select_model(ModelCriteria(capabilities=["tools"], min_context=8192,
                                                     max_size_bytes=8 * 10**9))
    print(info.id)          # e.g. "ollama:qwen2.5:7b"

The candidates are the registry's models that meet every requirement; they are ranked by the
``prefer`` list, then the ``providers`` order, then provider health (healthy first), then size
(largest first, or smallest with ``prefer_smaller``; unknown sizes last), then the observed
latency: a named model's router's median (``Router.stats()``, when the registry has
``named_stats``), else the provider's health check or listing time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from modelplex.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from modelplex.plugins import Plugins
    from modelplex.registry import ModelRegistry
    from modelplex.types import ModelInfo

__all__ = ["ModelCriteria", "ModelSelector", "NoSuitableModelError", "select_model_spec"]


class NoSuitableModelError(ConfigurationError):
    """No available model meets the criteria; the message says which were tried."""


class ModelCriteria(BaseModel):
    """What a model must have, and what to prefer among those that do."""

    model_config = ConfigDict(extra="forbid")

    capabilities: list[str] = Field(default_factory=list,
                                    description="Capabilities required, e.g. ['tools'].")
    min_context: int | None = Field(default=None, gt=0,
                                    description="Smallest acceptable context length (tokens).")
    max_size_bytes: int | None = Field(default=None, gt=0,
                                       description="Largest acceptable download size.")
    max_parameters: int | None = Field(default=None, gt=0,
                                       description="Largest acceptable parameter count.")
    providers: list[str] | None = Field(default=None,
                                        description="Only these providers, in this preference.")
    prefer: list[str] = Field(default_factory=list,
                              description="Model ids or names preferred, best first.")
    query: str | None = Field(default=None, description="Words the model's name must contain.")
    local_only: bool = Field(default=False, description="Only in-process or loopback servers.")
    require_healthy: bool = Field(default=True,
                                  description="Skip providers whose last health check failed.")
    prefer_smaller: bool = Field(default=False,
                                 description="Rank smaller models first (default: larger).")


def _index(items: list[str], *keys: str) -> int:
    for key in keys:
        if key in items:
            return items.index(key)
    return len(items)


class ModelSelector:
    """Selects the best available model for a :class:`ModelCriteria` from a registry."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def candidates(self, criteria: ModelCriteria) -> list[ModelInfo]:
        """Every model that meets the criteria, best first."""
        found = await self.registry.search(
            criteria.query, provider=criteria.providers, capability=criteria.capabilities,
            min_context=criteria.min_context, max_size_bytes=criteria.max_size_bytes,
            max_parameters=criteria.max_parameters, local=True if criteria.local_only else None)
        health = self.registry.last_health()
        listings = await self.registry.listings()
        if criteria.require_healthy:
            found = [m for m in found
                     if m.provider not in health or health[m.provider].status.healthy]
        order = criteria.providers or []

        def rank(info: ModelInfo) -> tuple[Any, ...]:
            checked = health.get(info.provider)
            unhealthy = checked is not None and not checked.status.healthy
            latency = checked.status.latency_ms if checked else None
            if info.provider == "named":  # what the router observed answering it
                latency = self.registry.named_latency(info.name)
            elif latency is None and info.provider in listings:
                latency = listings[info.provider].latency_ms
            size = info.parameter_count or info.size_bytes
            return (_index(criteria.prefer, info.id, info.name),
                    _index(order, info.provider), unhealthy, size is None,
                    (size if criteria.prefer_smaller else -size) if size else 0,
                    latency if latency is not None else float("inf"), info.id)

        return sorted(found, key=rank)

    async def select_model(self, criteria: ModelCriteria | None = None,
                           **fields: Any) -> ModelInfo:
        """The best model for ``criteria`` (or criteria given as keywords).

        Raises :class:`NoSuitableModelError` naming the criteria when none fits.
        """
        criteria = criteria or ModelCriteria(**fields)
        ranked = await self.candidates(criteria)
        if ranked:
            return ranked[0]
        wanted = criteria.model_dump(exclude_defaults=True)
        errors = await self.registry.errors()
        down = "; unavailable providers: " + "; ".join(errors.values()) if errors else ""
        raise NoSuitableModelError(f"no available model meets {wanted or 'the criteria'}"
                                   f"{down}. Relax the criteria or install/pull a model "
                                   "(`modelplex models list` shows what is available)")


async def select_model_spec(criteria: ModelCriteria | Mapping[str, Any], *,
                            plugins: Plugins | None = None) -> str:
    """The ``provider:model`` of the best available model for ``criteria`` (a
    :class:`ModelCriteria` or its fields as a dict), from a registry of every provider."""
    from modelplex.registry import ModelRegistry

    if not isinstance(criteria, ModelCriteria):
        criteria = ModelCriteria.model_validate(dict(criteria))
    names = criteria.providers
    async with ModelRegistry(plugins=plugins, providers=names) as registry:
        if criteria.require_healthy:
            await registry.check_health()
        return (await ModelSelector(registry).select_model(criteria)).id
