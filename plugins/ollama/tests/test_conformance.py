"""The shared provider conformance suites, driven by the core's test upstream (Ollama wire)."""

from __future__ import annotations

from typing import Any, ClassVar

from modelplex.http import Timeouts
from modelplex.testing import ProviderConformanceTests
from modelplex_ollama.provider import OllamaProvider


class TestOllamaConformance(ProviderConformanceTests):
    wire = "ollama"
    plugin = "ollama"
    options: ClassVar[dict[str, Any]] = {"temperature": 0, "seed": 42, "max_tokens": 24}

    def make_provider(self, base_url: str, *, timeouts: Timeouts,
                      api_key: str | None) -> OllamaProvider:
        return OllamaProvider(host=base_url, api_key=api_key, timeouts=timeouts)

    async def assert_stream_stopped(self, provider: Any) -> None:
        # the slot was given back, so the next request to the model does not wait
        assert provider.in_flight(self.upstream_model) == 0
