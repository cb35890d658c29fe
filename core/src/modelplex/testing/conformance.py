"""``ProviderConformanceTests``: the behaviour every provider must show.

Subclass it in your provider's tests and supply two fixtures, ``provider`` (an instance,
closed after the test) and ``model`` (a model name the provider serves)::

    import pytest
    from modelplex.testing import ProviderConformanceTests

    class TestMyProvider(ProviderConformanceTests):
        @pytest.fixture
        async def provider(self):
            async with MyProvider() as p:
                yield p

        @pytest.fixture
        def model(self):
            return "my-model"

A provider that talks to a replayed server overrides :meth:`prepare` to install the replay for
each scenario (``"stream"``, ``"complete"``, ``"model_not_found"``, ``"cancel"``). The tests
are async; they run under pytest-asyncio (``asyncio_mode = "auto"`` or the class marker).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from modelplex.chunks import ChatResponse, StreamChunk
from modelplex.errors import ModelNotFoundError, OptionsError, UnsupportedOperationError
from modelplex.provider import Capabilities, CommonOptions, Provider

__all__ = ["ProviderConformanceTests"]


class ProviderConformanceTests:
    """Streaming, non-streaming, usage, options, error mapping and cancellation."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    #: Messages sent by every test.
    messages: ClassVar[list[dict[str, Any]]] = [
        {"role": "user", "content": "What is the capital of France?"}]
    #: Options that make the answer deterministic (non-streaming must equal streaming).
    options: ClassVar[dict[str, Any]] = {"temperature": 0, "seed": 42, "max_tokens": 24}
    #: A model name the provider does not have.
    missing_model: ClassVar[str] = "no-such-model-for-modelplex-tests"

    async def prepare(self, scenario: str) -> None:
        """Set up what the next request needs; replaying providers install their replay here."""

    async def _collect(self, provider: Provider, model: str) -> list[StreamChunk]:
        await self.prepare("stream")
        return [c async for c in provider.chat(self.messages, model=model,
                                               options=self.options)]

    async def test_declares_itself(self, provider: Provider) -> None:
        """A name, capability flags and an options model derived from CommonOptions."""
        assert isinstance(provider.name, str)
        assert provider.name
        assert isinstance(provider.capabilities, Capabilities)
        assert issubclass(provider.Options, CommonOptions)
        assert provider.Options.model_config.get("extra") == "forbid"

    async def test_stream_yields_text_chunks(self, provider: Provider, model: str) -> None:
        """Streaming yields StreamChunk objects whose text is not empty."""
        chunks = await self._collect(provider, model)
        assert chunks, "the stream yielded nothing"
        assert all(isinstance(c, StreamChunk) for c in chunks)
        assert "".join(c.content for c in chunks).strip()

    async def test_usage_only_in_final_chunk(self, provider: Provider, model: str) -> None:
        """The final chunk carries usage and a finish reason; no earlier chunk has usage."""
        chunks = await self._collect(provider, model)
        final = chunks[-1]
        assert final.usage is not None, "the final chunk has no usage"
        assert final.finish_reason is not None, "the final chunk has no finish_reason"
        assert final.usage.completion_tokens > 0
        assert all(c.usage is None for c in chunks[:-1])

    async def test_complete_equals_joined_stream(self, provider: Provider, model: str) -> None:
        """The non-streaming answer is the joined stream, with the same usage."""
        chunks = await self._collect(provider, model)
        await self.prepare("complete")
        response = await provider.complete(self.messages, model=model, options=self.options)
        assert isinstance(response, ChatResponse)
        assert response.content == "".join(c.content for c in chunks)
        assert chunks[-1].usage is not None
        assert response.usage.completion_tokens == chunks[-1].usage.completion_tokens
        assert response.finish_reason == chunks[-1].finish_reason

    async def test_option_out_of_range_names_field_and_range(self, provider: Provider,
                                                             model: str) -> None:
        """An option out of range fails before anything is sent, naming option and range."""
        with pytest.raises(OptionsError, match=r"temperature.*between 0 and 2"):
            provider.chat(self.messages, model=model, options={"temperature": 5})

    async def test_unknown_option_is_rejected(self, provider: Provider, model: str) -> None:
        """An option the provider does not know is an error listing the valid ones."""
        with pytest.raises(OptionsError, match="no_such_option"):
            provider.chat(self.messages, model=model, options={"no_such_option": 1})

    async def test_missing_model_raises_model_not_found(self, provider: Provider) -> None:
        """Asking for a model the provider lacks raises ModelNotFoundError."""
        await self.prepare("model_not_found")
        with pytest.raises(ModelNotFoundError):
            async for _ in provider.chat(self.messages, model=self.missing_model,
                                         options=self.options):
                pass

    async def test_cancelled_stream_leaves_provider_usable(self, provider: Provider,
                                                           model: str) -> None:
        """Closing a stream after its first chunk stops it; the provider still answers."""
        await self.prepare("cancel")
        stream = provider.chat(self.messages, model=model, options=self.options)
        first = await stream.__anext__()
        assert isinstance(first, StreamChunk)
        await stream.aclose()
        await self.assert_stream_stopped(provider)
        chunks = await self._collect(provider, model)
        assert chunks[-1].usage is not None

    async def assert_stream_stopped(self, provider: Provider) -> None:
        """Check the provider really stopped after a cancelled stream (override to check)."""

    async def test_unsupported_operations_raise_clear_errors(self, provider: Provider) -> None:
        """Operations the provider does not declare raise UnsupportedOperationError."""
        if not provider.capabilities.embeddings:
            with pytest.raises(UnsupportedOperationError, match=provider.name):
                await provider.embed(["x"], model="m")
        if not provider.capabilities.model_management:
            with pytest.raises(UnsupportedOperationError, match=provider.name):
                async for _ in provider.pull_model("m"):
                    pass
