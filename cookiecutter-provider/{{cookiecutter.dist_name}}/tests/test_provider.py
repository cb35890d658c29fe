{%- set wire = cookiecutter.wire_format -%}
{%- set cls = cookiecutter.class_prefix -%}
"""Tests of this provider's own behaviour (the conformance suites cover the shared contract)."""

from __future__ import annotations

from collections.abc import Callable
{%- if wire != "in-process" %}

import pytest
{%- endif %}
{%- if wire == "sse-no-end" %}
from upstream_wire import {{ cls }}Wire
{%- endif %}

import {{ cookiecutter.package_name }}
{%- if wire == "in-process" %}
from modelplex import ChatManager, get_plugins
{%- else %}
from modelplex import get_plugins
{%- endif %}
{%- if wire != "in-process" %}
from modelplex.errors import ConfigurationError, ProviderConnectionError
from modelplex.http import Timeouts
{%- endif %}
from modelplex.plugins import Plugins
{%- if wire != "in-process" %}
from modelplex.testing import FaultyUpstream, closed_port_url
{%- endif %}
from {{ cookiecutter.package_name }}.provider import {% if wire != "in-process" %}API_KEY_ENV, BASE_URL_ENV, {% endif %}{{ cls }}Provider

MESSAGES = [{"role": "user", "content": "hello there"}]
{%- if wire == "in-process" %}


async def test_answers_with_the_last_message() -> None:
    async with {{ cls }}Provider() as provider:
        answer = await provider.complete(MESSAGES, model="{{ cookiecutter.default_model }}")
    assert answer.content == "hello there"
    assert answer.usage.completion_tokens == 2


async def test_native_option_is_accepted() -> None:
    async with {{ cls }}Provider() as provider:
        answer = await provider.complete(MESSAGES, model="{{ cookiecutter.default_model }}",
                                         options={"top_k": 40})
    assert answer.finish_reason == "stop"
{%- else %}


async def test_native_option_and_key_reach_the_server() -> None:
    async with FaultyUpstream(models=["m"]{% if wire == "sse-no-end" %}, wires=[{{ cls }}Wire()]{% endif %}) as upstream:
        base_url = upstream.url{% if wire == "openai-sse" %} + "/v1"{% elif wire == "sse-no-end" %} + "/v1beta"{% endif %}
        async with {{ cls }}Provider(base_url=base_url, api_key="key-123456789") as provider:
            answer = await provider.complete(MESSAGES, model="m", options={"top_k": 40})
        [sent] = upstream.chat_requests()
    assert answer.content == "tok " * upstream.chunks
    assert answer.finish_reason == "stop"
{%- if wire == "ndjson" %}
    assert sent.json["options"] == {"top_k": 40}
{%- elif wire == "sse-no-end" %}
    assert sent.json["generationConfig"] == {"topK": 40}
    assert sent.model == "m"  # read from the path
{%- else %}
    assert sent.json["top_k"] == 40
{%- endif %}
    assert "key-123456789" in str(sent.headers)


async def test_refused_connection_says_what_to_do() -> None:
    url = closed_port_url()
    async with {{ cls }}Provider(base_url=url, api_key="key-123456789") as provider:
        assert "key-123456789" not in repr(provider)
        with pytest.raises(ProviderConnectionError, match="server answers at") as info:
            await provider.complete(MESSAGES, model="m")
    assert url in str(info.value)  # the connect_hint, with {url} filled in


@pytest.mark.parametrize("timeouts", [30, {"connect": 5, "first_byte": 60},
                                      Timeouts(connect=1, between_chunks=2), None])
def test_every_timeouts_spelling_is_accepted(timeouts: object) -> None:
    provider = {{ cls }}Provider(timeouts=timeouts)  # type: ignore[arg-type]
    assert isinstance(provider.http.timeouts, Timeouts)


def test_a_timeouts_typo_names_the_key() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown timeout.*'conect'"):
        {{ cls }}Provider(timeouts={"conect": 5})


def test_the_conventional_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "key-from-the-environment-42")
    monkeypatch.setenv(BASE_URL_ENV, "http://127.0.0.1:9999/api")
    provider = {{ cls }}Provider()
    assert provider.base_url == "http://127.0.0.1:9999/api"
    assert provider.api_key is not None
    assert provider.api_key.get_secret_value() == "key-from-the-environment-42"
    assert "key-from-the-environment-42" not in repr(provider)
    assert {{ cls }}Provider(api_key="given-key-0123456789").api_key is not None
{%- endif %}


def test_the_plugin_registers_the_provider(modelplex_plugins: Plugins,
                                           register_plugin: Callable[..., str]) -> None:
    register_plugin({{ cookiecutter.package_name }}, name="{{ cookiecutter.provider_name }}")
    assert "{{ cookiecutter.provider_name }}" in get_plugins().provider_names()
{%- if wire == "in-process" %}
    with ChatManager("{{ cookiecutter.provider_name }}") as chat:
        assert chat.get_response_with_meta_sync("hello").content == "hello"
{%- endif %}
