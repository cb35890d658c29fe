"""Replayed LM Studio traffic (protocols.md §5) and the aiohttp 3.14 shim for aioresponses."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aioresponses import aioresponses

from modelplex.testing.replay import Replay

DATA = Path(__file__).parent / "data"


@pytest.fixture
def mock() -> Iterator[aioresponses]:
    """Replayed HTTP: register responses with ``mock.get(url, ...)``."""
    with Replay() as m:
        yield m


@pytest.fixture
def transcript() -> Callable[[str], str]:
    """Read a recorded body from ``tests/data``."""

    def read(name: str) -> str:
        return (DATA / name).read_text(encoding="utf-8")

    return read


@pytest.fixture
def sent_json() -> Callable[[Any], list[dict[str, Any]]]:
    """The JSON bodies of every request an ``aioresponses`` mock received."""

    def bodies(mock: Any) -> list[dict[str, Any]]:
        return [json.loads(call.kwargs["data"]) for calls in mock.requests.values()
                for call in calls if call.kwargs.get("data")]

    return bodies


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No LM Studio or OpenAI settings from the developer's environment."""
    for var in list(os.environ):
        if var.startswith(("OPENAI_", "LMSTUDIO_", "LM_API_")):
            monkeypatch.delenv(var)
    return monkeypatch
