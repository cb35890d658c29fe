"""What a conversation's start skips gives the same results as before (docs/performance.md,
"A ChatManager per conversation, third pass"):

* ``modelplex.env.lookup`` answers what ``os.environ.get`` answers, however the environment
  changes (and when ``os.environ`` was replaced);
* whether an OpenTelemetry SDK is configured is what the OpenTelemetry API says, for a
  provider set in code, one named by ``OTEL_PYTHON_*_PROVIDER``, and none;
* the parts of a ``ChatManager`` a plain conversation never uses (its MCP hub, its toolbox,
  the sync twins' event loop) are made on first use and then work as before.
"""

from __future__ import annotations

import os
import types
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from modelplex import ChatManager, env
from modelplex.config import parse_config
from modelplex.mcp import McpHub
from modelplex.plugins import Plugins
from modelplex.telemetry import settings as telemetry_settings
from modelplex.tools import Tool, ToolBox


# -- the environment ---------------------------------------------------------------------------
def test_lookup_answers_what_os_environ_get_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "MODELPLEX_TEST_LOOKUP"
    monkeypatch.delenv(name, raising=False)
    assert env.lookup(name) is None
    for value in ("1", "", "  spaced  ", "caf\u00e9", "a=b"):
        monkeypatch.setenv(name, value)
        assert env.lookup(name) == os.environ.get(name) == value
    os.environ[name] = "direct"  # set through os.environ itself
    assert env.lookup(name) == "direct"
    del os.environ[name]
    assert env.lookup(name) is None
    assert env.lookup("PATH") == os.environ.get("PATH")


def test_lookup_asks_a_replaced_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "environ", {"MODELPLEX_OTEL": "1"})
    assert env.lookup("MODELPLEX_OTEL") == "1"
    assert env.lookup("PATH") is None
    assert env.otel() is True


# -- is an OpenTelemetry SDK configured? ------------------------------------------------------
@pytest.fixture
def fresh_otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No global tracer or meter provider for the test (the previous ones put back after)."""
    tracer, meter = trace._TRACER_PROVIDER, metrics_internal._METER_PROVIDER
    monkeypatch.delenv("OTEL_PYTHON_TRACER_PROVIDER", raising=False)
    monkeypatch.delenv("OTEL_PYTHON_METER_PROVIDER", raising=False)
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = None, Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    yield
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = tracer, Once()
    metrics_internal._METER_PROVIDER = meter
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()


def _api_says_tracer() -> bool:
    return not isinstance(trace.get_tracer_provider(),
                          trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def _api_says_meter() -> bool:
    return type(metrics.get_meter_provider()).__name__ not in ("_ProxyMeterProvider",
                                                               "NoOpMeterProvider")


def test_no_provider_is_no_sdk(fresh_otel: None) -> None:
    assert telemetry_settings._sdk_tracer_provider() is _api_says_tracer() is False
    assert telemetry_settings._sdk_meter_provider() is _api_says_meter() is False


def test_a_provider_set_in_code_is_seen_at_once(fresh_otel: None) -> None:
    assert not telemetry_settings._sdk_tracer_provider()
    trace.set_tracer_provider(TracerProvider())
    assert telemetry_settings._sdk_tracer_provider() is _api_says_tracer() is True
    from opentelemetry.sdk.metrics import MeterProvider

    meter_provider = MeterProvider()
    metrics.set_meter_provider(meter_provider)
    assert telemetry_settings._sdk_meter_provider() is _api_says_meter() is True
    meter_provider.shutdown()


def test_a_provider_named_by_the_environment_is_loaded_as_the_api_loads_it(
        fresh_otel: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_TRACER_PROVIDER", "sdk_tracer_provider")
    assert telemetry_settings._sdk_tracer_provider() is True  # the API loaded the SDK's
    assert isinstance(trace._TRACER_PROVIDER, TracerProvider)
    monkeypatch.setenv("OTEL_PYTHON_METER_PROVIDER", "sdk_meter_provider")
    assert telemetry_settings._sdk_meter_provider() is True
    metrics_internal._METER_PROVIDER.shutdown()  # type: ignore[union-attr]


def test_an_api_without_the_global_is_asked() -> None:
    module = types.SimpleNamespace()  # another API version: no _TRACER_PROVIDER
    assert telemetry_settings._surely_unset(module, "_TRACER_PROVIDER", "X") is False
    module = types.SimpleNamespace(_TRACER_PROVIDER=object())
    assert telemetry_settings._surely_unset(module, "_TRACER_PROVIDER", "X") is False


async def test_telemetry_configured_after_a_manager_was_created_traces_it(
        fresh_otel: None, fake_plugins: Plugins) -> None:
    config = parse_config({})
    chat = ChatManager("fake:echo", plugins=fake_plugins, config=config)
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)  # after the manager, before its model is opened
    async with chat:
        await chat.send_message("hello")
    assert [s.name for s in spans.get_finished_spans()] == ["chat echo"]


# -- the manager's parts, made on first use ----------------------------------------------------
async def test_a_plain_conversation_makes_no_hub_toolbox_or_sync_loop(
        fake_plugins: Plugins) -> None:
    async with ChatManager("fake:echo", plugins=fake_plugins) as chat:
        async for _ in chat.send_message("hello"):
            pass
        await chat.get_response_with_meta("again")
    assert chat._hub is None
    assert chat._toolbox is None
    assert "_blocking" not in vars(chat)
    chat.close_sync()  # no twin ran: nothing to close, and no loop made for it
    assert len(chat.history) == 4


async def test_the_hub_is_made_on_first_use_with_the_managers_settings(
        fake_plugins: Plugins) -> None:
    config = parse_config({})

    def confirm(server: str, tool: str, arguments: dict[str, Any]) -> bool:
        return True

    chat = ChatManager("fake:echo", plugins=fake_plugins, config=config, confirm=confirm)
    hub = chat._mcp
    assert isinstance(hub, McpHub)
    assert chat._mcp is hub  # one per conversation
    assert hub.config is config
    assert hub.confirm is confirm
    await chat.aclose()


def _shout(text: str) -> str:
    """Shout ``text``."""
    return text.upper()


async def test_tools_enabled_after_construction_and_given_per_message(
        fake_plugins: Plugins) -> None:
    chat = ChatManager("fake:echo", plugins=fake_plugins)
    assert chat._tools_for(None) is None
    given = chat._tools_for([_shout])
    assert isinstance(given, ToolBox)
    assert list(given.tools) == ["_shout"]
    assert (given.max_steps, given.raise_errors) == (ToolBox().max_steps,
                                                     ToolBox().raise_errors)
    assert chat._toolbox is None  # a message's tools do not stay
    chat.enable_function_calling([_shout], max_steps=2, raise_tool_errors=True)
    box = chat._tools_for(None)
    assert box is not None
    assert list(box.tools) == ["_shout"] and box.max_steps == 2 and box.raise_errors
    other = Tool(name="other", description="d", parameters={"type": "object"},
                 function=_shout)
    assert box is not chat._toolbox
    assert list(chat._tools_for([other]).tools) == ["_shout", "other"]  # type: ignore[union-attr]
    chat.disable_function_calling()
    assert chat._tools_for(None) is None
    await chat.aclose()


def test_sync_twins_make_their_loop_on_first_use(fake_plugins: Plugins) -> None:
    chat = ChatManager("fake:echo", plugins=fake_plugins)
    assert "_blocking" not in vars(chat)
    with chat:
        assert "".join(c.content for c in chat.send_message_sync("hi")) == \
            "The capital of France is Paris."
        loop = chat._blocking
        assert loop.runner is not None
        assert chat.get_response_with_meta_sync("again").content
        assert chat._blocking is loop
    assert loop.runner is None  # close_sync ran aclose there and forgot the loop


# -- ids ---------------------------------------------------------------------------------------
def test_ids_read_in_batches_are_unique_across_threads() -> None:
    import threading

    from modelplex.types import _ID_BATCH, _new_id

    made: list[list[Any]] = [[] for _ in range(4)]

    def make(into: list[Any]) -> None:
        into.extend(_new_id() for _ in range(_ID_BATCH * 5))

    threads = [threading.Thread(target=make, args=(into,)) for into in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [value for into in made for value in into]
    assert len(set(ids)) == len(ids) == 4 * _ID_BATCH * 5
    assert {value.version for value in ids} == {4}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_does_not_reuse_its_parents_random_bits() -> None:
    from modelplex.types import _ID_BITS, _ID_MASK, _new_id, _random_ids

    _new_id()  # the parent has read a batch: ids are waiting in it
    assert _random_ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, to the parent
        os.close(read)
        os.write(write, _new_id().bytes)
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert child != _new_id().bytes  # the parent's next id is not the child's
    assert all(child != (value & _ID_MASK | _ID_BITS).to_bytes(16, "big")
               for value in _random_ids)
