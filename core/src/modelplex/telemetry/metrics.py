"""The GenAI metrics: the conventions' bucket boundaries and the histograms and counters of each
meter provider (the global one and those added with ``add_meter_provider``).
"""

from __future__ import annotations

import sys
from typing import Any

from modelplex.telemetry.settings import _SCOPE, _meter_providers, _sdk_meter_provider

#: ``gen_ai.client.token.usage`` buckets (the conventions' boundaries).
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)
#: duration, time-to-first-chunk and time-per-chunk buckets, in seconds.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)
#: ``gen_ai.server.time_to_first_token`` buckets, in seconds.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0)


# -- instruments ----------------------------------------------------------------------------------
class _Instruments:
    """The histograms and counters of one meter provider."""

    def __init__(self, meter: Any) -> None:
        hist = meter.create_histogram
        self.tokens = hist("gen_ai.client.token.usage", unit="{token}",
                           description="Number of input and output tokens used.",
                           explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
        self.duration = hist("gen_ai.client.operation.duration", unit="s",
                             description="GenAI operation duration.",
                             explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.first_chunk = hist("gen_ai.client.operation.time_to_first_chunk", unit="s",
                                description="Time to receive the first chunk of a stream.",
                                explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.per_chunk = hist("gen_ai.client.operation.time_per_output_chunk", unit="s",
                              description="Time per output chunk after the first (the mean "
                                          "of one stream).",
                              explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.server_duration = hist("gen_ai.server.request.duration", unit="s",
                                    description="GenAI server request duration.",
                                    explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.server_ttft = hist("gen_ai.server.time_to_first_token", unit="s",
                                description="Time to generate the first token.",
                                explicit_bucket_boundaries_advisory=TTFT_BUCKETS)
        self.cache = meter.create_counter("modelplex.cache.hits", unit="{request}",
                                          description="Answers served by the response cache "
                                                      "(the ratio: over the duration count).")
        self.cost = meter.create_counter("modelplex.client.cost", unit="{USD}",
                                         description="What the answers cost, where the price "
                                                     "is known (by currency).")


_instruments: dict[int, tuple[Any, _Instruments]] = {}


def _instruments_of(meter_provider: Any) -> _Instruments:
    found = _instruments.get(id(meter_provider))
    if found is None or found[0] is not meter_provider:
        from modelplex.__about__ import __version__

        meter = meter_provider.get_meter(_SCOPE, __version__)
        found = _instruments[id(meter_provider)] = (meter_provider, _Instruments(meter))
    return found[1]


_memo: list[Any] = [None, (), []]


def _all_instruments() -> list[_Instruments]:
    """The instruments of the global meter provider (when it is an SDK's) and of those added,
    looked up again only when one of them changed (this runs once per request)."""
    metrics = sys.modules.get("opentelemetry.metrics")
    glob = metrics.get_meter_provider() if metrics is not None else None
    added = tuple(_meter_providers)
    if _memo[0] is glob and _memo[1] == added:
        return _memo[2]  # type: ignore[no-any-return]
    out = []
    if _sdk_meter_provider():
        out.append(_instruments_of(glob))
    out.extend(_instruments_of(mp) for mp in added)
    _memo[:] = [glob, added, out]
    return out
