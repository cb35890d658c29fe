"""Replaying recorded wire traffic with aioresponses, on every aiohttp 3.x.

aioresponses <= 0.7.9 builds responses without the ``stream_writer`` argument that aiohttp
3.14 added; :class:`Replay` supplies it, so plugin tests can replay transcripts::

    from modelplex.testing.replay import Replay

    with Replay() as mock:
        mock.post("http://127.0.0.1:11434/api/chat", body=ndjson, status=200)
        ...

:func:`sent_requests` lists what the provider sent, as it went on the wire. The pytest plugin
serves both as fixtures (``mock``, ``sent``; and ``transcript`` for recorded bodies).

Requires the ``aioresponses`` package (the ``test`` extra of modelplex).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import aiohttp
from aioresponses import aioresponses
from yarl import URL

__all__ = ["Replay", "SentRequest", "sent_bodies", "sent_requests"]


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


class SentRequest(NamedTuple):
    """One request a provider sent through a :class:`Replay`."""

    method: str
    url: str
    headers: dict[str, str]
    json: Any


def sent_requests(mock: aioresponses, provider: Any = None,
                  *secrets: str) -> list[SentRequest]:
    """Each request ``mock`` received, in order, as ``(method, url, headers, json)``.

    With ``provider`` (anything with an ``http`` :class:`~modelplex.http.HttpClient`), the
    headers are the client's merged with the request's, as they went on the wire; any header
    value holding one of ``secrets`` reads ``<redacted>``, so a failing comparison never
    prints a key.
    """
    client = getattr(provider, "http", None)
    base = dict(getattr(client, "headers", None) or {})
    out = []
    for (method, url), calls in mock.requests.items():
        for call in calls:
            headers = {**base, **(call.kwargs.get("headers") or {})}
            headers = {k: "<redacted>" if any(s and s in v for s in secrets) else v
                       for k, v in headers.items()}
            data = call.kwargs.get("data")
            out.append(SentRequest(method, str(url), headers, json.loads(data) if data else None))
    return out


def sent_bodies(mock: aioresponses) -> list[Any]:
    """The JSON bodies of the requests ``mock`` received that had one, in order."""
    return [r.json for r in sent_requests(mock) if r.json is not None]
