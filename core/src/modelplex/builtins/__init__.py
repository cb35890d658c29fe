"""The built-in templates, parsers and caches, registered through the same hooks as plugins."""

from __future__ import annotations

from modelplex.hookspecs import Register, hookimpl


@hookimpl
def register_prompt_templates(register: Register) -> None:
    """Register the chain-of-thought template."""
    from modelplex.prompts import ChainOfThoughtPrompt

    register(ChainOfThoughtPrompt)


@hookimpl
def register_parsers(register: Register) -> None:
    """Register the JSON dict parser."""
    from modelplex.parsers import JsonDictParser

    register(JsonDictParser)


@hookimpl
def register_caches(register: Register) -> None:
    """Register the in-memory LRU cache."""
    from modelplex.caches import MemoryCache

    register(MemoryCache)
