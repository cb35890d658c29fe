{%- set wire = cookiecutter.wire_format -%}
{%- set cls = cookiecutter.class_prefix -%}
"""modelplex's conformance suites: every check that applies to this provider.
{%- if wire != "in-process" %}

They run against the core's test upstream, a real HTTP server on 127.0.0.1 that speaks this
provider's wire format and injects faults (stalls, resets, cut streams, error statuses).
{%- if wire == "sse-no-end" %}
The upstream speaks this API through the Wire in tests/upstream_wire.py.
{%- endif %}
{%- else %}

The provider runs in this process (``in_process = True``): the checks that need the test
upstream skip, naming why (``pytest -rs`` lists every skip's reason).
{%- endif %}
"""

from __future__ import annotations
{% if wire == "in-process" %}
from collections.abc import AsyncIterator

import pytest

{% elif wire == "sse-events" %}
from typing import ClassVar

from modelplex.http import Timeouts
{% elif wire == "sse-no-end" %}
from upstream_wire import {{ cls }}Wire

from modelplex.http import Timeouts
{% else %}
from modelplex.http import Timeouts
{% endif -%}
from modelplex.testing import ProviderConformanceTests
from {{ cookiecutter.package_name }}.provider import {{ cls }}Provider


class Test{{ cls }}Conformance(ProviderConformanceTests):
    plugin = "{{ cookiecutter.provider_name }}"  # the entry-point name in pyproject.toml
{%- if wire == "in-process" %}
    in_process = True  # no test upstream: the checks that need one skip, saying so

    @pytest.fixture
    async def provider(self) -> AsyncIterator[{{ cls }}Provider]:
        async with {{ cls }}Provider() as provider:
            yield provider

    @pytest.fixture
    def model(self) -> str:
        return "{{ cookiecutter.default_model }}"
{%- else %}
{%- if wire == "sse-no-end" %}
    wire = {{ cls }}Wire()  # the test upstream's format: this API's own (upstream_wire.py)
{%- else %}
    wire = "{{ {"openai-sse": "openai", "ndjson": "ollama", "sse-events": "anthropic"}[wire] }}"  # the test upstream's format
{%- endif %}
{%- if wire == "sse-events" %}
    unsent_options: ClassVar[frozenset[str]] = frozenset({"seed"})  # the API has no seed
{%- endif %}

    def make_provider(self, base_url: str, *, timeouts: Timeouts,
                      api_key: str | None) -> {{ cls }}Provider:
        return {{ cls }}Provider(
            base_url=base_url{% if wire == "openai-sse" %} + "/v1"{% elif wire == "sse-no-end" %} + "/v1beta"{% endif %}, api_key=api_key, timeouts=timeouts)
{%- endif %}
