"""The shared provider conformance suite, against replayed Ollama traffic."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aioresponses import aioresponses

from modelplex.testing import ProviderConformanceTests
from modelplex_ollama.provider import OllamaProvider

BASE = "http://ollama.test:11434"
CHAT = BASE + "/api/chat"


class TestOllamaConformance(ProviderConformanceTests):
    replay: aioresponses
    wire: Any

    @pytest.fixture(autouse=True)
    def _replay(self, request: pytest.FixtureRequest, mock: aioresponses,
                wire: Any) -> None:
        request.instance.replay = mock
        request.instance.wire = wire

    @pytest.fixture
    async def provider(self) -> AsyncIterator[OllamaProvider]:
        async with OllamaProvider(host=BASE) as p:
            assert isinstance(p, OllamaProvider)
            yield p

    @pytest.fixture
    def model(self) -> str:
        return "llama3.2"

    async def prepare(self, scenario: str) -> None:
        if scenario in ("stream", "cancel"):
            self.replay.post(CHAT, body=self.wire.chat_stream(),
                             content_type="application/x-ndjson")
        elif scenario == "complete":
            self.replay.post(CHAT, body=self.wire.chat_complete())
        elif scenario == "model_not_found":
            self.replay.post(CHAT, status=404, body=json.dumps(
                {"error": f"model '{self.missing_model}' not found"}))
        else:  # pragma: no cover - a new scenario in the core suite
            raise AssertionError(f"no replay for scenario {scenario!r}")

    async def assert_stream_stopped(self, provider: Any) -> None:
        # the slot was given back, so the next request to the model does not wait
        assert provider.in_flight("llama3.2") == 0
        sent = self.wire.sent(self.replay, "POST", "/api/chat")
        assert sent["stream"] is True
        assert sent["options"] == {"temperature": 0, "seed": 42, "num_predict": 24}
