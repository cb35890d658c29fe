"""Shared fixtures of the core tests: a small in-memory provider and a plugin that offers it.

The helpers are handed out through fixtures (``fake_cls``, ``fake_plugin``) because test
modules are imported with ``--import-mode=importlib`` and cannot import this file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import attrs
import pytest

from modelplex import hookimpl
from modelplex.chunks import StreamChunk, Usage
from modelplex.errors import ModelNotFoundError, StreamError
from modelplex.plugins import Plugins
from modelplex.provider import Capabilities, ChatRequest, CommonOptions, Provider
from modelplex.types import ModelInfo


class FakeOptions(CommonOptions):
    """The fake provider's options: the common ones plus one native knob."""

    shout: bool | None = None


class FakeProvider(Provider):
    """A provider that answers with a fixed reply, one word per chunk, usage at the end.

    Config: ``reply`` (the answer), ``fail_after`` (raise a StreamError after that many
    chunks), ``models`` (the model names it serves).
    """

    name: str = "fake"
    Options: ClassVar[type[CommonOptions]] = FakeOptions
    capabilities: ClassVar[Capabilities] = Capabilities(streaming=True)
    default_model: str | None = "echo"

    def __init__(self, reply: str = "The capital of France is Paris.",
                 fail_after: int | None = None,
                 models: tuple[str, ...] = ("echo", "other")) -> None:
        self.reply = reply
        self.fail_after = fail_after
        self.models = models
        self.requests: list[ChatRequest] = []
        self.streams_started = 0
        self.streams_finished = 0
        self.streams_closed_early = 0
        self.closed = False

    def words(self) -> list[str]:
        parts = self.reply.split(" ")
        return [p if i == 0 else " " + p for i, p in enumerate(parts)]

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        self.requests.append(request)
        if request.model not in self.models:
            raise ModelNotFoundError(f"fake: no model named {request.model!r}",
                                     status_code=404, provider=self.name)
        self.streams_started += 1
        text = request.options.set_values()
        words = self.words()[:text.get("max_tokens", None)]
        finished = False
        try:
            for i, word in enumerate(words):
                if self.fail_after is not None and i == self.fail_after:
                    raise StreamError("fake: the upstream broke off", provider=self.name)
                await asyncio.sleep(0)
                yield StreamChunk(content=word.upper() if text.get("shout") else word,
                                  model=request.model)
            prompt_tokens = sum(len(m.content.split()) for m in request.messages)
            cut = len(words) < len(self.words())
            yield StreamChunk(finish_reason="length" if cut else "stop", model=request.model,
                              usage=Usage(prompt_tokens=prompt_tokens,
                                          completion_tokens=len(words)))
            finished = True
        finally:
            if finished:
                self.streams_finished += 1
            else:
                self.streams_closed_early += 1

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(id=f"fake:{m}", name=m, provider="fake") for m in self.models]

    async def aclose(self) -> None:
        self.closed = True


@attrs.define(eq=False)
class FakePlugin:
    """A plugin object: registers a factory for ``name`` that records what it creates."""

    provider_name: str = "fake"
    cls: type[FakeProvider] = FakeProvider
    created: list[FakeProvider] = attrs.Factory(list)

    @hookimpl
    def register_providers(self, register: Callable[..., None]) -> None:
        def factory(**config: Any) -> FakeProvider:
            provider = self.cls(**config)
            self.created.append(provider)
            return provider

        register(factory, name=self.provider_name)


@pytest.fixture
def fake_cls() -> type[FakeProvider]:
    """The FakeProvider class."""
    return FakeProvider


@pytest.fixture
def fake_plugin() -> FakePlugin:
    """A fresh FakePlugin (not registered yet)."""
    return FakePlugin()


@pytest.fixture
def fake_plugins(fake_plugin: FakePlugin) -> Plugins:
    """A fresh Plugins (built-ins only, no entry points) with the fake plugin registered."""
    plugins = Plugins(load_entrypoints=False)
    plugins.register(fake_plugin, name="fake-plugin")
    return plugins


@pytest.fixture
def make_plugin() -> Callable[..., FakePlugin]:
    """Build FakePlugin objects for other provider names or provider classes."""
    return FakePlugin
