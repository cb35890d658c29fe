"""The validated value types: messages, sessions, model info, tasks."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from modelplex.types import (
    ChatMessage,
    ChatSession,
    MessageRole,
    ModelInfo,
    Task,
    TaskStatus,
    human_size,
)


# -- ChatMessage --------------------------------------------------------------------------------
def test_content_is_stripped() -> None:
    msg = ChatMessage(role="user", content="  hello there \n")
    assert msg.content == "hello there"
    assert msg.role is MessageRole.USER


@pytest.mark.parametrize("content", ["", "   ", "\n\t ", None])
def test_empty_content_is_rejected(content: Any) -> None:
    with pytest.raises(ValidationError, match="content must not be empty"):
        ChatMessage(role="user", content=content)


def test_empty_content_is_fine_with_images_or_tool_calls() -> None:
    with_image = ChatMessage(role="user", content=" ", images=(b"\x89PNG",))
    assert with_image.content == ""
    assert with_image.images == (b"\x89PNG",)
    call = {"id": "c1", "name": "weather", "arguments": {"city": "Paris"}}
    with_call = ChatMessage(role="assistant", tool_calls=[call])
    assert with_call.tool_calls == (call,)


def test_max_length_is_configurable_through_the_classvar(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ChatMessage.max_content_length is None  # read from the environment each time
    monkeypatch.setattr(ChatMessage, "max_content_length", 10)
    assert ChatMessage(role="user", content="x" * 10).content == "x" * 10
    assert ChatMessage(role="user", content="  " + "x" * 10 + "  ").content == "x" * 10
    with pytest.raises(ValidationError) as info:
        ChatMessage(role="user", content="x" * 11)
    text = str(info.value)
    assert "11 characters" in text
    assert "maximum of 10" in text
    assert "MODELPLEX_MAX_MESSAGE_LENGTH" in text


def test_max_length_default_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPLEX_MAX_MESSAGE_LENGTH", "5")
    with pytest.raises(ValidationError, match="maximum of 5"):
        ChatMessage(role="user", content="123456")
    monkeypatch.delenv("MODELPLEX_MAX_MESSAGE_LENGTH")
    assert ChatMessage(role="user", content="123456").content == "123456"


def test_a_changed_max_length_variable_is_honoured_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The variable is read on every message (only its parsing is kept while its text stays
    the same): a change between two messages applies to the second; a bad value is refused
    on every message, not once."""
    from modelplex.errors import ConfigurationError

    for limit in ("5", "10", "5"):
        monkeypatch.setenv("MODELPLEX_MAX_MESSAGE_LENGTH", limit)
        too_long = "x" * (int(limit) + 1)
        with pytest.raises(ValidationError, match=f"maximum of {limit}"):
            ChatMessage.user(too_long)
        assert ChatMessage.user("x" * int(limit)).content == "x" * int(limit)
    monkeypatch.setenv("MODELPLEX_MAX_MESSAGE_LENGTH", "abc")
    for _ in range(2):
        with pytest.raises(ConfigurationError, match="MODELPLEX_MAX_MESSAGE_LENGTH='abc'"):
            ChatMessage.user("hi")
    monkeypatch.delenv("MODELPLEX_MAX_MESSAGE_LENGTH")
    assert ChatMessage.user("x" * 11).content == "x" * 11


def test_the_length_limit_is_for_input_not_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19 #12: the limit is on what the user sends (user and system messages); an
    answer (or a tool's result) is never refused after the model wrote it."""
    monkeypatch.setenv("MODELPLEX_MAX_MESSAGE_LENGTH", "5")
    for role in ("user", "system"):
        with pytest.raises(ValidationError, match="maximum of 5"):
            ChatMessage(role=role, content="123456")
    assert ChatMessage.assistant("x" * 50).content == "x" * 50
    tool = ChatMessage(role="tool", content="y" * 50, tool_call_id="c1", name="read")
    assert tool.content == "y" * 50


@pytest.mark.parametrize("value", ["abc", "0", "-3", "1.5"])
def test_bad_max_length_variable_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch,
                                                          value: str) -> None:
    from modelplex.errors import ConfigurationError

    monkeypatch.setenv("MODELPLEX_MAX_MESSAGE_LENGTH", value)
    with pytest.raises(ConfigurationError) as info:
        ChatMessage(role="user", content="hi")
    assert str(info.value) == (f"MODELPLEX_MAX_MESSAGE_LENGTH={value!r} is not valid: use a "
                               "whole number >= 1 (default 1000000)")


def test_undecodable_text_is_refused_clearly() -> None:
    bad = b"caf\xe9 au lait".decode("utf-8", "surrogateescape")  # what argv/stdin turn it into
    with pytest.raises(ValidationError) as info:
        ChatMessage(role="user", content=bad)
    assert "content is not valid text: character 3 is an undecodable byte" in str(info.value)


def test_session_without_a_provider() -> None:
    session = ChatSession(model="llama2", temperature=0.7)  # seed 000's example
    assert (session.model, session.provider, session.temperature) == ("llama2", None, 0.7)
    with pytest.raises(ValidationError):
        ChatSession(model="llama2", temperature=3.0)


def test_message_is_frozen() -> None:
    msg = ChatMessage.user("hi")
    with pytest.raises(ValidationError, match="frozen"):
        msg.content = "changed"  # type: ignore[misc]
    assert msg.content == "hi"


def test_roles_and_constructors() -> None:
    assert [r.value for r in MessageRole] == ["system", "user", "assistant", "tool"]
    assert ChatMessage.system("s").role is MessageRole.SYSTEM
    assert ChatMessage.user("u").role is MessageRole.USER
    assert ChatMessage.assistant("a").role is MessageRole.ASSISTANT
    tool = ChatMessage(role=MessageRole.TOOL, content="21C", tool_call_id="c1", name="weather")
    assert tool.role == "tool"


def test_bad_role_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        ChatMessage(role="wizard", content="hi")
    assert info.value.errors()[0]["loc"] == ("role",)
    assert "'user'" in str(info.value)


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        ChatMessage(role="user", content="hi", colour="blue")  # type: ignore[call-arg]


def test_each_message_has_id_timestamp_and_its_own_metadata() -> None:
    a = ChatMessage.user("one")
    b = ChatMessage.user("two", metadata={"k": 1})
    assert isinstance(a.id, uuid.UUID)
    assert a.id != b.id
    assert isinstance(a.timestamp, datetime)
    assert a.timestamp.tzinfo is not None
    assert a.metadata == {}
    assert b.metadata == {"k": 1}


def test_with_content_is_a_new_message_checked_by_the_same_rules(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy with other text is what building the message anew gives (but its id, timestamp
    and metadata are its own), and bad text is refused with the same words."""
    template = ChatMessage(role="user", content="?", name="ann", metadata={"k": 1})
    copy = template.with_content("  Paris?  ")
    built = ChatMessage(role="user", content="Paris?", name="ann")
    assert copy.model_dump(exclude={"id", "timestamp"}) == built.model_dump(
        exclude={"id", "timestamp"})
    assert copy == ChatMessage.model_validate(copy.model_dump())
    assert copy.model_fields_set == {"role", "content", "name", "metadata"}
    assert copy.id not in (template.id, template.with_content("x").id)
    assert copy.timestamp >= template.timestamp and copy.metadata == {}
    assert copy.metadata is not template.with_content("x").metadata
    with pytest.raises(ValidationError):  # still frozen
        copy.content = "changed"  # type: ignore[misc]
    monkeypatch.setenv("MODELPLEX_MAX_MESSAGE_LENGTH", "5")
    for text in ("   ", "too long", "a\udc80"):
        with pytest.raises(ValidationError) as built_err:
            ChatMessage(role="user", content=text)
        with pytest.raises(ValueError) as copied_err:
            template.with_content(text)
        assert built_err.value.errors()[0]["msg"] == f"Value error, {copied_err.value}"
    assert ChatMessage.assistant("?").with_content("long answers are fine").role == "assistant"


def test_message_round_trips_through_json() -> None:
    msg = ChatMessage.user("hello", metadata={"source": "cli"})
    again = ChatMessage.model_validate_json(msg.model_dump_json())
    assert again == msg


# -- ChatSession --------------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "good", "bad"), [
    ("temperature", [0, 0.7, 2], [-0.1, 2.01]),
    ("top_p", [0, 0.5, 1], [-0.01, 1.5]),
    ("max_tokens", [1, 4096], [0, -5]),
])
def test_session_ranges(field: str, good: list[float], bad: list[float]) -> None:
    for value in good:
        session = ChatSession(model="m", provider="p", **{field: value})
        assert getattr(session, field) == value
    for value in bad:
        with pytest.raises(ValidationError) as info:
            ChatSession(model="m", provider="p", **{field: value})
        assert info.value.errors()[0]["loc"] == (field,)


def test_session_validates_assignment() -> None:
    session = ChatSession(model="m", provider="p", temperature=1.0)
    session.temperature = 1.5
    assert session.temperature == 1.5
    with pytest.raises(ValidationError, match="temperature"):
        session.temperature = 3
    assert session.temperature == 1.5
    with pytest.raises(ValidationError, match="max_tokens"):
        session.max_tokens = 0
    with pytest.raises(ValidationError, match="messages"):
        session.messages = ["not a message"]  # type: ignore[list-item]


def test_session_history_is_per_session() -> None:
    a = ChatSession(model="m", provider="p")
    b = ChatSession(model="m", provider="p")
    a.messages = [*a.messages, ChatMessage.user("hi")]
    assert len(a.messages) == 1
    assert b.messages == []
    assert a.id != b.id


# -- ModelInfo, human_size, Task ----------------------------------------------------------------
@pytest.mark.parametrize(("size", "text"), [
    (None, None),
    (0, "0 B"),
    (999, "999 B"),
    (1000, "1.0 KB"),
    (98_362_432, "98.4 MB"),
    (4_700_000_000, "4.7 GB"),
    (12_300_000_000_000, "12.3 TB"),
    (5_000_000_000_000_000, "5000.0 TB"),
])
def test_human_size(size: int | None, text: str | None) -> None:
    assert human_size(size) == text


def test_model_info_size_in_human_form() -> None:
    info = ModelInfo(id="llamacpp:smollm2", name="smollm2", provider="llamacpp",
                     size_bytes=98_362_432, parameter_count=134_515_008)
    assert info.size == "98.4 MB"
    data = info.model_dump(mode="json")
    assert data["size"] == "98.4 MB"
    assert data["size_bytes"] == 98_362_432
    assert ModelInfo(id="x", name="x", provider="p").size is None
    with pytest.raises(ValidationError):
        ModelInfo(id="x", name="x", provider="p", sizee=1)  # type: ignore[call-arg]


def test_task_progress() -> None:
    task = Task(name="pull llama3.2")
    assert task.status is TaskStatus.PENDING
    assert task.progress is None
    task.total = 200
    assert task.progress is None  # nothing completed yet
    task.completed = 50
    assert task.progress == 0.25
    task.completed = 250
    assert task.progress == 1.0  # capped
    task.total = 0
    assert task.progress is None
    task.status = "running"  # type: ignore[assignment]
    assert task.status is TaskStatus.RUNNING
    with pytest.raises(ValidationError):
        task.status = "exploded"  # type: ignore[assignment]
