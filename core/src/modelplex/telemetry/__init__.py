"""OpenTelemetry traces and metrics for every model call, in the GenAI semantic conventions.

The telemetry layer sits in the request path between recording and the response cache, so
``ChatManager``, the CLI, the server and batch runs all get it. It depends on
``opentelemetry-api`` only; the SDK and exporters are the application's choice
(``pip install 'modelplex[otel]'`` installs the SDK and the OTLP/HTTP exporter)::

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)        # before the first model is opened

Each call is one span named ``{gen_ai.operation.name} {gen_ai.request.model}`` (``chat
llama3.2``, ``embeddings nomic-embed-text``), kind ``CLIENT`` (``INTERNAL`` for a model run in
this process, llama.cpp), with the request parameters, the response model, id and finish
reasons, token usage (cache and reasoning tokens where the provider reports them), the
conversation id, the server address, the cost (``modelplex.cost``) and ``error.type`` on
failure. A router's attempts, a tool execution and a structured-output re-ask are spans of
their own (:func:`attempt_span`, :func:`tool_span`, :func:`step_span`; :func:`start_step` for a
step that streams, a streamed structured answer). Message content is
recorded only when content capture is on (``capture_content``), never by default.

Metrics: ``gen_ai.client.token.usage``, ``gen_ai.client.operation.duration``,
``gen_ai.client.operation.time_to_first_chunk`` and ``time_per_output_chunk`` (one value per
stream: its mean gap between chunks, so the per-chunk work stays a counter), with the
conventions' units and bucket boundaries; in the server also ``gen_ai.server.request.duration``
and ``gen_ai.server.time_to_first_token``. Labels: operation, provider, model, server and
error type, never a user, key or message.

Turning it on and off: ``[telemetry]`` in the config file (``enabled``, ``capture_content``)
and ``MODELPLEX_OTEL=0/1``, ``MODELPLEX_OTEL_CAPTURE_CONTENT=0/1`` over it. By default the
layer is there only when an OpenTelemetry SDK tracer or meter provider is configured: with
none, no layer is built and a call costs nothing more (and ``opentelemetry`` is not even
imported).
"""

from __future__ import annotations

from modelplex.telemetry.attributes import provider_name
from modelplex.telemetry.layer import TelemetryLayer, telemetry_layer
from modelplex.telemetry.metrics import DURATION_BUCKETS, TOKEN_BUCKETS, TTFT_BUCKETS
from modelplex.telemetry.settings import (
    TelemetrySettings,
    add_meter_provider,
    enabled,
    remove_meter_provider,
)
from modelplex.telemetry.spans import (
    attempt_span,
    current,
    end_attempt,
    end_step,
    note,
    start_attempt,
    start_step,
    step_span,
    tool_span,
)

__all__ = [
    "DURATION_BUCKETS",
    "TOKEN_BUCKETS",
    "TTFT_BUCKETS",
    "TelemetryLayer",
    "TelemetrySettings",
    "add_meter_provider",
    "attempt_span",
    "current",
    "enabled",
    "end_attempt",
    "end_step",
    "note",
    "provider_name",
    "remove_meter_provider",
    "start_attempt",
    "start_step",
    "step_span",
    "telemetry_layer",
    "tool_span",
]
