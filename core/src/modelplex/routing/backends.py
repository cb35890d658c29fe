"""The ``state`` section of the config file: which :class:`~modelplex.routing.state.RouterState` the
router shares its cooldowns, in-flight counts and rate windows through.

::

    [state]
    backend = "redis"
    url = "redis://cache-host:6379/0"
    sync_interval = 0.2

Backends are registered through the ``register_state_backends`` hook: ``memory`` (the
default, this process only) is built in, ``modelplex-redis`` adds ``redis``. Every key but
``backend`` is a keyword argument of the backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelplex._validation import describe
from modelplex.errors import ConfigurationError
from modelplex.routing.state import RouterState

__all__ = ["StateConfig", "open_state"]


class StateConfig(BaseModel):
    """The ``state`` section; ``"redis"`` alone is short for ``{"backend": "redis"}``."""

    model_config = ConfigDict(extra="allow")

    backend: str = Field(default="memory", min_length=1,
                         description="A registered state backend: memory, redis, ...")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return {"backend": value} if isinstance(value, str) else value

    def backend_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the backend: every key but ``backend``."""
        return dict(self.model_extra or {})

    @classmethod
    def parse(cls, value: Any) -> StateConfig:
        """Validate a config section; a bad one raises :class:`ConfigurationError`."""
        if isinstance(value, StateConfig):
            return value
        try:
            return cls.model_validate(value if value is not None else {})
        except ValidationError as err:
            detail = describe(err, StateConfig, "state")
            raise ConfigurationError(detail) from None


def open_state(config: StateConfig | str | Mapping[str, Any] | None = None,
               plugins: Any = None) -> RouterState:
    """Build the router state a config section names (the default: in this process)."""
    from modelplex.plugins import get_plugins

    cfg = StateConfig.parse(config)
    factory = (plugins or get_plugins()).get("state_backends", cfg.backend)
    kwargs = cfg.backend_kwargs()
    try:
        state = factory(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigurationError(f"state backend {cfg.backend!r} could not be configured "
                                 f"with {', '.join(sorted(kwargs)) or 'no settings'}: "
                                 f"{err}") from None
    if not isinstance(state, RouterState):
        raise ConfigurationError(f"state backend {cfg.backend!r} built {state!r}, "
                                 "not a modelplex.routing.RouterState")
    return state
