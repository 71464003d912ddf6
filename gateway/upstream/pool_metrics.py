"""Prometheus view of the upstream connection pool, read at scrape time.

Labels come from closed sets (connection state, retirement reason); addresses are never labels.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.upstream.pool import ConnectionPool

PREFIX = "dataflow_gateway_upstream"
RETIRE_REASONS = ("disconnected", "age", "address_gone", "idle", "keepalive", "unreachable")
#: Upper bounds of the streams-per-connection histogram, as fractions of the per-connection cap.
_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)


class PoolCollector(Collector):
    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | GaugeHistogramMetricFamily]:
        pool = self._pool
        connections = pool.connections
        by_state = GaugeMetricFamily(
            f"{PREFIX}_connections", "Upstream connections: open (taking sessions) or retiring", labels=["state"]
        )
        for state, retiring in (("open", False), ("retiring", True)):
            by_state.add_metric([state], sum(1 for c in connections if c.retiring is retiring))
        yield by_state
        yield GaugeMetricFamily(f"{PREFIX}_streams", "Live upstream streams", value=sum(c.streams for c in connections))
        yield GaugeMetricFamily(
            f"{PREFIX}_connection_streams_max", "Streams on the busiest upstream connection",
            value=max((c.streams for c in connections), default=0),
        )  # fmt: skip
        limit = pool.stream_limit()
        yield GaugeMetricFamily(
            f"{PREFIX}_connection_streams_limit",
            "Most streams one connection takes (the smallest of the open connections: the peer may allow fewer)",
            value=limit,
        )
        bounds = sorted({round(f * limit) for f in _FRACTIONS})
        buckets = [(str(b), sum(1 for c in connections if c.streams <= b)) for b in bounds]
        histogram = GaugeHistogramMetricFamily(
            f"{PREFIX}_connection_streams", "Upstream connections by their number of live streams",
            buckets=[*buckets, ("+Inf", len(connections))], gsum_value=sum(c.streams for c in connections),
        )  # fmt: skip
        yield histogram
        yield CounterMetricFamily(f"{PREFIX}_connections_opened", "Upstream connections opened", pool.stats.opened)
        retired = CounterMetricFamily(
            f"{PREFIX}_connections_retired", "Upstream connections retired, by reason", labels=["reason"]
        )
        for reason in RETIRE_REASONS:
            retired.add_metric([reason], pool.stats.retired[reason])
        yield retired
