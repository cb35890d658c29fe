"""The shared provider conformance suite, run against real llama.cpp with the tiny model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from modelplex.testing import ProviderConformanceTests
from modelplex_llamacpp.provider import LlamaCppProvider


class TestLlamaCppConformance(ProviderConformanceTests):
    """llama.cpp in-process, tiny random-weight model (it babbles; we check protocol)."""

    plugin = "llamacpp"
    in_process = True  # the model runs in this process: no test upstream

    options: ClassVar[dict[str, Any]] = {"temperature": 0, "seed": 42, "max_tokens": 24}

    @pytest.fixture
    async def provider(self, models_dir: Path) -> AsyncIterator[LlamaCppProvider]:
        async with LlamaCppProvider(models_dir=models_dir) as provider:
            yield provider

    @pytest.fixture
    def model(self) -> str:
        return "tiny"

    async def assert_stream_stopped(self, provider: Any) -> None:
        # The worker thread has finished: the model's lock is free again.
        assert all(not loaded.lock.locked() for loaded in provider._loaded.values())
