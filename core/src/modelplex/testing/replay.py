"""Replaying recorded wire traffic with aioresponses, on every aiohttp 3.x.

aioresponses <= 0.7.9 builds responses without the ``stream_writer`` argument that aiohttp
3.14 added; :class:`Replay` supplies it, so plugin tests can replay transcripts::

    from modelplex.testing.replay import Replay

    with Replay() as mock:
        mock.post("http://127.0.0.1:11434/api/chat", body=ndjson, status=200)
        ...

Requires the ``aioresponses`` package (the ``test`` extra of modelplex).
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aioresponses import aioresponses
from yarl import URL

__all__ = ["Replay"]


class _SentRequest:
    """Stands in for the request writer aiohttp >= 3.14 hands every response."""

    output_size = 0


class _ReplayResponse(aiohttp.ClientResponse):
    """A response aioresponses can build on aiohttp >= 3.14."""

    def __init__(self, method: str, url: URL, **kw: Any) -> None:
        kw.setdefault("stream_writer", _SentRequest())
        super().__init__(method, url, **kw)


class Replay(aioresponses):
    """``aioresponses`` that works with every aiohttp 3.x."""

    def add(self, *args: Any, **kw: Any) -> None:
        """Register a replayed response (see aioresponses.add)."""
        if kw.get("response_class") is None:
            kw["response_class"] = _ReplayResponse
        super().add(*args, **kw)
