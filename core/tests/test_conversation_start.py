"""A conversation's start validates its options once: what ``async with ChatManager(...)``
validated is what its first message sends (the options cannot have changed in between), and
every later message, ``set_options``/``set_mode`` and per-message ``options`` are validated
as before (docs/performance.md, "The three user paths")."""

from __future__ import annotations

from typing import Any

import pytest

from modelplex import ChatManager
from modelplex.plugins import Plugins
from modelplex.provider import CommonOptions
from modelplex.routing import Router


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The options each validation by a plain model's router was given."""
    seen: list[dict[str, Any]] = []
    original = Router.parse_options

    def counted(self: Router, options: Any) -> CommonOptions:
        seen.append(dict(options or {}))
        return original(self, options)

    monkeypatch.setattr(Router, "parse_options", counted)
    return seen


async def _send(chat: ChatManager, **kw: Any) -> None:
    async for _ in chat.send_message("hello", **kw):
        pass


async def test_the_first_message_sends_the_options_validated_at_open(
        fake_plugins: Plugins, fake_plugin: Any, validations: list[dict[str, Any]]) -> None:
    async with ChatManager("fake:echo", plugins=fake_plugins,
                           options={"temperature": 0.3}) as chat:
        assert len(validations) == 1  # opening the model
        await _send(chat)
        assert len(validations) == 1  # the first message: the same options, not again
        await _send(chat)
        assert len(validations) == 2  # later messages validate theirs
        chat.set_options(top_p=0.5)
        assert len(validations) == 3
        await _send(chat)
        assert len(validations) == 3  # what set_options validated, sent once
        await _send(chat, options={"max_tokens": 2})
        assert validations[-1] == {"temperature": 0.3, "top_p": 0.5, "max_tokens": 2}
        chat.set_mode("precise")
        await _send(chat)
    sent = [r.options.set_values() for r in fake_plugin.created[0].requests]
    assert sent[:4] == [{"temperature": 0.3}, {"temperature": 0.3},
                        {"temperature": 0.3, "top_p": 0.5},
                        {"temperature": 0.3, "top_p": 0.5, "max_tokens": 2}]
    assert sent[4]["temperature"] == 0.3  # kept options over the mode's preset
    assert len({id(r.options) for r in fake_plugin.created[0].requests}) == len(sent)
    assert chat.session.temperature == 0.3


async def test_a_switch_of_model_validates_for_the_new_one(
        fake_plugins: Plugins, fake_plugin: Any, validations: list[dict[str, Any]]) -> None:
    async with ChatManager("fake:echo", plugins=fake_plugins) as chat:
        await chat.initialize_model("fake:other", temperature=0.7)
        await _send(chat)
        await chat.initialize_model("fake:echo")
        await _send(chat)
    sent = [(r.model, r.options.set_values()) for r in fake_plugin.created[0].requests]
    assert sent == [("other", {"temperature": 0.7}), ("echo", {"temperature": 0.7})]
    assert len(validations) == 3  # three opens; each first message took its open's
