"""What every conformance suite shares: settings, fixtures and the test upstream.

An author sets these on the subclass of :class:`~modelplex.testing.ProviderConformanceTests`:

``provider`` / ``model`` fixtures
    An instance to test (closed after the test) and a model it serves. A provider that speaks
    HTTP does not write them: with :attr:`ConformanceBase.wire` and
    :meth:`ConformanceBase.make_provider` set, both default to a provider pointed at the
    core's test upstream (:class:`~modelplex.testing.upstream.FaultyUpstream`).
``wire``
    The wire format the provider speaks, which the test upstream then answers in:
    ``"openai"`` (SSE on ``/v1/chat/completions``), ``"ollama"`` (NDJSON on ``/api/chat``),
    ``"anthropic"`` (named SSE events on ``/v1/messages``), ``"tgi"`` (TGI's
    ``/generate_stream``), or a :class:`~modelplex.testing.wire.Wire` of your own; ``routes``
    maps other paths to one of them.
``in_process``
    ``True`` for a provider that runs without the test upstream (in this process, or against
    a real server of its own): the checks that need the upstream then skip, saying so. A class
    that sets neither ``wire`` nor ``in_process = True`` fails those checks with a message
    saying how to set ``wire``: they never skip in silence.
``make_provider(base_url, *, timeouts, api_key)``
    Build the provider against ``base_url`` (``http://127.0.0.1:PORT``; append ``/v1`` if
    your API lives there) with the given timeouts and API key.
``plugin``
    The entry-point name that registers the provider (``None``: not distributed as a plugin).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, ClassVar, TypeVar

import pytest
import pytest_asyncio

from modelplex.chunks import StreamChunk
from modelplex.http import Timeouts
from modelplex.provider import Provider
from modelplex.testing.upstream import FaultyUpstream
from modelplex.testing.wire import Wire
from modelplex.testing.wires import get_wire

__all__ = ["CONFORMANCE_SECRET", "CONFORMANCE_TIMEOUTS", "ConformanceBase", "eventually",
           "within"]

T = TypeVar("T")

CONFORMANCE_SECRET = "mpx-conformance-secret-3f9a7c1e5b2d"
"""The API key the suites give a provider; it must reach the wire and never an error."""

CONFORMANCE_TIMEOUTS = Timeouts(connect=2.0, first_byte=0.6, between_chunks=0.4, total=None)
"""Short timeouts, so the stall faults fail fast."""

_UNSET = ""

#: The longest a fault check waits for the provider to give up before failing the test.
FAULT_LIMIT = 10.0


async def eventually(condition: Callable[[], bool], limit: float = 1.5) -> bool:
    """Poll ``condition`` every 10 ms until it holds or ``limit`` seconds pass."""
    for _ in range(max(1, int(limit / 0.01))):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


async def within(awaitable: Awaitable[T], what: str, limit: float = FAULT_LIMIT) -> T:
    """Await ``awaitable``; fail the test if it takes longer than ``limit`` seconds.

    A provider without timeouts would hang on a stalled server: this turns the hang into a
    test failure that says so.
    """
    try:
        async with asyncio.timeout(limit):
            return await awaitable
    except TimeoutError:
        pytest.fail(f"{what}: no answer and no error within {limit} s: does the provider "
                    "apply its timeouts (modelplex.http.Timeouts)?")


class ConformanceBase:
    """Settings and fixtures shared by every suite (see the module docs)."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    #: Messages sent by every test.
    messages: ClassVar[list[dict[str, Any]]] = [
        {"role": "user", "content": "What is the capital of France?"}]
    #: Options that make the answer deterministic (non-streaming must equal streaming).
    options: ClassVar[dict[str, Any]] = {"temperature": 0, "seed": 42, "max_tokens": 24}
    #: A model name the provider does not have.
    missing_model: ClassVar[str] = "no-such-model-for-modelplex-tests"
    #: The wire format of the test upstream: a built-in's name ("openai", "ollama",
    #: "anthropic", "tgi"), a Wire of your own, or None (no test upstream).
    wire: ClassVar[str | Wire | None] = None
    #: True: the provider is tested without the test upstream (its checks skip, saying so).
    in_process: ClassVar[bool] = False
    #: Extra chat routes of the test upstream: path -> wire format.
    routes: ClassVar[Mapping[str, str | Wire]] = {}
    #: The model the test upstream serves (its only one).
    upstream_model: ClassVar[str] = "conformance-model"
    #: The entry-point name the provider is registered under; None if it is no plugin.
    plugin: ClassVar[str | None] = _UNSET
    #: Whether the provider takes an API key (checked: sent, and never shown).
    uses_api_key: ClassVar[bool] = True
    #: Common options the provider's API has no parameter for (not looked for on the wire).
    unsent_options: ClassVar[frozenset[str]] = frozenset()
    #: Seconds a fault check waits for the provider to give up before failing.
    fault_limit: ClassVar[float] = FAULT_LIMIT
    #: The model used for embeddings (default: the ``model`` fixture).
    embedding_model: ClassVar[str | None] = None

    # -- hooks for authors ------------------------------------------------------------------
    def make_provider(self, base_url: str, *, timeouts: Timeouts, api_key: str | None
                      ) -> Provider:
        """Build the provider against the test upstream at ``base_url`` (override it)."""
        raise NotImplementedError(
            f"{type(self).__name__} sets wire={self.wire!r} but does not override "
            "make_provider(base_url, *, timeouts, api_key) to build the provider against "
            "the test upstream")

    async def prepare(self, scenario: str) -> None:
        """Set up what the next request of a scenario needs (replaying providers only).

        Scenarios: ``"stream"``, ``"complete"``, ``"model_not_found"``, ``"cancel"``.
        """

    async def assert_stream_stopped(self, provider: Provider) -> None:
        """Check a cancelled stream really stopped (override for an in-process provider).

        With ``wire`` set, the suite also checks that the test upstream saw the client leave.
        """

    # -- fixtures ---------------------------------------------------------------------------
    @pytest_asyncio.fixture
    async def upstream(self) -> AsyncIterator[FaultyUpstream | None]:
        """The test upstream (``None`` when ``wire`` is not set)."""
        if self.wire is None:
            yield None
            return
        async with FaultyUpstream(models=[self.upstream_model], routes=self.routes,
                                  oversize_bytes=9 * 1024 * 1024, chunks=5,
                                  wires=[get_wire(self.wire)]) as server:
            yield server

    @pytest_asyncio.fixture
    async def wired(self, upstream: FaultyUpstream | None) -> AsyncIterator[Provider | None]:
        """A provider built by ``make_provider`` against the test upstream, closed after."""
        if upstream is None:
            yield None
            return
        provider = self.make_provider(upstream.url, timeouts=CONFORMANCE_TIMEOUTS,
                                      api_key=CONFORMANCE_SECRET if self.uses_api_key
                                      else None)
        try:
            yield provider
        finally:
            await provider.aclose()

    @pytest.fixture
    def provider(self, wired: Provider | None) -> Provider:
        """The provider under test: by default the one against the test upstream."""
        if wired is None:
            pytest.fail(f"{type(self).__name__}: define a `provider` fixture, or set `wire` and "
                        "override make_provider() to test against the core's test upstream")
        return wired

    @pytest.fixture
    def model(self) -> str:
        """A model the provider serves: by default the test upstream's model."""
        if self.wire is None:
            pytest.fail(f"{type(self).__name__}: define a `model` fixture (a model your "
                        "provider serves)")
        return self.upstream_model

    # -- helpers ----------------------------------------------------------------------------
    @property
    def upstream_wire(self) -> Wire | None:
        """The wire the provider's chat requests are answered in (``routes`` first)."""
        if self.routes:
            return get_wire(next(iter(self.routes.values())))
        return get_wire(self.wire) if self.wire is not None else None

    def need_upstream(self, upstream: FaultyUpstream | None, wired: Provider | None
                      ) -> tuple[FaultyUpstream, Provider]:
        """The test upstream and the provider against it; without them, skip or fail.

        A class that says ``in_process = True`` skips the check, naming why; any other class
        fails it, saying how to set ``wire``: a check never skips in silence.
        """
        if upstream is None or wired is None:
            if self.in_process:
                pytest.skip("needs the test upstream (FaultyUpstream); the class says "
                            "in_process = True")
            pytest.fail(
                f"{type(self).__name__} sets no `wire`, so this check cannot run: a provider "
                "that speaks HTTP sets `wire` (a built-in: 'openai', 'ollama', 'anthropic', "
                "'tgi'; or a modelplex.testing.Wire of its own) and overrides "
                "make_provider(base_url, *, timeouts, api_key); a provider that needs no "
                "test upstream says `in_process = True`", pytrace=False)
        return upstream, wired

    async def collect(self, provider: Provider, model: str,
                      options: Mapping[str, Any] | None = None,
                      scenario: str = "stream") -> list[StreamChunk]:
        """Every chunk of one streamed answer."""
        await self.prepare(scenario)
        return [c async for c in provider.chat(
            self.messages, model=model, options=self.options if options is None else options)]
