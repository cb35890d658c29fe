"""Stored conversations as chat history: what ``ChatManager(conversation=id)`` continues."""

from __future__ import annotations

from typing import Any

from modelplex.errors import StorageError
from modelplex.store.logs import Exchange, LogStore
from modelplex.types import ChatMessage, MessageRole

__all__ = ["history_of"]


def history_of(store: LogStore, conversation_id: str) -> tuple[list[ChatMessage], str | None]:
    """The messages of a stored conversation, and its last system prompt.

    Exchanges that failed are left out (as they are from a live history); an answer the
    caller stopped reading is kept, marked ``partial`` in its metadata. Each answer's
    metadata says who wrote it and what it used: ``model`` (``provider:model``),
    ``provider`` and ``usage`` (``prompt_tokens``, ``completion_tokens``, ``estimated``; None
    when the provider reported none), so a conversation that changed model says who wrote
    what. A log database that
    cannot be read gives an empty history and one warning (a store never fails a request).
    """
    messages: list[ChatMessage] = []
    system: str | None = None
    try:
        exchanges = store.exchanges(conversation_id)
    except StorageError as err:
        store.health.warn(err)
        return [], None
    for exchange in exchanges:
        partial = bool(exchange.error and exchange.error.startswith("incomplete"))
        if exchange.error and not partial:
            continue
        if not exchange.prompt:
            continue
        messages.append(ChatMessage(role=MessageRole.USER, content=exchange.prompt))
        if exchange.response or exchange.tool_calls:
            metadata = _written_by(exchange)
            if partial:
                metadata["partial"] = True
            messages.append(ChatMessage(role=MessageRole.ASSISTANT, content=exchange.response,
                                        tool_calls=tuple(exchange.tool_calls or ()),
                                        metadata=metadata))
        system = exchange.system_prompt
    return messages, system


def _written_by(exchange: Exchange) -> dict[str, Any]:
    """An answer's model, provider and usage, as :func:`history_of` puts them in metadata."""
    usage = None
    if exchange.prompt_tokens is not None or exchange.completion_tokens is not None:
        usage = {"prompt_tokens": exchange.prompt_tokens or 0,
                 "completion_tokens": exchange.completion_tokens or 0,
                 "estimated": exchange.usage_estimated}
    model = exchange.model if ":" in exchange.model else f"{exchange.provider}:{exchange.model}"
    return {"model": model, "provider": exchange.provider, "usage": usage}
