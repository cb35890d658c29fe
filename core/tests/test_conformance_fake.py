"""``ProviderConformanceTests`` passes for a correct provider and catches broken ones."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
from pydantic import ConfigDict

from modelplex.chunks import ChatResponse, StreamChunk, Usage
from modelplex.provider import ChatRequest, CommonOptions, Provider
from modelplex.testing import ProviderConformanceTests


class TestFakeProviderConforms(ProviderConformanceTests):
    """The whole suite, run against the in-memory provider of conftest.py."""

    plugin = None  # a test double, not an installed plugin
    in_process = True

    @pytest.fixture
    async def provider(self, fake_cls: type[Provider]) -> AsyncIterator[Provider]:
        async with fake_cls() as provider:
            yield provider
        assert provider.closed  # type: ignore[attr-defined]

    @pytest.fixture
    def model(self) -> str:
        return "echo"

    async def assert_stream_stopped(self, provider: Provider) -> None:
        assert provider.streams_closed_early == 1  # type: ignore[attr-defined]


def usage_on_every_chunk(fake_cls: type[Any]) -> type[Provider]:
    class UsageEverywhere(fake_cls):  # type: ignore[misc,valid-type]
        async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
            async for chunk in super()._stream(request):
                if chunk.usage is None:
                    chunk = attrs.evolve(chunk, usage=Usage(prompt_tokens=1,
                                                            completion_tokens=1))
                yield chunk

    return UsageEverywhere


def no_final_usage(fake_cls: type[Any]) -> type[Provider]:
    class NoUsage(fake_cls):  # type: ignore[misc,valid-type]
        async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
            async for chunk in super()._stream(request):
                yield attrs.evolve(chunk, usage=None)

    return NoUsage


def lenient_options(fake_cls: type[Any]) -> type[Provider]:
    class Lenient(CommonOptions):
        model_config = ConfigDict(extra="allow")

    class LenientProvider(fake_cls):  # type: ignore[misc,valid-type]
        Options = Lenient

    return LenientProvider


def complete_differs(fake_cls: type[Any]) -> type[Provider]:
    class Differs(fake_cls):  # type: ignore[misc,valid-type]
        async def _complete(self, request: ChatRequest) -> ChatResponse:
            response = await super()._complete(request)
            return attrs.evolve(response, content=response.content + " (edited)")

    return Differs


@pytest.mark.parametrize(("make_broken", "test_name", "message"), [
    (usage_on_every_chunk, "test_usage_only_in_final_chunk", None),
    (no_final_usage, "test_usage_only_in_final_chunk", "the final chunk has no usage"),
    (lenient_options, "test_declares_itself", None),
    (complete_differs, "test_complete_equals_joined_stream", None),
])
async def test_suite_fails_for_a_broken_provider(fake_cls: type[Any], make_broken: Any,
                                                 test_name: str, message: str | None) -> None:
    suite = TestFakeProviderConforms()
    method = getattr(suite, test_name)
    good = fake_cls()
    await call(method, good)  # the same check passes for the correct provider

    broken = make_broken(fake_cls)()
    with pytest.raises(AssertionError, match=message):
        await call(method, broken)


async def call(method: Any, provider: Provider) -> None:
    import inspect

    params = inspect.signature(method).parameters
    kwargs: dict[str, Any] = {"provider": provider}
    if "model" in params:
        kwargs["model"] = "echo"
    kwargs.update({name: None for name in ("upstream", "wired") if name in params})
    await method(**kwargs)
