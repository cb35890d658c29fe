"""The built-in templates, parsers and caches, registered through the same hooks as plugins."""

from __future__ import annotations

from modelplex.hookspecs import Register, hookimpl


@hookimpl
def register_prompt_templates(register: Register) -> None:
    """Register the chain-of-thought, few-shot and extraction templates."""
    from modelplex.prompts import ChainOfThoughtPrompt, ExtractionPrompt, FewShotPrompt

    register(ChainOfThoughtPrompt)
    register(FewShotPrompt)
    register(ExtractionPrompt)


@hookimpl
def register_parsers(register: Register) -> None:
    """Register the JSON, pydantic, JSON-schema, list and code-block parsers."""
    from modelplex.parsers import (
        CodeBlockParser,
        JsonDictParser,
        JsonSchemaParser,
        ListParser,
        PydanticParser,
    )
    from modelplex.prompts import ChainOfThoughtParser

    for parser in (JsonDictParser, PydanticParser, JsonSchemaParser, ListParser,
                   CodeBlockParser, ChainOfThoughtParser):
        register(parser)


@hookimpl
def register_caches(register: Register) -> None:
    """Register the in-memory LRU cache and the SQLite cache."""
    from modelplex.caches import MemoryCache
    from modelplex.store.sqlite_cache import SQLiteCache

    register(MemoryCache)
    register(SQLiteCache)


@hookimpl
def register_state_backends(register: Register) -> None:
    """Register the in-process router state."""
    from modelplex.routing import MemoryState

    register(MemoryState, name="memory")
