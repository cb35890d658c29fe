"""The built-in templates, parsers and caches, registered through the same hooks as plugins."""

from __future__ import annotations

from modelplex.hookspecs import Register, RegisterLayer, hookimpl


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


@hookimpl
def register_layers(register: RegisterLayer) -> None:
    """Register the telemetry layer: OpenTelemetry GenAI spans and metrics of every model
    call; it stays out of a stack while telemetry is off (:mod:`modelplex.telemetry`)."""
    from modelplex.telemetry import telemetry_layer

    register(telemetry_layer, name="telemetry", before="cache")
