"""The streaming-faults suite: a provider against an upstream that misbehaves mid-answer."""

from __future__ import annotations

import time

import pytest

from modelplex.errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    ResponseTooLargeError,
    StreamError,
)
from modelplex.provider import Provider
from modelplex.testing.conformance.base import (
    CONFORMANCE_TIMEOUTS,
    ConformanceBase,
    eventually,
    within,
)
from modelplex.testing.upstream import PIECE, FaultyUpstream, Reply, closed_port_url

__all__ = ["StreamingFaultsSuite"]

#: The message the upstream's in-stream error carries, on every wire.
IN_STREAM_MESSAGE = "conformance: the GPU ran out of memory (in-stream 7c1e)"


class StreamingFaultsSuite(ConformanceBase):
    """Every way a stream can go wrong gives the right modelplex error, keeping partial text."""

    async def _fault(self, provider: Provider, upstream: FaultyUpstream, fault: str | Reply,
                     expected: type[ProviderError]) -> ProviderError:
        upstream.script(self.upstream_model, fault)
        name = fault.fault if isinstance(fault, Reply) else fault
        with pytest.raises(expected) as info:
            await within(self._drain(provider), f"the {name!r} fault", self.fault_limit)
        return info.value

    async def _drain(self, provider: Provider) -> None:
        async for _ in provider.chat(self.messages, model=self.upstream_model):
            pass

    async def test_stream_cut_short_raises_stream_error(
            self, upstream: FaultyUpstream | None, wired: Provider | None) -> None:
        """A stream that ends without its end marker is an error, not a short answer."""
        server, provider = self.need_upstream(upstream, wired)
        err = await self._fault(provider, server, "no_end", StreamError)
        assert err.partial_content == PIECE * server.chunks

    async def test_in_stream_error_is_raised_with_its_message(
            self, upstream: FaultyUpstream | None, wired: Provider | None) -> None:
        """An error the server reports inside the stream is a StreamError with its message."""
        server, provider = self.need_upstream(upstream, wired)
        err = await self._fault(provider, server,
                                Reply(fault="error_event", message=IN_STREAM_MESSAGE),
                                StreamError)
        assert err.partial_content == PIECE * 2, "the text streamed before the error was lost"
        assert IN_STREAM_MESSAGE in str(err), (
            f"expected the message the server sent in the stream, {IN_STREAM_MESSAGE!r}, in "
            f"the error; got {str(err)!r}")

    async def test_connection_reset_keeps_partial_content(
            self, upstream: FaultyUpstream | None, wired: Provider | None) -> None:
        """A connection reset mid-stream is a ProviderError keeping the text received."""
        server, provider = self.need_upstream(upstream, wired)
        err = await self._fault(provider, server, "reset", ProviderError)
        assert isinstance(err, StreamError | ProviderConnectionError)
        assert err.partial_content == PIECE * 2

    async def test_malformed_event_raises_stream_error(
            self, upstream: FaultyUpstream | None, wired: Provider | None) -> None:
        """A line that is not JSON is a StreamError."""
        server, provider = self.need_upstream(upstream, wired)
        err = await self._fault(provider, server, "malformed", StreamError)
        assert err.partial_content == PIECE

    async def test_oversized_line_is_refused(
            self, upstream: FaultyUpstream | None, wired: Provider | None) -> None:
        """A line over the limit raises ResponseTooLargeError instead of eating memory."""
        server, provider = self.need_upstream(upstream, wired)
        await self._fault(provider, server, "oversize", ResponseTooLargeError)

    async def test_stall_mid_stream_times_out(
            self, upstream: FaultyUpstream | None, wired: Provider | None) -> None:
        """Silence mid-stream ends in ProviderTimeoutError(phase="between_chunks")."""
        server, provider = self.need_upstream(upstream, wired)
        start = time.monotonic()
        err = await self._fault(provider, server, "stall_mid", ProviderTimeoutError)
        assert isinstance(err, ProviderTimeoutError)
        assert err.phase == "between_chunks"
        assert err.partial_content == PIECE * 2
        assert time.monotonic() - start < 5 * (CONFORMANCE_TIMEOUTS.between_chunks or 1)

    async def test_no_answer_times_out(
            self, upstream: FaultyUpstream | None, wired: Provider | None) -> None:
        """A server that never answers ends in ProviderTimeoutError(phase="first_byte")."""
        server, provider = self.need_upstream(upstream, wired)
        err = await self._fault(provider, server, "hang", ProviderTimeoutError)
        assert isinstance(err, ProviderTimeoutError)
        assert err.phase == "first_byte"

    async def test_connection_refused(self, upstream: FaultyUpstream | None,
                                      wired: Provider | None) -> None:
        """Nothing listening is a ProviderConnectionError, for chat and for complete()."""
        self.need_upstream(upstream, wired)
        async with self.make_provider(closed_port_url(), timeouts=CONFORMANCE_TIMEOUTS,
                                      api_key=None) as provider:
            with pytest.raises(ProviderConnectionError):
                async for _ in provider.chat(self.messages, model=self.upstream_model):
                    pass
            with pytest.raises(ProviderConnectionError):
                await provider.complete(self.messages, model=self.upstream_model)

    async def test_cancelled_stream_stops_upstream(
            self, upstream: FaultyUpstream | None, wired: Provider | None) -> None:
        """Leaving a stream early closes the request, so the server stops generating."""
        server, provider = self.need_upstream(upstream, wired)
        server.script(self.upstream_model, Reply(pieces=[PIECE] * 400, delay=0.005))
        stream = provider.chat(self.messages, model=self.upstream_model)
        await within(stream.__anext__(), "the first chunk", self.fault_limit)
        await stream.aclose()
        stopped = await eventually(lambda: server.active == 0)
        assert stopped, "the server is still generating after the stream was closed"
        assert server.disconnects == 1, (
            "the server kept generating after the stream was closed: leave the request's "
            "`async with` (HttpClient.stream) when the generator is closed")
        chunks = [c async for c in provider.chat(self.messages, model=self.upstream_model)]
        assert chunks[-1].usage is not None
