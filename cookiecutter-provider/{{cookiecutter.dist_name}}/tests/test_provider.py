{%- set wire = cookiecutter.wire_format -%}
{%- set cls = cookiecutter.class_prefix -%}
"""Tests of this provider's own behaviour (the conformance suites cover the shared contract)."""

from __future__ import annotations

from collections.abc import Callable
{%- if wire != "in-process" %}

import pytest
{%- endif %}

import {{ cookiecutter.package_name }}
{%- if wire == "in-process" %}
from modelplex import ChatManager, get_plugins
{%- else %}
from modelplex import get_plugins
{%- endif %}
{%- if wire != "in-process" %}
from modelplex.errors import ProviderConnectionError
{%- endif %}
from modelplex.plugins import Plugins
{%- if wire != "in-process" %}
from modelplex.testing import FaultyUpstream, closed_port_url
{%- endif %}
from {{ cookiecutter.package_name }}.provider import {{ cls }}Provider

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
    async with FaultyUpstream(models=["m"]) as upstream:
        base_url = upstream.url{% if wire == "openai-sse" %} + "/v1"{% endif %}
        async with {{ cls }}Provider(base_url=base_url, api_key="key-123456789") as provider:
            answer = await provider.complete(MESSAGES, model="m", options={"top_k": 40})
        [sent] = upstream.chat_requests()
    assert answer.content == "tok " * upstream.chunks
    assert answer.finish_reason == "stop"
{%- if wire == "ndjson" %}
    assert sent.json["options"] == {"top_k": 40}
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
{%- endif %}


def test_the_plugin_registers_the_provider(modelplex_plugins: Plugins,
                                           register_plugin: Callable[..., str]) -> None:
    register_plugin({{ cookiecutter.package_name }}, name="{{ cookiecutter.provider_name }}")
    assert "{{ cookiecutter.provider_name }}" in get_plugins().provider_names()
{%- if wire == "in-process" %}
    with ChatManager("{{ cookiecutter.provider_name }}") as chat:
        assert chat.get_response_with_meta_sync("hello").content == "hello"
{%- endif %}
