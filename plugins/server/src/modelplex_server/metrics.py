"""``GET /metrics`` in the Prometheus text format, and W3C trace context on every request.

The metrics are those of :mod:`modelplex.telemetry` (``gen_ai.client.token.usage``,
``gen_ai.client.operation.duration``, time to first chunk, ``gen_ai.server.request.duration``,
``gen_ai.server.time_to_first_token``, cache lookups, cost), recorded by the telemetry layer of
the request path into a private OpenTelemetry meter provider of this server and written with
Prometheus names (``gen_ai_client_operation_duration_seconds``), plus what the server knows
at the moment of the scrape: requests in flight and, per named model that served requests,
each deployment's state (cooling down or not, requests in flight, requests and errors).

When keys are required (``keys`` configured, or ``require_keys``) the route needs an admin
key, like the other admin routes.
``MODELPLEX_OTEL=0`` (or ``[telemetry] enabled = false``) leaves the request path without
the telemetry layer: the scrape then holds the server's own gauges only.

An incoming ``traceparent`` header (W3C trace context) becomes the parent of the spans of the
request, so a client's trace runs through the gateway into the provider call.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web

from modelplex_server.errors import ApiError
from modelplex_server.gateway import GATEWAY, KEY

__all__ = ["METRICS", "ServerMetrics", "setup"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ServerMetrics:
    """The server's private meter provider and its in-memory reader."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        self.reader = InMemoryMetricReader()
        # no exemplars: the text format written here has none, and a record costs ~40% less
        self.provider = MeterProvider(metric_readers=[self.reader],
                                      exemplar_filter=AlwaysOffExemplarFilter())

    def start(self) -> None:
        """Record the telemetry layer's metrics here too."""
        from modelplex import telemetry

        telemetry.add_meter_provider(self.provider)

    def stop(self) -> None:
        """Stop recording here."""
        from modelplex import telemetry

        telemetry.remove_meter_provider(self.provider)
        self.provider.shutdown()


#: The app key of the :class:`ServerMetrics`.
METRICS: web.AppKey[ServerMetrics] = web.AppKey("modelplex_metrics", ServerMetrics)


def setup(app: web.Application) -> None:
    """Add ``/metrics`` and the trace-context middleware to ``app`` (called by
    :func:`~modelplex_server.app.create_app`)."""
    app[METRICS] = ServerMetrics()
    app.router.add_get("/metrics", metrics_handler)
    app.middlewares.append(trace_context_middleware)
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)


async def _start(app: web.Application) -> None:
    app[METRICS].start()


async def _stop(app: web.Application) -> None:
    app[METRICS].stop()


@web.middleware
async def trace_context_middleware(request: web.Request, handler: Handler
                                   ) -> web.StreamResponse:
    """Continue the caller's W3C trace (``traceparent``/``tracestate``) in this request."""
    if "traceparent" not in request.headers or "opentelemetry.trace" not in sys.modules:
        return await handler(request)  # nobody configured tracing: nothing to continue
    from opentelemetry import context, propagate

    token = context.attach(propagate.extract(request.headers))
    try:
        return await handler(request)
    finally:
        context.detach(token)


# -- the scrape -----------------------------------------------------------------------------------
async def metrics_handler(request: web.Request) -> web.Response:
    """The Prometheus text exposition of the metrics (see the module docs)."""
    gateway = request.app[GATEWAY]
    key = request.get(KEY)
    if gateway.settings.keys_required and (key is None or not key.admin):
        raise ApiError(403, "this needs an admin key (a key with admin = true)",
                       type="permission_error", code="admin_required")
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    gauges: list[Any] = []
    active = GaugeMetricFamily("modelplex_server_active_requests",
                               "Model requests in flight in this server.")
    active.add_metric([], gateway.in_flight)
    gauges.append(active)
    cooling = GaugeMetricFamily("modelplex_router_deployment_cooling",
                                "1 while a deployment of a named model is cooling down.",
                                labels=["model", "deployment"])
    busy = GaugeMetricFamily("modelplex_router_deployment_in_flight",
                             "Requests in flight on a deployment of a named model.",
                             labels=["model", "deployment"])
    requests = GaugeMetricFamily("modelplex_router_deployment_requests",
                                 "Requests a deployment of a named model answered or failed.",
                                 labels=["model", "deployment", "outcome"])
    for name in sorted(gateway.resolver.config.models):
        router = gateway.resolver.router(name)
        if router is None:  # not opened yet: nothing to tell
            continue
        try:
            left = await router.state.cooldowns(d.key for d in router.deployments)
        except Exception:  # a broken state backend: no information
            left = {}
        for dep in router.deployments:
            cooling.add_metric([name, dep.label], 1.0 if dep.key in left else 0.0)
            busy.add_metric([name, dep.label], dep.active)
            requests.add_metric([name, dep.label, "ok"], dep.stats.successes)
            requests.add_metric([name, dep.label, "error"],
                                dep.stats.requests - dep.stats.successes)
    gauges += [cooling, busy, requests]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(request.app[METRICS], gauges))
    from prometheus_client import CONTENT_TYPE_LATEST

    return web.Response(body=generate_latest(registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


def prometheus_name(name: str, unit: str) -> str:
    """An OpenTelemetry metric name as Prometheus writes it (``gen_ai.client.operation
    .duration`` in ``s`` -> ``gen_ai_client_operation_duration_seconds``)."""
    base = "".join(c if c.isalnum() else "_" for c in name)
    suffix = {"s": "seconds", "ms": "milliseconds", "By": "bytes"}.get(unit, "")
    if suffix and not base.endswith(suffix):
        base = f"{base}_{suffix}"
    return base


def _label(key: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in key)


class _Collector:
    """The OpenTelemetry metrics of :class:`ServerMetrics` as Prometheus metric families."""

    def __init__(self, metrics: ServerMetrics, extra: list[Any]) -> None:
        self.metrics = metrics
        self.extra = extra

    def collect(self) -> Iterator[Any]:
        from opentelemetry.sdk.metrics.export import Histogram, Sum
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        yield from self.extra
        for metric in self._metrics():
            name = prometheus_name(metric.name, metric.unit or "")
            help_text = metric.description or metric.name
            points: list[Any] = list(metric.data.data_points)
            keys = sorted({k for p in points for k in (p.attributes or {})})
            labels = [_label(k) for k in keys]
            family: Any
            if isinstance(metric.data, Histogram):
                family = HistogramMetricFamily(name, help_text, labels=labels)
                for p in points:
                    buckets, total = [], 0
                    for bound, count in zip(p.explicit_bounds, p.bucket_counts, strict=False):
                        total += count
                        buckets.append((_bound(bound), total))
                    buckets.append(("+Inf", p.count))
                    family.add_metric(_values(p, keys), buckets, sum_value=p.sum)
            elif isinstance(metric.data, Sum) and metric.data.is_monotonic:
                family = CounterMetricFamily(name.removesuffix("_total"), help_text,
                                             labels=labels)
                for p in points:
                    family.add_metric(_values(p, keys), p.value)
            else:
                family = GaugeMetricFamily(name, help_text, labels=labels)
                for p in points:
                    family.add_metric(_values(p, keys), p.value)
            yield family

    def _metrics(self) -> list[Any]:
        data = self.metrics.reader.get_metrics_data()
        if data is None:
            return []
        return [metric for resource in data.resource_metrics
                for scope in resource.scope_metrics for metric in scope.metrics]


def _bound(value: float) -> str:
    return repr(float(value))


def _values(point: Any, keys: list[str]) -> list[str]:
    attributes = point.attributes or {}
    return [str(attributes.get(k, "")).lower() if isinstance(attributes.get(k), bool)
            else str(attributes.get(k, "")) for k in keys]
