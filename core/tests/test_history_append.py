"""A finished exchange joins the history without the whole history being validated again."""

from __future__ import annotations

from typing import Any

import pytest

from modelplex.manager import ChatManager
from modelplex.plugins import Plugins
from modelplex.types import ChatSession


class _Counting:
    """ChatSession's validator, counting the assignments it validates."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.assignments = 0

    def validate_assignment(self, *args: Any, **kwargs: Any) -> Any:
        self.assignments += 1
        return self.inner.validate_assignment(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_each_turn_appends_the_same_messages_without_revalidating_the_history(
        fake_plugins: Plugins, monkeypatch: pytest.MonkeyPatch) -> None:
    counting = _Counting(ChatSession.__pydantic_validator__)
    async with ChatManager("fake:echo", plugins=fake_plugins) as chat:
        await chat.get_response_with_meta("one")
        before = chat.session.messages
        kept = list(before)
        monkeypatch.setattr(ChatSession, "__pydantic_validator__", counting)
        await chat.get_response_with_meta("two")
        await chat.send_message("three")
        monkeypatch.undo()
        history = chat.session.messages
    assert counting.assignments == 0
    assert before == kept  # a list read earlier is not changed: the history is a new list
    assert history[:2] == kept and all(a is b for a, b in zip(history, kept, strict=False))
    assert [m.content for m in history if m.role == "user"] == ["one", "two", "three"]
    assert "messages" in chat.session.model_fields_set
