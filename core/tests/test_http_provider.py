"""HttpProvider: the headers, the key kept secret, the shared client, repr, aclose, hints."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr

import modelplex
from modelplex.chunks import StreamChunk, Usage
from modelplex.errors import (
    ConfigurationError,
    ModelNotFoundError,
    ProviderConnectionError,
    ProviderError,
)
from modelplex.http import HttpClient, Timeouts
from modelplex.http_provider import HttpProvider
from modelplex.provider import ChatRequest
from modelplex.streams import ndjson_json
from modelplex.testing import FaultyUpstream, closed_port_url

KEY = "sk-http-provider-secret-0123456789"


class Tiny(HttpProvider):
    name = "tiny"
    default_base_url = "http://127.0.0.1:9"
    connect_hint = "nothing answers at {url}: start it with `tiny serve`"

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        body = {"model": request.model, "stream": True,
                "messages": [{"role": m.role.value, "content": m.content}
                             for m in request.messages]}
        async with self.http.stream("POST", "/api/chat", body) as resp:
            async for obj in ndjson_json(resp, provider=self.name):
                if obj.get("done"):
                    yield StreamChunk(finish_reason="stop", usage=Usage(
                        prompt_tokens=obj["prompt_eval_count"],
                        completion_tokens=obj["eval_count"]))
                else:
                    yield StreamChunk(obj["message"]["content"])


class KeyInHeader(Tiny):
    api_key_header = "x-api-key"
    api_key_prefix = ""

    def _status_error(self, status: int, body: Any,
                      headers: Mapping[str, str]) -> ProviderError | None:
        if status == 400:
            return ModelNotFoundError("tiny: a 400 means an unknown model here",
                                      status_code=status, provider=self.name)
        return None


def test_exported_from_the_package_root() -> None:
    assert modelplex.HttpProvider is HttpProvider


async def test_headers_key_and_default_user_agent() -> None:
    async with FaultyUpstream() as upstream, \
            Tiny(base_url=upstream.url + "/", api_key=KEY, headers={"X-Team": "a"}) as p:
        assert p.base_url == upstream.url
        answer = await p.complete([{"role": "user", "content": "hi"}], model="m")
        assert answer.content == "tok " * 5
        [sent] = upstream.chat_requests()
        assert sent.headers["Authorization"] == f"Bearer {KEY}"
        assert sent.headers["X-Team"] == "a"
        assert sent.headers["User-Agent"] == f"modelplex/{modelplex.__version__}"
        assert sent.headers["Accept"] == "application/json"


async def test_key_header_and_status_hook() -> None:
    async with FaultyUpstream() as upstream, \
            KeyInHeader(base_url=upstream.url, api_key=SecretStr(KEY)) as p:
        upstream.faults.append("400")
        with pytest.raises(ModelNotFoundError, match="unknown model here"):
            await p.complete([{"role": "user", "content": "hi"}], model="m")
        await p.complete([{"role": "user", "content": "hi"}], model="m")
        sent = upstream.chat_requests()[-1]
        assert sent.headers["x-api-key"] == KEY and "Authorization" not in sent.headers


def test_key_is_secret_in_repr_and_vars() -> None:
    p = Tiny(base_url="http://host:1234/v1", api_key=KEY)
    assert isinstance(p.api_key, SecretStr) and isinstance(p.http, HttpClient)
    assert repr(p) == "<Tiny 'tiny' http://host:1234/v1>"
    assert KEY not in repr(Tiny(base_url="http://host:1/v1?api_key=" + KEY))
    for text in (repr(p), str(vars(p)), repr(p.http)):
        assert KEY not in text
    assert repr(Tiny(base_url="http://user:pw@host:1")) == "<Tiny 'tiny' http://***@host:1>"
    assert KEY in p.http.secrets
    assert Tiny(api_key="").api_key is None


async def test_connect_hint_and_aclose_twice() -> None:
    p = Tiny(base_url=closed_port_url(), default_model="m")
    assert p.default_model == "m"
    with pytest.raises(ProviderConnectionError, match="start it with `tiny serve`"):
        await p.complete([{"role": "user", "content": "hi"}], model="")
    await p.aclose()
    await p.aclose()


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="headers"):
        Tiny(headers={"Bad Name": "x"})
    with pytest.raises(ConfigurationError, match="timeouts"):
        Tiny(timeouts={"connect": -1})
    assert Tiny(timeouts=30).http.timeouts.total == 30


def test_timeouts_keyword_gets_the_cli_flags() -> None:
    from modelplex.cli.timeouts import accepts_keyword

    assert accepts_keyword(Tiny, "timeouts")


class Configured(HttpProvider):
    """A subclass with its own keywords, passing the common ones on."""

    name = "configured"
    user_agent: ClassVar[str | None] = "configured/1.0"

    def __init__(self, *, host: str = "http://127.0.0.1:1", **kwargs: Any) -> None:
        super().__init__(base_url=host, **kwargs)

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        yield StreamChunk(finish_reason="stop", usage=Usage())


def test_subclass_with_its_own_keywords() -> None:
    p = Configured(host="http://example.test:8", api_key=KEY)
    assert p.base_url == "http://example.test:8"
    assert p.http.headers["User-Agent"] == "configured/1.0"
    assert p.http.headers["Authorization"] == f"Bearer {KEY}"


class Patient(Tiny):
    default_timeouts = Timeouts(connect=5, first_byte=120)


def test_default_timeouts_are_the_base_of_the_users() -> None:
    assert Patient().http.timeouts == Timeouts(connect=5, first_byte=120)
    assert Patient(timeouts={"connect": 1}).http.timeouts == Timeouts(connect=1, first_byte=120)
    assert Patient(timeouts=Timeouts()).http.timeouts == Timeouts()
