"""One readable line for a pydantic error on a config table (``[cache]``, ``[conversations]``,
``[state]``): each problem as ``table.key: what is wrong``, an unknown key with the table's
valid keys and the closest one (``cache.backnd: unknown key (did you mean 'backend'?)``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from modelplex.errors import did_you_mean

__all__ = ["describe"]


def describe(err: ValidationError, model: type[BaseModel], table: str) -> str:
    """The problems of ``err`` (raised validating ``model``, the ``[table]`` table)."""
    parts = []
    for item in err.errors():
        loc: tuple[Any, ...] = tuple(item["loc"])
        where = ".".join([table, *map(str, loc)])
        if item["type"] == "extra_forbidden" and len(loc) == 1:
            valid = list(model.model_fields)
            parts.append(f"{where}: unknown key{did_you_mean(loc[0], valid)}; valid keys are "
                         f"{', '.join(valid)} (remove or rename it)")
        elif item["type"] == "missing":
            parts.append(f"{where}: required key missing (add it)")
        else:
            parts.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
