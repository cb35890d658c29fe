"""A JSON schema given as a dict is checked before it is sent: a misspelt ``type``
(``"objec"``), ``properties`` that are not a table of schemas, ``required`` that is not a
list of names. Such a schema used to go to the model, which could never match it, and came
back as "no valid answer after 3 attempts".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelplex.errors import ConfigurationError, did_you_mean

__all__ = ["JSON_TYPES", "check_schema"]

JSON_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_TABLES = ("properties", "$defs", "definitions", "patternProperties")


def check_schema(schema: Any, where: str = "schema") -> None:
    """Raise :class:`ConfigurationError` naming the first malformed part of ``schema``."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, Mapping):
        raise ConfigurationError(f"{where}: a JSON schema is an object (got "
                                 f"{type(schema).__name__})")
    types = schema.get("type")
    for name in types if isinstance(types, list) else [] if types is None else [types]:
        if name not in JSON_TYPES:
            raise ConfigurationError(
                f"{where}.type: {name!r} is not a JSON Schema type"
                f"{did_you_mean(name, JSON_TYPES) if isinstance(name, str) else ''}; "
                f"use one of {', '.join(JSON_TYPES)}")
    for key in _SCHEMA_TABLES:
        table = schema.get(key)
        if table is None:
            continue
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"{where}.{key}: must map names to schemas (got "
                                     f"{type(table).__name__})")
        for name, sub in table.items():
            check_schema(sub, f"{where}.{key}.{name}")
    required = schema.get("required")
    if required is not None and not (isinstance(required, list)
                                     and all(isinstance(r, str) for r in required)):
        raise ConfigurationError(f"{where}.required: must be a list of property names")
    enum = schema.get("enum")
    if enum is not None and not isinstance(enum, list):
        raise ConfigurationError(f"{where}.enum: must be a list of values")
    for key in ("items", "additionalProperties", "not"):
        sub = schema.get(key)
        if isinstance(sub, list) and key == "items":  # draft 4-7 tuple validation
            for i, item in enumerate(sub):
                check_schema(item, f"{where}.items[{i}]")
        elif sub is not None:
            check_schema(sub, f"{where}.{key}")
    for key in _SCHEMA_LISTS:
        if key in schema:
            subs = schema[key]
            if not isinstance(subs, list):
                raise ConfigurationError(f"{where}.{key}: must be a list of schemas")
            for i, sub in enumerate(subs):
                check_schema(sub, f"{where}.{key}[{i}]")
