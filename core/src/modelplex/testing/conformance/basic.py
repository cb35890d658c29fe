"""The basic suite: streaming, usage, finish reasons, complete(), missing models."""

from __future__ import annotations

import pytest

from modelplex.chunks import ChatResponse, StreamChunk
from modelplex.errors import ModelNotFoundError, UnsupportedOperationError
from modelplex.finish import FINISH_REASONS
from modelplex.provider import Capabilities, CommonOptions, Provider
from modelplex.testing.conformance.base import ConformanceBase
from modelplex.testing.upstream import FaultyUpstream, Reply

__all__ = ["USAGE_REPLY", "BasicSuite"]

#: The answer the usage checks script on the test upstream: counts no estimate would give.
USAGE_REPLY = Reply(prompt_tokens=17, completion_tokens=9)


class BasicSuite(ConformanceBase):
    """What every provider shows: it declares itself and streams a well-formed answer."""

    async def test_declares_itself(self, provider: Provider) -> None:
        """A name, capability flags and an options model derived from CommonOptions."""
        assert isinstance(provider.name, str)
        assert provider.name
        assert isinstance(provider.capabilities, Capabilities)
        assert issubclass(provider.Options, CommonOptions)
        assert provider.Options.model_config.get("extra") == "forbid"

    async def test_stream_yields_text_chunks(self, provider: Provider, model: str) -> None:
        """Streaming yields StreamChunk objects whose text is not empty."""
        chunks = await self.collect(provider, model)
        assert chunks, "the stream yielded nothing"
        assert all(isinstance(c, StreamChunk) for c in chunks)
        assert "".join(c.content for c in chunks).strip()

    def _expected_usage(self, upstream: FaultyUpstream | None, wired: Provider | None,
                        provider: Provider) -> tuple[int, int] | None:
        """Script :data:`USAGE_REPLY` on the upstream; the usage it then reports, if any."""
        wire = self.upstream_wire
        if upstream is None or wire is None or provider is not wired:
            return None
        upstream.script(self.upstream_model, USAGE_REPLY)
        return wire.expected_usage(USAGE_REPLY)

    async def test_usage_only_in_final_chunk(self, provider: Provider, model: str,
                                             upstream: FaultyUpstream | None,
                                             wired: Provider | None) -> None:
        """The final chunk carries usage and a finish reason; no earlier chunk has usage.

        Against the test upstream, the usage is exactly what the server reported."""
        expected = self._expected_usage(upstream, wired, provider)
        chunks = await self.collect(provider, model)
        final = chunks[-1]
        assert final.usage is not None, (
            "the final chunk has no usage: expected a Usage(prompt_tokens, completion_tokens)"
            + (f" of {expected}, as the server reported" if expected else ""))
        assert final.finish_reason is not None, "the final chunk has no finish_reason"
        early = [i for i, c in enumerate(chunks[:-1]) if c.usage is not None]
        assert not early, f"chunks {early} carry usage: expected it on the final chunk only"
        got = (final.usage.prompt_tokens, final.usage.completion_tokens)
        if expected is not None:
            wanted = (*expected, False)
            assert (*got, final.usage.estimated) == wanted, (
                f"expected the usage the server reported, (prompt_tokens, completion_tokens) "
                f"= {expected} and estimated=False; got {got}, estimated="
                f"{final.usage.estimated}: read the API's own counts")
        assert final.usage.completion_tokens > 0, (
            f"expected completion_tokens > 0 for an answer of {len(chunks)} chunk(s); got {got}")

    async def test_prompt_tokens_reported(self, provider: Provider, model: str,
                                          upstream: FaultyUpstream | None,
                                          wired: Provider | None) -> None:
        """The final usage counts the prompt (reported by the API, or estimated)."""
        expected = self._expected_usage(upstream, wired, provider)
        chunks = await self.collect(provider, model)
        usage = chunks[-1].usage
        assert usage is not None, "the final chunk has no usage: expected prompt_tokens > 0"
        if expected is not None:
            assert usage.prompt_tokens == expected[0], (
                f"expected prompt_tokens={expected[0]}, as the server reported; got "
                f"{usage.prompt_tokens}: read the API's prompt count (input_tokens, "
                "prompt_eval_count, promptTokenCount, ...)")
        assert usage.prompt_tokens > 0, "expected prompt_tokens > 0, got 0: read the API's " \
            "prompt count (input_tokens, prompt_eval_count, ...) or estimate it with " \
            "estimated=True"

    async def test_finish_reason_in_vocabulary(self, provider: Provider, model: str) -> None:
        """Finish reasons are modelplex's (modelplex.finish), never the API's own words."""
        chunks = await self.collect(provider, model)
        assert chunks[-1].finish_reason in FINISH_REASONS, (
            f"finish_reason {chunks[-1].finish_reason!r} is not one of "
            f"{sorted(FINISH_REASONS)}: translate it with "
            "modelplex.finish.normalize_finish_reason")
        await self.prepare("complete")
        response = await provider.complete(self.messages, model=model, options=self.options)
        assert response.finish_reason in FINISH_REASONS

    async def test_complete_equals_joined_stream(self, provider: Provider, model: str) -> None:
        """The non-streaming answer is the joined stream, with the same usage."""
        chunks = await self.collect(provider, model)
        await self.prepare("complete")
        response = await provider.complete(self.messages, model=model, options=self.options)
        assert isinstance(response, ChatResponse)
        assert response.content == "".join(c.content for c in chunks)
        streamed = chunks[-1].usage
        assert streamed is not None, "the stream's final chunk has no usage"
        assert response.usage.completion_tokens == streamed.completion_tokens, (
            f"expected complete() to report the stream's completion_tokens="
            f"{streamed.completion_tokens}; got {response.usage.completion_tokens}")
        assert response.finish_reason == chunks[-1].finish_reason

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
        chunks = await self.collect(provider, model)
        assert chunks[-1].usage is not None

    async def test_unsupported_operations_raise_clear_errors(self, provider: Provider) -> None:
        """Operations the provider does not declare raise UnsupportedOperationError."""
        if not provider.capabilities.embeddings:
            with pytest.raises(UnsupportedOperationError, match=provider.name):
                await provider.embed(["x"], model="m")
        if not provider.capabilities.model_management:
            with pytest.raises(UnsupportedOperationError, match=provider.name):
                async for _ in provider.pull_model("m"):
                    pass
