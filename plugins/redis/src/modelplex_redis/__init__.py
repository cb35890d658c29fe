"""modelplex-redis: a ``redis`` response cache and a ``redis`` router state backend.

Importing this module does no I/O and does not import the redis client; the classes are
imported when modelplex asks for them.
"""

from __future__ import annotations

from modelplex.hookspecs import Register, hookimpl
from modelplex_redis.__about__ import __version__

__all__ = ["__version__", "register_caches", "register_state_backends"]


@hookimpl
def register_caches(register: Register) -> None:
    """Register the ``redis`` cache."""
    from modelplex_redis.cache import RedisCache

    register(RedisCache)


@hookimpl
def register_state_backends(register: Register) -> None:
    """Register the ``redis`` router state."""
    from modelplex_redis.state import RedisState

    register(RedisState, name="redis")
