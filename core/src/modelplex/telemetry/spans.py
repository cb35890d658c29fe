"""Spans of the work around model calls: a router's attempts, tool executions and modelplex's
own steps (a structured-output re-ask), made only when an SDK tracer provider is configured.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from modelplex.errors import redact
from modelplex.telemetry.attributes import _server_of, error_type, provider_name
from modelplex.telemetry.settings import _SCOPE, _capture_content, _sdk_tracer_provider

# -- spans of the work around model calls --------------------------------------------------------
_tracers: dict[int, tuple[Any, Any]] = {}


def tracer_of(tracer_provider: Any = None) -> Any:
    """modelplex's tracer from ``tracer_provider`` (default: the global one), made once."""
    from opentelemetry import trace

    if tracer_provider is None:
        tracer_provider = trace.get_tracer_provider()
    found = _tracers.get(id(tracer_provider))
    if found is None or found[0] is not tracer_provider:
        from modelplex.__about__ import __version__

        if len(_tracers) > 64:
            _tracers.clear()
        found = _tracers[id(tracer_provider)] = (
            tracer_provider, trace.get_tracer(_SCOPE, __version__,
                                              tracer_provider=tracer_provider))
    return found[1]


def _tracer() -> Any:
    """The global tracer when an SDK is configured (``None`` otherwise: no work at all)."""
    if not _sdk_tracer_provider():
        return None
    return tracer_of()


@contextlib.contextmanager
def _span(name: str, kind: str, attributes: Mapping[str, Any]) -> Iterator[Any]:
    tracer = _tracer()
    if tracer is None:
        yield None
        return
    from opentelemetry import trace

    with tracer.start_as_current_span(name, kind=getattr(trace.SpanKind, kind),
                                      attributes=dict(attributes), record_exception=False,
                                      set_status_on_exception=False) as span:
        try:
            yield span
        except Exception as err:
            _failed(span, err)
            raise


def _attempt_attributes(dep: Any, attempt: int) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "modelplex.route.deployment": dep.label,
        "gen_ai.provider.name": provider_name(dep.provider.name),
        "gen_ai.request.model": dep.model, "modelplex.route.attempt": attempt}
    address, port = _server_of(dep.provider)
    if address is not None:
        attributes["server.address"] = address
        attributes["server.port"] = port
    return attributes


@attrs.define(slots=True)
class _Attempt:
    """An attempt under way: the span is made when it ends (see :func:`start_attempt`)."""

    parent: Any
    start: int
    dep: Any
    attempt: int
    always: bool


def start_attempt(router: Any, dep: Any, attempt: int) -> _Attempt | None:
    """Note the start of one attempt of a routed request on deployment ``dep`` (``None`` when
    tracing is off); :func:`end_attempt` makes its ``modelplex.attempt {label}`` span, a child
    of the span current now. A router of one deployment without fallbacks (what a plain
    ``provider:model`` is) gets attempt spans only when an attempt failed, so a call that
    simply succeeds stays one span."""
    if not _sdk_tracer_provider():
        return None
    from opentelemetry import context

    always = len(router.deployments) > 1 or bool(router.fallbacks)
    return _Attempt(context.get_current(), time.time_ns(), dep, attempt, always)


def end_attempt(token: _Attempt | None, err: BaseException | None = None) -> None:
    """End an attempt from :func:`start_attempt` (``err``: why it failed)."""
    if token is None or (err is None and not token.always and token.attempt == 1):
        return
    span = tracer_of().start_span(f"modelplex.attempt {token.dep.label}",
                                   context=token.parent, start_time=token.start,
                                   attributes=_attempt_attributes(token.dep, token.attempt))
    if err is not None:
        _failed(span, err)
    span.end()


@contextlib.contextmanager
def attempt_span(router: Any, dep: Any, attempt: int) -> Iterator[None]:
    """:func:`start_attempt` and :func:`end_attempt` around a block (a non-streaming call)."""
    token = start_attempt(router, dep, attempt)
    try:
        yield
    except BaseException as err:
        end_attempt(token, err)
        raise
    end_attempt(token)


def _failed(span: Any, err: BaseException) -> None:
    from opentelemetry import trace

    span.set_attribute("error.type", error_type(err))
    status = getattr(err, "status_code", None)
    if isinstance(status, int):
        span.set_attribute("http.response.status_code", status)
    span.set_status(trace.Status(trace.StatusCode.ERROR, redact(str(err))[:500]))


def note(span: Any, key: str, value: Any) -> None:
    """Set an attribute on ``span`` if there is one (helpers yield ``None`` when tracing is
    off)."""
    if span is not None:
        span.set_attribute(key, value)


def tool_span(name: str, call_id: str | None = None, description: str | None = None,
              arguments: Any = None) -> Any:
    """An ``execute_tool {name}`` span around one tool execution (a context manager)."""
    attributes: dict[str, Any] = {"gen_ai.operation.name": "execute_tool",
                                  "gen_ai.tool.name": name, "gen_ai.tool.type": "function"}
    if call_id:
        attributes["gen_ai.tool.call.id"] = call_id
    if description:
        attributes["gen_ai.tool.description"] = description
    if arguments is not None and _capture_content():
        attributes["gen_ai.tool.call.arguments"] = json.dumps(arguments, default=str)
    return _span(f"execute_tool {name}", "INTERNAL", attributes)


def step_span(name: str, **attributes: Any) -> Any:
    """A span around a step of modelplex's own work (a structured-output attempt:
    ``step_span("modelplex.structured", attempt=2)``): attributes are prefixed
    ``modelplex.``."""
    return _span(name, "INTERNAL", {f"modelplex.{k}": v for k, v in attributes.items()
                                    if v is not None})


def start_step(name: str, **attributes: Any) -> Any:
    """:func:`step_span` for work that yields in between (a generator): the span is started
    but not made current (``None`` when tracing is off). Make it current around the awaits
    that start child work with :func:`current`, and end it with :func:`end_step`."""
    tracer = _tracer()
    if tracer is None:
        return None
    from opentelemetry import trace

    return tracer.start_span(name, kind=trace.SpanKind.INTERNAL,
                             attributes={f"modelplex.{k}": v for k, v in attributes.items()
                                         if v is not None})


@contextlib.contextmanager
def current(span: Any) -> Iterator[None]:
    """``span`` (from :func:`start_step`) as the current span inside the block, so what
    starts there nests under it; nothing when ``span`` is ``None``."""
    if span is None:
        yield
        return
    from opentelemetry import context, trace

    token = context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        context.detach(token)


def end_step(span: Any, err: BaseException | None = None) -> None:
    """End a span from :func:`start_step` (``err``: why the step failed)."""
    if span is None:
        return
    if err is not None:
        _failed(span, err)
    span.end()
