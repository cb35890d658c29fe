"""Stored conversations as chat history: what ``ChatManager(conversation=id)`` continues."""

from __future__ import annotations

from modelplex.errors import StorageError
from modelplex.store.logs import LogStore
from modelplex.types import ChatMessage, MessageRole

__all__ = ["history_of"]


def history_of(store: LogStore, conversation_id: str) -> tuple[list[ChatMessage], str | None]:
    """The messages of a stored conversation, and its last system prompt.

    Exchanges that failed are left out (as they are from a live history); an answer the
    caller stopped reading is kept, marked ``partial`` in its metadata. A log database that
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
            messages.append(ChatMessage(role=MessageRole.ASSISTANT, content=exchange.response,
                                        tool_calls=tuple(exchange.tool_calls or ()),
                                        metadata={"partial": True} if partial else {}))
        system = exchange.system_prompt
    return messages, system
