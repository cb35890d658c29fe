"""Shared fixtures: replayed HTTP and what the provider sent."""

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
    """Replayed HTTP: register responses with ``mock.post(url, ...)``."""
    with Replay() as m:
        yield m


@pytest.fixture
def transcript() -> Callable[[str], str]:
    """Read a recorded SSE body from ``tests/data``."""

    def read(name: str) -> str:
        return (DATA / name).read_text(encoding="utf-8")

    return read


Sent = tuple[str, str, dict[str, str], Any]


@pytest.fixture
def sent() -> Callable[..., list[Sent]]:
    """``sent(mock, provider, *secrets)``: each request as ``(method, url, headers, body)``.

    The headers are the session's merged with the request's, as they went on the wire; any
    header value holding one of ``secrets`` reads ``<redacted>``, so a failing comparison
    never prints a key.
    """

    def requests(mock: Any, provider: Any, *secrets: str) -> list[Sent]:
        base = dict(provider.http.headers)
        out = []
        for (method, url), calls in mock.requests.items():
            for call in calls:
                headers = {**base, **(call.kwargs.get("headers") or {})}
                headers = {k: "<redacted>" if any(s and s in v for s in secrets) else v
                           for k, v in headers.items()}
                data = call.kwargs.get("data")
                out.append((method, str(url), headers, json.loads(data) if data else None))
        return out

    return requests


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No Hugging Face or endpoint settings, and no token file, from the developer's machine."""
    for var in list(os.environ):
        if var.startswith(("HF_", "HUGGING_FACE_", "MODELPLEX_HF_", "TGI_", "TEI_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return monkeypatch
