"""The HTTP-errors suite: statuses map to the error tree; API keys are sent and never shown."""

from __future__ import annotations

import pytest

from modelplex.errors import (
    AuthenticationError,
    BadRequestError,
    ModelNotFoundError,
    ProviderStatusError,
    RateLimitError,
    ServerBusyError,
    ServerError,
)
from modelplex.provider import Provider
from modelplex.testing.conformance.base import CONFORMANCE_SECRET, ConformanceBase
from modelplex.testing.upstream import FaultyUpstream, Reply

__all__ = ["HttpErrorsSuite"]

STATUSES: list[tuple[str, type[ProviderStatusError]]] = [
    ("400", BadRequestError), ("401", AuthenticationError), ("429", RateLimitError),
    ("500", ServerError), ("503", ServerBusyError), ("529", ServerBusyError)]


class HttpErrorsSuite(ConformanceBase):
    """Error statuses become the matching ProviderStatusError, with no secret in sight."""

    @pytest.mark.parametrize(("status", "expected"), STATUSES,
                             ids=[status for status, _ in STATUSES])
    async def test_status_maps_to_error(self, upstream: FaultyUpstream | None,
                                        wired: Provider | None, status: str,
                                        expected: type[ProviderStatusError]) -> None:
        """Each error status raises its class, with the status code (and Retry-After)."""
        server, provider = self.need_upstream(upstream, wired)
        server.script(self.upstream_model, status)
        with pytest.raises(expected) as info:
            async for _ in provider.chat(self.messages, model=self.upstream_model):
                pass
        assert info.value.status_code == int(status)
        if status in ("429", "503"):
            assert isinstance(info.value, RateLimitError)
            assert info.value.retry_after == 2.0, "Retry-After was not read"

    async def test_complete_maps_status(self, upstream: FaultyUpstream | None,
                                        wired: Provider | None) -> None:
        """complete() maps statuses the same way."""
        server, provider = self.need_upstream(upstream, wired)
        server.script(self.upstream_model, "429")
        with pytest.raises(RateLimitError):
            await provider.complete(self.messages, model=self.upstream_model)

    async def test_unknown_model_raises_model_not_found(
            self, upstream: FaultyUpstream | None, wired: Provider | None) -> None:
        """The server's unknown-model answer (404 or the API's own) is ModelNotFoundError."""
        _, provider = self.need_upstream(upstream, wired)
        with pytest.raises(ModelNotFoundError):
            async for _ in provider.chat(self.messages, model=self.missing_model):
                pass

    async def test_api_key_is_sent_and_never_shown(self, upstream: FaultyUpstream | None,
                                                   wired: Provider | None) -> None:
        """The key reaches the server in a header and no error, body or repr shows it."""
        server, provider = self.need_upstream(upstream, wired)
        if not self.uses_api_key:
            pytest.skip("the provider takes no API key (uses_api_key = False)")
        echo = f"Incorrect API key provided: {CONFORMANCE_SECRET}"
        server.script(self.upstream_model, "ok", Reply(fault="401", message=echo))
        async for _ in provider.chat(self.messages, model=self.upstream_model):
            pass
        [sent, *_] = server.chat_requests()
        assert any(CONFORMANCE_SECRET in value for value in sent.headers.values()), \
            "the API key was not sent in any header"
        with pytest.raises(AuthenticationError) as info:
            async for _ in provider.chat(self.messages, model=self.upstream_model):
                pass
        err = info.value
        for shown in (str(err), repr(err), repr(err.body), repr(provider), str(provider)):
            assert CONFORMANCE_SECRET not in shown, f"the API key is shown: {shown}"
