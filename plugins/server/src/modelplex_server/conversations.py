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
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from modelplex.errors import ModelplexError
from modelplex.types import ChatMessage
from modelplex_server.batch_store import BatchStore, MemoryBatches
from modelplex_server.budgets import Spend
from modelplex_server.settings import KeyConfig

__all__ = ["Conversation", "ConversationFullError", "ConversationStore", "ConversationSummary",
           "KeyExistsError", "MemoryConversationStore", "StoreUnavailableError", "StoredKey",
           "answer_metadata", "check_room", "dump_message", "message_columns"]


class StoreUnavailableError(ModelplexError):
    """The store cannot be reached now (a database server is down): the request is refused
    (503 with ``Retry-After``), nothing is stored."""


class ConversationFullError(ValueError):
    """Adding the messages would make the conversation hold more than ``most`` (``[server]
    max_conversation_messages``): nothing was added."""

    def __init__(self, held: int, most: int) -> None:
        super().__init__(f"the conversation holds {held} messages of at most {most}")
        self.held, self.most = held, most


def check_room(held: int, messages: list[ChatMessage], most: int | None) -> None:
    """:class:`ConversationFullError` when ``held`` messages and ``messages`` are more than
    ``most`` (None: no limit); stores call it where they count, before adding anything."""
    if most is not None and held + len(messages) > most:
        raise ConversationFullError(held, most)


class KeyExistsError(ValueError):
    """A key of that name is already stored."""


class StoredKey(BaseModel):
    """An API key kept in the store (``modelplex keys create``): its settings (hash, never
    the key), when it was made and when it was revoked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: KeyConfig
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    revoked_at: datetime | None = None

    def public(self) -> dict[str, Any]:
        """What the admin API shows (no hash)."""
        data = self.key.model_dump(mode="json", exclude={"hash"})
        data.update(created_at=self.created_at.isoformat(),
                    revoked_at=self.revoked_at.isoformat() if self.revoked_at else None)
        return data


def _now() -> datetime:
    return datetime.now(UTC)


def dump_message(message: ChatMessage) -> str:
    """A message as the JSON text a store keeps (images as base64 text)."""
    if any(isinstance(image, bytes) for image in message.images):  # JSON holds text only
        message = message.model_copy(update={"images": tuple(
            base64.b64encode(i).decode() if isinstance(i, bytes) else i
            for i in message.images)})
    return message.model_dump_json()


def answer_metadata(model: str | None, provider: str | None, usage: Any = None,
                    **extra: Any) -> dict[str, Any]:
    """An answer's ``metadata``: the ``model`` and ``provider`` that wrote it and its
    ``usage`` (``prompt_tokens``, ``completion_tokens``, ``estimated``; None when the provider
    reported none), so a conversation that changed model can say who wrote what."""
    used = None
    if usage is not None:
        used = {"prompt_tokens": int(usage.prompt_tokens),
                "completion_tokens": int(usage.completion_tokens),
                "estimated": bool(getattr(usage, "estimated", False))}
    return {**extra, "model": model, "provider": provider, "usage": used}


def message_columns(message: ChatMessage) -> tuple[str | None, str | None, str | None]:
    """The ``model``, ``provider`` and ``usage`` (JSON text) columns a persistent store keeps
    beside a message's JSON (schema version 5), from its metadata (None for a user's
    message, or an answer stored before version 5)."""
    meta = message.metadata
    model, provider, usage = meta.get("model"), meta.get("provider"), meta.get("usage")
    return (model if isinstance(model, str) else None,
            provider if isinstance(provider, str) else None,
            json.dumps(usage, sort_keys=True) if isinstance(usage, dict) else None)


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

    def summary_item(self) -> ConversationSummary:
        """The conversation as a listing shows it (:class:`ConversationSummary`)."""
        return ConversationSummary(**self.model_dump(exclude={"messages"}),
                                   message_count=len(self.messages))


class ConversationSummary(BaseModel):
    """A conversation without its messages, as ``GET /api/conversations`` lists it (the
    store reads no message to make one; ``message_count`` is counted by the store)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    id: str
    title: str
    model: str
    provider: str
    system_prompt: str | None = None
    owner: str | None = None
    created_at: datetime
    updated_at: datetime
    message_count: int = 0

    def public(self) -> dict[str, Any]:
        """The listing's JSON object (the keys :meth:`Conversation.summary` has)."""
        return self.model_dump(mode="json")


class ConversationStore(BatchStore, abc.ABC):
    """Where conversations live (and the files and batches of ``/v1/files`` and
    ``/v1/batches``, :class:`~modelplex_server.batch_store.BatchStore`). Every method is async
    so that a store may do I/O."""

    @abc.abstractmethod
    async def create(self, conversation: Conversation, *,
                     most: int | None = None) -> Conversation | None:
        """Store a new conversation and return it; with ``most``: None (nothing stored) when
        its owner has ``most`` conversations already, counted and inserted in one step
        (``[server] max_conversations``)."""

    @abc.abstractmethod
    async def get(self, conversation_id: str) -> Conversation | None:
        """The conversation, or None."""

    @abc.abstractmethod
    async def all(self) -> list[Conversation]:
        """Every conversation, most recently updated first."""

    async def summaries(self, owner: str | None, *, after: str | None = None,
                        limit: int = 100) -> list[ConversationSummary] | None:
        """At most ``limit`` conversations of ``owner`` (None: everyone's) without their
        messages, most recently updated first (then by id, descending), those after the
        conversation ``after`` in that order; None when ``after`` is not one of them. Stores
        should override this to filter and limit in their query, as the server's do."""
        items = [c for c in await self.all() if owner is None or c.owner == owner]
        return _page([c.summary_item() for c in items], after, limit)

    @abc.abstractmethod
    async def append(self, conversation_id: str, messages: list[ChatMessage], *,
                     most: int | None = None) -> None:
        """Add messages to a conversation's history; with ``most``:
        :class:`ConversationFullError` (nothing added) when it would then hold more than
        ``most`` messages, counted and added in one step (``[server]
        max_conversation_messages``)."""

    async def append_at(self, conversation_id: str, count: int,
                        messages: list[ChatMessage], *, most: int | None = None) -> bool:
        """Add messages only if the conversation holds exactly ``count`` messages (it was not
        continued meanwhile): true if added; with ``most``: :class:`ConversationFullError`
        (nothing added) when it would then hold more. Stores should override this to check
        and add in one step, as the server's do (two follow-ups to one stored response,
        answered at once, then keep only one)."""
        item = await self.get(conversation_id)
        if item is None or len(item.messages) != count:
            return False
        check_room(count, messages, most)
        await self.append(conversation_id, messages)
        return True

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

    async def delete_at(self, conversation_id: str, count: int) -> bool:
        """Delete a conversation only if it holds exactly ``count`` messages (it was not
        continued meanwhile): true if deleted. Stores should override this to check and
        delete in one step, as the server's do."""
        item = await self.get(conversation_id)
        if item is None or len(item.messages) != count:
            return False
        return await self.delete(conversation_id)

    # -- keys and their spend (``modelplex keys``) ------------------------------------------
    async def create_key(self, stored: StoredKey) -> None:
        """Keep a new key; :class:`KeyExistsError` if its name is taken."""
        raise NotImplementedError(f"{type(self).__name__} does not keep API keys")

    async def find_key(self, hashed: str) -> StoredKey | None:
        """The key (not revoked) whose hash is ``hashed``."""
        return None

    async def list_keys(self) -> list[StoredKey]:
        """Every key, revoked ones included, oldest first."""
        return []

    async def revoke_key(self, name: str) -> bool:
        """Revoke a key; false if there is no such (unrevoked) key."""
        return False

    async def add_spend(self, name: str, period: str,
                        tokens: int, cost: float) -> None:
        """Add one answer's tokens and cost to key ``name``'s spend in ``period``."""

    async def get_spend(self, name: str, period: str) -> Spend:
        """Key ``name``'s spend in ``period``."""
        return Spend()

    async def open(self) -> None:
        """Connect (and migrate) at start-up; called when the server starts."""

    async def ping(self) -> None:
        """Raise when the store cannot be reached (``/readyz`` asks)."""

    def describe(self) -> str:
        """Where the conversations are, for logs and ``/readyz`` (no passwords)."""
        return "memory"

    async def aclose(self) -> None:
        """Free connections."""


def _page(items: list[ConversationSummary], after: str | None,
          limit: int) -> list[ConversationSummary] | None:
    """One page of ``items`` (any order): sorted newest first, after ``after``."""
    items.sort(key=lambda c: (c.updated_at, c.id), reverse=True)
    if after is not None:
        at = next((i for i, c in enumerate(items) if c.id == after), None)
        if at is None:
            return None
        items = items[at + 1:]
    return items[:limit]


class MemoryConversationStore(MemoryBatches, ConversationStore):
    """Conversations in this process, lost when it stops (the default)."""

    def __init__(self) -> None:
        super().__init__()
        self._items: dict[str, Conversation] = {}
        self._lock = asyncio.Lock()
        self._keys: dict[str, StoredKey] = {}
        self._spend: dict[tuple[str, str], Spend] = {}

    async def create_key(self, stored: StoredKey) -> None:
        """Keep a new key; :class:`KeyExistsError` if its name is taken."""
        if stored.key.name in self._keys:
            raise KeyExistsError(f"a key named {stored.key.name!r} exists already")
        self._keys[stored.key.name] = stored

    async def find_key(self, hashed: str) -> StoredKey | None:
        """The key (not revoked) whose hash is ``hashed``."""
        return next((k for k in self._keys.values()
                     if k.key.hash == hashed and k.revoked_at is None), None)

    async def list_keys(self) -> list[StoredKey]:
        """Every key, oldest first."""
        return sorted(self._keys.values(), key=lambda k: k.created_at)

    async def revoke_key(self, name: str) -> bool:
        """Revoke a key; false if there is no such (unrevoked) key."""
        stored = self._keys.get(name)
        if stored is None or stored.revoked_at is not None:
            return False
        self._keys[name] = stored.model_copy(update={"revoked_at": _now()})
        return True

    async def add_spend(self, name: str, period: str, tokens: int, cost: float) -> None:
        """Add to key ``name``'s spend in ``period``."""
        old = self._spend.get((name, period), Spend())
        self._spend[(name, period)] = Spend(old.tokens + tokens, old.cost + cost,
                                            old.requests + 1)

    async def get_spend(self, name: str, period: str) -> Spend:
        """Key ``name``'s spend in ``period``."""
        return self._spend.get((name, period), Spend())

    async def create(self, conversation: Conversation, *,
                     most: int | None = None) -> Conversation | None:
        """Store a new conversation (with ``most``: counted and stored with no await between,
        so in one step)."""
        if most is not None and sum(1 for c in self._items.values()
                                    if c.owner == conversation.owner) >= most:
            return None
        self._items[conversation.id] = conversation
        return conversation

    async def get(self, conversation_id: str) -> Conversation | None:
        """The conversation, or None."""
        return self._items.get(conversation_id)

    async def all(self) -> list[Conversation]:
        """Every conversation, most recently updated first."""
        return sorted(self._items.values(), key=lambda c: c.updated_at, reverse=True)

    async def summaries(self, owner: str | None, *, after: str | None = None,
                        limit: int = 100) -> list[ConversationSummary] | None:
        """A page of ``owner``'s conversations without messages (see the base class)."""
        return _page([c.summary_item() for c in self._items.values()
                      if owner is None or c.owner == owner], after, limit)

    async def append(self, conversation_id: str, messages: list[ChatMessage], *,
                     most: int | None = None) -> None:
        """Add messages to a conversation's history (with ``most``: counted and added in one
        step)."""
        async with self._lock:
            item = self._items.get(conversation_id)
            if item is not None:
                check_room(len(item.messages), messages, most)
                item.messages = [*item.messages, *messages]
                item.updated_at = _now()

    async def append_at(self, conversation_id: str, count: int,
                        messages: list[ChatMessage], *, most: int | None = None) -> bool:
        """Add messages if the conversation holds ``count`` (and, with ``most``, room for
        them), in one step."""
        async with self._lock:
            item = self._items.get(conversation_id)
            if item is None or len(item.messages) != count:
                return False
            check_room(count, messages, most)
            item.messages = [*item.messages, *messages]
            item.updated_at = _now()
            return True

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

    async def delete_at(self, conversation_id: str, count: int) -> bool:
        """Delete a conversation holding ``count`` messages, in one step."""
        async with self._lock:
            item = self._items.get(conversation_id)
            if item is None or len(item.messages) != count:
                return False
            del self._items[conversation_id]
            return True
