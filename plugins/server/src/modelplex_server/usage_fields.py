"""The token details a provider reported, read off any :class:`~modelplex.chunks.Usage`.

The core's :class:`Usage` holds prompt and completion counts; provider plugins subclass it with
details (the OpenAI plugin's ``OpenAIUsage``: ``cache_read_tokens``, ``reasoning_tokens``; the
Anthropic plugin's ``AnthropicUsage``: ``cache_read_input_tokens``,
``cache_creation_input_tokens``). The server's APIs read them here by attribute, so they need
no import of a provider plugin, and report them in each API's own fields. Each count is a part
of ``prompt_tokens`` / ``completion_tokens``, never an addition to them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["cache_read", "cache_written", "reasoning"]


def _count(usage: Any, *names: str) -> int:
    for name in names:
        value = getattr(usage, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 0


def cache_read(usage: Any) -> int:
    """Prompt tokens read from the provider's prompt cache (0 when unknown)."""
    return _count(usage, "cache_read_tokens", "cache_read_input_tokens")


def cache_written(usage: Any) -> int:
    """Prompt tokens written to the provider's prompt cache (0 when unknown)."""
    return _count(usage, "cache_creation_input_tokens", "cache_write_tokens")


def reasoning(usage: Any) -> int:
    """Completion tokens spent on reasoning (0 when unknown)."""
    return _count(usage, "reasoning_tokens")
