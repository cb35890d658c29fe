"""The JSON parsers under seed 002's import path (``onesim.models.parsers.json_parsers``).

``from modelplex.parsers.json_parsers import JsonDictParser`` is the same class as
``modelplex.parsers.JsonDictParser``; see :mod:`modelplex.parsers` for what each does.
"""

from __future__ import annotations

from modelplex.parsers import (
    JsonDictParser,
    JsonSchemaParser,
    ParseResult,
    PydanticParser,
    extract_json,
)

__all__ = ["JsonDictParser", "JsonSchemaParser", "ParseResult", "PydanticParser", "extract_json"]
