"""Conversations the REST and WebSocket APIs keep: a small store interface and its memory default.

A conversation has a title, the model id it talks to (and the provider that serves it), an
optional system prompt, its messages, and its owner: the name of the API key that made it
(None on a server without keys); who may see which is the gateway's business
(:meth:`modelplex_server.gateway.Gateway.conversation`). A persistent store (SQLite, Redis)
implements :class:`ConversationStore` and is passed to :func:`modelplex_server.app.create_app`.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from modelplex.errors import ModelplexError
from modelplex.types import ChatMessage

__all__ = ["Conversation", "ConversationStore", "MemoryConversationStore",
           "StoreUnavailableError", "dump_message"]


class StoreUnavailableError(ModelplexError):
    """The store cannot be reached now (a database server is down): the request is refused
    (503 with ``Retry-After``), nothing is stored."""


def _now() -> datetime:
    return datetime.now(UTC)


def dump_message(message: ChatMessage) -> str:
    """A message as the JSON text a store keeps (images as base64 text)."""
    if any(isinstance(image, bytes) for image in message.images):  # JSON holds text only
        message = message.model_copy(update={"images": tuple(
            base64.b64encode(i).decode() if isinstance(i, bytes) else i
            for i in message.images)})
    return message.model_dump_json()


class Conversation(BaseModel):
    """One conversation and its history."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    title: str = "New conversation"
    model: str
    provider: str
    system_prompt: str | None = None
    owner: str | None = None
    messages: list[ChatMessage] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)

    def summary(self) -> dict[str, Any]:
        """The conversation without its messages (for listings)."""
        data = self.model_dump(mode="json", exclude={"messages"})
        data["message_count"] = len(self.messages)
        return data


class ConversationStore(abc.ABC):
    """Where conversations live. Every method is async so that a store may do I/O."""

    @abc.abstractmethod
    async def create(self, conversation: Conversation) -> Conversation:
        """Store a new conversation and return it."""

    @abc.abstractmethod
    async def get(self, conversation_id: str) -> Conversation | None:
        """The conversation, or None."""

    @abc.abstractmethod
    async def all(self) -> list[Conversation]:
        """Every conversation, most recently updated first."""

    @abc.abstractmethod
    async def append(self, conversation_id: str, messages: list[ChatMessage]) -> None:
        """Add messages to a conversation's history."""

    @abc.abstractmethod
    async def truncate(self, conversation_id: str, keep: int) -> None:
        """Keep only the first ``keep`` messages (to answer a message again)."""

    async def replace(self, conversation_id: str, start: int, end: int,
                      messages: list[ChatMessage]) -> None:
        """Put ``messages`` in place of the messages ``start`` to ``end`` (exclusive), keeping
        those after ``end`` (added meanwhile) after them: how an answer given again replaces
        the old one. Stores should override this to do it in one step."""
        item = await self.get(conversation_id)
        if item is None:
            return
        tail = item.messages[end:]
        await self.truncate(conversation_id, start)
        await self.append(conversation_id, [*messages, *tail])

    @abc.abstractmethod
    async def update(self, conversation_id: str, **fields: Any) -> Conversation | None:
        """Change a conversation's ``title``, ``model``, ``provider`` or ``system_prompt``;
        None if there is none."""

    @abc.abstractmethod
    async def delete(self, conversation_id: str) -> bool:
        """Delete a conversation; false if there was none."""

    async def open(self) -> None:  # noqa: B027 - nothing to open by default
        """Connect (and migrate) at start-up; called when the server starts."""

    async def ping(self) -> None:  # noqa: B027 - nothing to reach by default
        """Raise when the store cannot be reached (``/readyz`` asks)."""

    def describe(self) -> str:
        """Where the conversations are, for logs and ``/readyz`` (no passwords)."""
        return "memory"

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Free connections."""


class MemoryConversationStore(ConversationStore):
    """Conversations in this process, lost when it stops (the default)."""

    def __init__(self) -> None:
        self._items: dict[str, Conversation] = {}
        self._lock = asyncio.Lock()

    async def create(self, conversation: Conversation) -> Conversation:
        """Store a new conversation and return it."""
        self._items[conversation.id] = conversation
        return conversation

    async def get(self, conversation_id: str) -> Conversation | None:
        """The conversation, or None."""
        return self._items.get(conversation_id)

    async def all(self) -> list[Conversation]:
        """Every conversation, most recently updated first."""
        return sorted(self._items.values(), key=lambda c: c.updated_at, reverse=True)

    async def append(self, conversation_id: str, messages: list[ChatMessage]) -> None:
        """Add messages to a conversation's history."""
        async with self._lock:
            item = self._items.get(conversation_id)
            if item is not None:
                item.messages = [*item.messages, *messages]
                item.updated_at = _now()

    async def truncate(self, conversation_id: str, keep: int) -> None:
        """Keep only the first ``keep`` messages (to answer a message again)."""
        async with self._lock:
            item = self._items.get(conversation_id)
            if item is not None:
                item.messages = item.messages[:keep]
                item.updated_at = _now()

    async def replace(self, conversation_id: str, start: int, end: int,
                      messages: list[ChatMessage]) -> None:
        """Put ``messages`` in place of the messages ``start`` to ``end``, in one step."""
        async with self._lock:
            item = self._items.get(conversation_id)
            if item is not None:
                item.messages = [*item.messages[:start], *messages, *item.messages[end:]]
                item.updated_at = _now()

    async def update(self, conversation_id: str, **fields: Any) -> Conversation | None:
        """Change a conversation's settings; None if there is none (values are validated:
        a wrong type is a ``ValueError`` and nothing is stored)."""
        async with self._lock:
            item = self._items.get(conversation_id)
            if item is None:
                return None
            updated = Conversation.model_validate(
                {**item.model_dump(exclude={"messages"}), **fields, "updated_at": _now()})
            updated.messages = item.messages
            self._items[conversation_id] = updated
            return updated

    async def delete(self, conversation_id: str) -> bool:
        """Delete a conversation; false if there was none."""
        return self._items.pop(conversation_id, None) is not None
