"""Check a provider's constructor keywords before calling it: an unknown keyword names the
valid ones and the closest (``thredas`` -> ``threads``), a value of the wrong simple type
(``host = 5``) names the keyword and the type it takes, instead of a ``TypeError`` or an
``AttributeError`` from inside the constructor.
"""

from __future__ import annotations

import functools
import inspect
import os
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from modelplex.errors import ConfigurationError, did_you_mean
from modelplex.masking import is_secret_name

__all__ = ["check_keywords"]

#: simple types a keyword's annotation may be made of to be checked here
_SIMPLE: dict[type, str] = {str: "text", int: "a whole number", float: "a number",
                            bool: "true or false", SecretStr: "text", Path: "a path",
                            os.PathLike: "a path", Mapping: "a table", type(None): "none"}


@functools.lru_cache(maxsize=256)
def _signature(factory: Callable[..., Any]) -> tuple[frozenset[str] | None, dict[str, Any]]:
    """The keyword names ``factory`` takes (``None``: it takes any, ``**kwargs``) and the
    type hints that could be resolved."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None, {}
    names = None if any(p.kind is p.VAR_KEYWORD for p in params) else frozenset(
        p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
    target = factory.__init__ if isinstance(factory, type) else factory  # type: ignore[misc]
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an annotation that does not resolve: check no types
        hints = {}
    return names, hints


def _allowed(hint: Any) -> tuple[type, ...] | None:
    """The classes a simple annotation (``str | None``, ``float``) allows; None otherwise."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or (
        typing.get_origin(hint) is typing.Union) else (hint,)
    classes = [typing.get_origin(a) or a for a in args]  # Mapping[str, str]: Mapping
    classes = [Mapping if c is dict else c for c in classes]
    if not classes or not all(isinstance(c, type) and c in _SIMPLE for c in classes):
        return None
    return tuple(classes)


def _fits(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int) and float in allowed:
        return True
    if isinstance(value, str) and (Path in allowed or os.PathLike in allowed):
        return True
    return isinstance(value, allowed)


def check_keywords(factory: Callable[..., Any], config: Mapping[str, Any], provider: str) -> None:
    """Raise :class:`ConfigurationError` when ``config`` holds a keyword ``factory`` does not
    take, or a value its simple annotation does not allow (shown unless the keyword's name
    means a secret: then only its type)."""
    try:
        names, hints = _signature(factory)
    except TypeError:  # an unhashable factory
        return
    fix = (f"fix [providers.{provider}] in the config file (or the deployment, "
           "provider_config or keywords that set it)")
    if names is not None:
        for key in config:
            if key not in names:
                valid = ", ".join(sorted(n for n in names if not n.startswith("_")))
                raise ConfigurationError(
                    f"{provider}: unknown setting {key!r}{did_you_mean(key, names)}; "
                    f"it takes {valid or 'none'}: {fix}")
    for key, value in config.items():
        allowed = _allowed(hints.get(key))
        if allowed is not None and not _fits(value, allowed):
            labels = [_SIMPLE[a] for a in allowed if a is not type(None)] or ["none"]
            wanted = " or ".join(dict.fromkeys(labels))
            got = type(value).__name__ if is_secret_name(key) else repr(value)[:60]
            raise ConfigurationError(f"{provider}: {key} must be {wanted} (got {got}): {fix}")
