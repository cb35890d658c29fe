"""Rough token counts, for a server that reports none: about four characters a token.

A provider whose server sends no usage yields a :class:`~modelplex.chunks.Usage` marked
``estimated=True`` with these counts; the server's ``count_tokens`` answers with them for a
provider that cannot count. One rule everywhere, so estimates from different providers agree::

    from modelplex.tokens import estimate_prompt_tokens, estimate_tokens
    Usage(prompt_tokens=estimate_prompt_tokens(messages),
          completion_tokens=estimate_tokens(answer), estimated=True)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelplex.types import ChatMessage

__all__ = ["CHARS_PER_TOKEN", "IMAGE_TOKENS", "MESSAGE_TOKENS", "estimate_prompt_tokens",
           "estimate_tokens"]

CHARS_PER_TOKEN = 4
"""Characters a token, about, for English text and code."""
MESSAGE_TOKENS = 4
"""Tokens a message adds besides its text (its role and separators)."""
IMAGE_TOKENS = 85
"""Tokens an image adds (one low-detail tile)."""


def estimate_tokens(text: str) -> int:
    """About four characters a token, rounded up: 0 for no text, at least 1 for any."""
    return -(-len(text) // CHARS_PER_TOKEN)


def estimate_prompt_tokens(messages: Iterable[ChatMessage],
                           tools: Sequence[Mapping[str, Any]] | None = None) -> int:
    """The prompt tokens of ``messages`` (their text and tool calls) and ``tools`` (JSON
    specs): :func:`estimate_tokens` of all the text, plus :data:`MESSAGE_TOKENS` a message and
    :data:`IMAGE_TOKENS` an image."""
    chars = len(json.dumps(tools)) if tools else 0
    extra = 0
    for message in messages:
        chars += len(message.content) + sum(len(json.dumps(c)) for c in message.tool_calls)
        extra += MESSAGE_TOKENS + IMAGE_TOKENS * len(message.images)
    return -(-chars // CHARS_PER_TOKEN) + extra
