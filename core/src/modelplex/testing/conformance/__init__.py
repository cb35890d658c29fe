"""``ProviderConformanceTests``: the behaviour every provider must show, in seven suites.

Subclass it in your provider's tests. An in-process provider supplies two fixtures,
``provider`` (an instance, closed after the test) and ``model`` (a model it serves)::

    import pytest
    from modelplex.testing import ProviderConformanceTests

    class TestMyProvider(ProviderConformanceTests):
        plugin = "mine"                       # the entry-point name
        in_process = True                     # no test upstream: its checks skip

        @pytest.fixture
        async def provider(self):
            async with MyProvider() as p:
                yield p

        @pytest.fixture
        def model(self):
            return "my-model"

An in-process provider says so with ``in_process = True``: the checks that need the test
upstream then skip, naming why (a class that sets neither ``wire`` nor ``in_process`` fails
them, saying how to set ``wire``). A provider that speaks HTTP instead names its wire format
(a built-in's name, or a :class:`~modelplex.testing.wire.Wire` of its own) and builds itself
against the core's test upstream, which then drives every suite (faults, statuses, headers)::

    class TestMyHttpProvider(ProviderConformanceTests):
        wire = "openai"
        plugin = "mine"

        def make_provider(self, base_url, *, timeouts, api_key):
            return MyProvider(base_url=base_url + "/v1", api_key=api_key, timeouts=timeouts)

The suites (each a class you may also subclass alone): :class:`BasicSuite`,
:class:`StreamingFaultsSuite`, :class:`HttpErrorsSuite`, :class:`OptionsSuite`,
:class:`LifecycleSuite`, :class:`ModelManagementSuite`, :class:`EmbeddingsSuite`. Checks that
need the test upstream skip for in-process providers; checks of operations a provider's
``capabilities`` do not declare skip too. Every skip names its reason (``pytest -rs`` lists
them in the summary). The tests are async; they run under pytest-asyncio.
"""

from __future__ import annotations

from modelplex.testing.conformance.base import (
    CONFORMANCE_SECRET,
    CONFORMANCE_TIMEOUTS,
    ConformanceBase,
)
from modelplex.testing.conformance.basic import BasicSuite
from modelplex.testing.conformance.embeddings import EmbeddingsSuite
from modelplex.testing.conformance.faults import StreamingFaultsSuite
from modelplex.testing.conformance.http_errors import HttpErrorsSuite
from modelplex.testing.conformance.lifecycle import LifecycleSuite
from modelplex.testing.conformance.models import ModelManagementSuite
from modelplex.testing.conformance.options import OptionsSuite

__all__ = [
    "CONFORMANCE_SECRET",
    "CONFORMANCE_TIMEOUTS",
    "BasicSuite",
    "ConformanceBase",
    "EmbeddingsSuite",
    "HttpErrorsSuite",
    "LifecycleSuite",
    "ModelManagementSuite",
    "OptionsSuite",
    "ProviderConformanceTests",
    "StreamingFaultsSuite",
]


class ProviderConformanceTests(BasicSuite, OptionsSuite, StreamingFaultsSuite, HttpErrorsSuite,
                               LifecycleSuite, ModelManagementSuite, EmbeddingsSuite):
    """Every suite that applies to the provider: the one class provider authors subclass."""
