"""The config file's tables written back as TOML (``modelplex config show``, ``server-key``):
every string and key escaped, tables as ``[a.b]`` headers, lists of tables as ``[[a.b]]``,
so that what is printed reads back as the same data. (Re-exported by :mod:`modelplex.config`,
where it was defined at first.)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["to_toml"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_string(text: str) -> str:
    # JSON's escapes are TOML's, except that TOML also wants DEL escaped
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007F")


def _toml_key(key: Any) -> str:
    key = str(key)
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}"
                               for k, v in value.items() if v is not None) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    return _toml_string(value if isinstance(value, str) else str(value))


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value)


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and all(
        isinstance(v, Mapping) for v in value)


def _toml_table(lines: list[str], path: list[str], table: Mapping[str, Any], *,
                element: bool = False) -> None:
    values = [(k, v) for k, v in table.items()
              if v is not None and not _is_table(v) and not _is_table_list(v)]
    tables = [(k, v) for k, v in table.items() if _is_table(v)]
    lists = [(k, v) for k, v in table.items() if _is_table_list(v)]
    header = ".".join(_toml_key(p) for p in path)
    if element:
        lines += ["", f"[[{header}]]"]
    elif path and (values or not (tables or lists)):
        lines += ["", f"[{header}]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in values]
    for key, sub in tables:
        _toml_table(lines, [*path, key], sub)
    for key, items in lists:
        for item in items:
            _toml_table(lines, [*path, key], item, element=True)


def to_toml(data: Mapping[str, Any]) -> str:
    """``data`` (a config file's tables, e.g. :meth:`Config.masked`) as TOML text that reads
    back as the same data: every string and key escaped, tables as ``[a.b]`` headers, lists of
    tables as ``[[a.b]]`` (``deployments``, ``server.keys``), empty tables inline (``{}``).
    ``None`` values are left out (TOML has no null)."""
    lines: list[str] = []
    _toml_table(lines, [], data)
    return "\n".join(lines).strip("\n") + "\n" if lines else ""
