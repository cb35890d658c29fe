"""Finish reasons: the one vocabulary every provider's final chunk uses.

The final :class:`~modelplex.chunks.StreamChunk` of every stream (and
:attr:`ChatResponse.finish_reason <modelplex.chunks.ChatResponse.finish_reason>`) says why
the answer ended, as one of :data:`FINISH_REASONS`:

``stop``            the model finished (end of turn, end-of-sequence token, a stop sequence)
``length``          the token limit (``max_tokens``) or the context window cut it off
``tool_calls``      the model asks for tool calls and waits for their results
``content_filter``  the provider's safety filter withheld or cut the answer
``refusal``         the model declined to answer
``other``           the provider gave a reason outside this vocabulary

Providers translate their API's own words with :func:`normalize_finish_reason`, which knows
those of OpenAI, Anthropic, Ollama, llama.cpp, TGI, Gemini and Cohere::

    from modelplex.finish import normalize_finish_reason

    normalize_finish_reason("end_turn")    # 'stop'
    normalize_finish_reason("max_tokens")  # 'length'
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["FINISH_REASONS", "normalize_finish_reason"]

FINISH_REASONS: frozenset[str] = frozenset(
    {"stop", "length", "tool_calls", "content_filter", "refusal", "other"})
"""Every value a final chunk's ``finish_reason`` may take."""

_NATIVE: dict[str, str] = {
    **{reason: reason for reason in FINISH_REASONS},
    # the model ended by itself
    "end_turn": "stop", "stop_sequence": "stop", "eos_token": "stop", "eos": "stop",
    "end": "stop", "complete": "stop", "finished": "stop", "done": "stop",
    "load": "stop", "unload": "stop",  # Ollama: a load / unload request, no generation
    "pause_turn": "stop",
    # cut off by a limit
    "max_tokens": "length", "max_length": "length", "max_new_tokens": "length",
    "model_context_window_exceeded": "length", "model_length": "length",
    "max_output_tokens": "length",
    # tools
    "tool_use": "tool_calls", "function_call": "tool_calls", "tool_call": "tool_calls",
    # filters and refusals
    "safety": "content_filter", "recitation": "content_filter", "blocklist": "content_filter",
    "prohibited_content": "content_filter", "spii": "content_filter",
    "content_filtered": "content_filter", "error_toxic": "content_filter",
}


def normalize_finish_reason(raw: str | None, *, default: str = "stop",
                            extra: Mapping[str, str] | None = None) -> str:
    """The modelplex finish reason for a provider's own ``raw`` one.

    ``None`` or an empty string gives ``default``; matching ignores case, so Gemini's
    ``MAX_TOKENS`` works. ``extra`` maps a provider's own words first (values must be in
    :data:`FINISH_REASONS`). A reason nobody knows gives ``other``.
    """
    if not raw:
        return default
    key = raw.lower()
    if extra is not None:
        mapped = extra.get(raw) or extra.get(key)
        if mapped is not None:
            return mapped
    return _NATIVE.get(key, "other")
