"""Validated value types at the user boundary: messages, sessions, model info, tasks.

These are pydantic models, validated once when built. Types created per streamed chunk live in
:mod:`modelplex.chunks` instead.
"""

from __future__ import annotations

import collections
import os
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

import attrs
from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

from modelplex import env

__all__ = [
    "ChatMessage",
    "ChatSession",
    "HealthStatus",
    "MessageRole",
    "ModelConfig",
    "ModelInfo",
    "ModelSize",
    "PullProgress",
    "Task",
    "TaskStatus",
    "human_size",
]


_SURROGATE = re.compile("[\ud800-\udfff]")


_ID_MASK = ~((0xc000 << 48) | (0xf000 << 64))  # the variant and version bits of a UUID
_ID_BITS = (0x8000 << 48) | (4 << 76)  # RFC 4122 variant, version 4
_UUID, _UNKNOWN, _new, _set = uuid.UUID, uuid.SafeUUID.unknown, object.__new__, object.__setattr__


_ID_BATCH = 64  # ids' worth of random bytes read from os.urandom at once
_random_ids: collections.deque[int] = collections.deque()


def _random_128() -> int:
    """128 random bits from ``os.urandom``, read for :data:`_ID_BATCH` ids at a time: one
    system call instead of one per id (a conversation's start makes two ids). Each value is
    taken once (``deque.popleft`` is atomic, so threads never share one), and a forked child
    forgets what its parent read (``os.register_at_fork``), so no two processes share one."""
    try:
        return _random_ids.popleft()
    except IndexError:
        data = os.urandom(16 * _ID_BATCH)
        _random_ids.extend(int.from_bytes(data[i:i + 16], "big")
                           for i in range(16, len(data), 16))
        return int.from_bytes(data[:16], "big")


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_random_ids.clear)


def _new_id() -> uuid.UUID:
    """A random UUID, equal in every bit to what :func:`uuid.uuid4` makes (16 bytes of
    ``os.urandom``, the version and variant set), without ``UUID.__init__``'s argument
    checks: a message is built for every request, and a conversation's start waits for it."""
    value = _new(_UUID)
    _set(value, "int", _random_128() & _ID_MASK | _ID_BITS)
    _set(value, "is_safe", _UNKNOWN)
    return value


def _now() -> datetime:
    return datetime.now(UTC)


class MessageRole(StrEnum):
    """Who wrote a message."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


#: the roles whose content ``MODELPLEX_MAX_MESSAGE_LENGTH`` limits: what the user sends
_LIMITED = frozenset({MessageRole.USER, MessageRole.SYSTEM})
_read_limit: tuple[str | None, int] = (None, env.DEFAULT_MAX_MESSAGE_LENGTH)  # (text, value)


def _max_message_length() -> int:
    """``MODELPLEX_MAX_MESSAGE_LENGTH`` as it is now: read on every message (a change is
    honoured at once), parsed only when its text changed (a bad value raises every time)."""
    global _read_limit
    raw, seen = env.lookup("MODELPLEX_MAX_MESSAGE_LENGTH"), _read_limit
    if raw == seen[0]:
        return seen[1]
    value = env.max_message_length()
    _read_limit = (raw, value)
    return value


def _content_problem(role: MessageRole, content: str, images: tuple[Any, ...],
                     tool_calls: tuple[Any, ...], max_length: int | None) -> str | None:
    """What is wrong with a message's (stripped) content, or None: the rules of
    :class:`ChatMessage`."""
    if not content and not images and not tool_calls:
        return "content must not be empty (attach images or tool_calls, or give some text)"
    limit = max_length or _max_message_length() if role in _LIMITED else None
    if limit is not None and len(content) > limit:
        return (f"content is {len(content)} characters, more than the maximum of {limit}; "
                "shorten it or raise MODELPLEX_MAX_MESSAGE_LENGTH")
    bad = _SURROGATE.search(content)
    if bad is not None:
        return (f"content is not valid text: character {bad.start()} is an undecodable byte "
                f"({bad.group()!a}); give the text as UTF-8")
    return None


class ChatMessage(BaseModel):
    """One immutable message of a conversation.

    ``content`` is stripped and must not be empty unless ``images`` or ``tool_calls`` are
    attached; what the user sends (a ``user`` or ``system`` message) may be at most
    :attr:`max_content_length` characters (default 1,000,000, or the
    ``MODELPLEX_MAX_MESSAGE_LENGTH`` environment variable), while an answer (``assistant``)
    or a tool's result is never refused for its length; all content must be valid Unicode (a
    lone surrogate, which is what undecodable bytes become, is refused). ``images`` holds file
    paths, raw bytes or base64 strings; providers encode them as their API needs. ``tool_calls`` are
    ``{"id", "name", "arguments"}`` dicts on assistant messages; a ``tool`` message answers one
    with ``tool_call_id`` and the tool's ``name``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    #: the longest content accepted; ``None`` reads ``MODELPLEX_MAX_MESSAGE_LENGTH`` each time
    max_content_length: ClassVar[int | None] = None

    role: MessageRole
    content: str = ""
    images: tuple[str | bytes, ...] = ()
    tool_calls: tuple[dict[str, Any], ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    id: uuid.UUID = Field(default_factory=_new_id)
    timestamp: datetime = Field(default_factory=_now)

    @field_validator("content", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        if value is None:
            return ""
        return value.strip() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_content(self) -> ChatMessage:
        problem = _content_problem(self.role, self.content, self.images, self.tool_calls,
                                   self.max_content_length)
        if problem is not None:
            raise ValueError(problem)
        return self

    def with_content(self, content: str) -> ChatMessage:
        """This message with ``content`` instead: checked by the same rules as a new message
        (stripped, not empty, the length limit, valid text), with its own ``id``,
        ``timestamp`` and empty ``metadata``; its other fields are this message's, validated
        when it was built, and are not validated again (about a third of building one).
        Raises ``ValueError`` naming the problem."""
        if not isinstance(content, str):
            raise ValueError(f"content must be text (got {type(content).__name__})")
        content = content.strip()
        problem = _content_problem(self.role, content, self.images, self.tool_calls,
                                   self.max_content_length)
        if problem is not None:
            raise ValueError(problem)
        values = self.__dict__.copy()
        values["content"] = content
        values["metadata"] = {}
        values["id"] = _message_id()
        values["timestamp"] = _now()
        copy = object.__new__(type(self))  # as pydantic's own copy builds one
        object.__setattr__(copy, "__dict__", values)
        object.__setattr__(copy, "__pydantic_fields_set__",
                           self.__pydantic_fields_set__ | {"content"})
        object.__setattr__(copy, "__pydantic_extra__", None)
        object.__setattr__(copy, "__pydantic_private__", None)
        return copy

    @classmethod
    def system(cls, content: str, **kw: Any) -> ChatMessage:
        """A system message."""
        return cls(role=MessageRole.SYSTEM, content=content, **kw)

    @classmethod
    def user(cls, content: str, **kw: Any) -> ChatMessage:
        """A user message."""
        return cls(role=MessageRole.USER, content=content, **kw)

    @classmethod
    def assistant(cls, content: str, **kw: Any) -> ChatMessage:
        """An assistant message."""
        return cls(role=MessageRole.ASSISTANT, content=content, **kw)


#: how a new message gets its id (the field's own default)
_message_id: Any = ChatMessage.model_fields["id"].default_factory


class ChatSession(BaseModel):
    """A conversation with one model: its settings and its history.

    ``provider`` may be left out (``ChatSession(model="llama3.2", temperature=0.7)``); a
    :class:`~modelplex.manager.ChatManager` fills it in.
    """

    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    model: str
    provider: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, gt=0)
    system_prompt: str | None = None
    messages: list[ChatMessage] = Field(default_factory=list)
    id: uuid.UUID = Field(default_factory=_new_id)
    created_at: datetime = Field(default_factory=_now)


class ModelConfig(BaseModel):
    """The model a :class:`~modelplex.manager.ChatManager` talks to, with its settings.

    ``ChatManager(ModelConfig(name="llama3.2", temperature=0.7))`` is the same as
    ``ChatManager("llama3.2", options={"temperature": 0.7})``. ``name`` is ``"provider:model"``,
    a named model of the config, a provider name, or a bare model name that exactly one installed
    provider lists. ``context_length`` is the context window the caller plans for: it is kept
    (``chat.model_config``) and reported, not sent (providers that size the context at load time
    take it from their own configuration, e.g. ``n_ctx`` of llamacpp). ``options`` are further
    provider options. (Not to be confused with :class:`modelplex.config.ModelConfig`, a named
    model of the config file.)
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = Field(min_length=1)
    context_length: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)

    def request_options(self) -> dict[str, Any]:
        """The provider options this config sets (``options`` plus the sampling fields given)."""
        fields = {"temperature": self.temperature, "top_p": self.top_p,
                  "max_tokens": self.max_tokens}
        return {**self.options, **{k: v for k, v in fields.items() if v is not None}}


def human_size(size: int | None) -> str | None:
    """Format a byte count the way people read it: ``93.4 MB``."""
    if size is None:
        return None
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return None  # pragma: no cover


class ModelInfo(BaseModel):
    """What a provider knows about one model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    id: str
    name: str
    provider: str
    family: str | None = None
    parameter_count: int | None = None
    parameter_size: str | None = None
    quantization: str | None = None
    size_bytes: int | None = None
    context_length: int | None = None
    max_tokens: int | None = None
    """The most tokens one answer may hold, where the provider says (seed 003's ``max_tokens``)."""
    description: str | None = None
    """The provider's description of the model, where it has one."""
    capabilities: list[str] = Field(default_factory=list)
    digest: str | None = None
    modified: datetime | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def size(self) -> str | None:
        """The size in a human form, e.g. ``93.4 MB``."""
        return human_size(self.size_bytes)


GB = 1_000_000_000
"""Bytes in a gigabyte (decimal, as model sizes are shown)."""


class ModelSize(StrEnum):
    """A model's size category: ``small`` (under 5 GB), ``medium`` (5 to 20 GB), ``large``.

    ``ModelSize.of(info)`` (a :class:`ModelInfo` or a byte count) is its category, ``None``
    when the size is unknown; ``ModelSize.to_gb(n)`` and ``ModelSize.to_bytes(gb)`` convert.
    ``ModelRegistry.search(size="small")`` filters by it.
    """

    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"

    @staticmethod
    def to_gb(size_bytes: int) -> float:
        """Bytes to gigabytes (10^9 bytes)."""
        if size_bytes < 0:
            raise ValueError(f"a size cannot be negative (got {size_bytes})")
        return size_bytes / GB

    @staticmethod
    def to_bytes(gigabytes: float) -> int:
        """Gigabytes (10^9 bytes) to bytes."""
        if gigabytes < 0:
            raise ValueError(f"a size cannot be negative (got {gigabytes})")
        return round(gigabytes * GB)

    @classmethod
    def of(cls, model: ModelInfo | int | None) -> ModelSize | None:
        """The category of a model (or of a byte count); ``None`` when the size is unknown."""
        size = model.size_bytes if isinstance(model, ModelInfo) else model
        if size is None:
            return None
        gigabytes = cls.to_gb(size)
        return cls.SMALL if gigabytes < 5 else cls.MEDIUM if gigabytes <= 20 else cls.LARGE


class TaskStatus(StrEnum):
    """The state of a long operation."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Task(BaseModel):
    """A long operation (a model download, say) and how far it got."""

    model_config = ConfigDict(validate_assignment=True)

    name: str
    description: str = ""
    status: TaskStatus = TaskStatus.PENDING
    completed: int | None = None
    total: int | None = None
    message: str | None = None
    error: str | None = None
    id: uuid.UUID = Field(default_factory=_new_id)
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)

    @model_validator(mode="after")
    def _in_order(self) -> Task:
        aware = (self.created_at.tzinfo is not None, self.updated_at.tzinfo is not None)
        if aware[0] == aware[1] and self.updated_at < self.created_at:
            raise ValueError(f"updated_at ({self.updated_at.isoformat()}) is before created_at "
                             f"({self.created_at.isoformat()})")
        return self

    @property
    def progress(self) -> float | None:
        """Fraction done, 0 to 1, when the total is known."""
        if not self.total or self.completed is None:
            return None
        return min(1.0, self.completed / self.total)


@attrs.define(slots=True)
class PullProgress:
    """One progress event of a model download (``status``, and bytes when known)."""

    status: str
    digest: str | None = None
    completed: int | None = None
    total: int | None = None


class HealthStatus(BaseModel):
    """Whether a provider is usable, and why not."""

    provider: str
    healthy: bool
    detail: str | None = None
    version: str | None = None
    model_count: int | None = None
    latency_ms: float | None = None
