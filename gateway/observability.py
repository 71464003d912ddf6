"""Prometheus metrics (the logs are in gateway/logs/).

Each app gets its own CollectorRegistry (tests run several apps in one process). Hot-path counts
(audio bytes) are added once per session at its end, not per frame.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.dataflow.messages import KNOWN_EVENT_NAMES
from gateway.errors.codes import ErrorCode
from gateway.logs.config import logging_config
from gateway.logs.filters import ClientMistakeFilter
from gateway.logs.formats import JsonFormatter

if TYPE_CHECKING:
    from gateway.errors import UpstreamError

PREFIX = "dataflow_gateway"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_START_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LiveCounts(Protocol):
    """What the scrape reads from the session registry (kept abstract: the registry uses the metrics)."""

    @property
    def by_dialect(self) -> Mapping[str, int]: ...

    @property
    def draining(self) -> bool: ...

    @property
    def waiting(self) -> Collection[object]: ...


class _LiveSessions(Collector):
    """Active sessions by dialect, read from the session registry at scrape time."""

    def __init__(self, sessions: LiveCounts) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(f"{PREFIX}_sessions_active", "Live sessions by client dialect", labels=["dialect"])
        for dialect, count in sorted(self._sessions.by_dialect.items()):
            family.add_metric([dialect], count)
        yield family
        yield GaugeMetricFamily(
            f"{PREFIX}_draining", "1 while this replica drains", value=1.0 if self._sessions.draining else 0.0
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_connections_waiting_for_credential",
            "WebSockets accepted without a credential, waiting for a token in their start message (no slot)",
            value=len(self._sessions.waiting),
        )


# Reasons of refused requests: the error codes, a closed set (never a string a client chose).
_REFUSAL_REASONS = frozenset(code.value for code in ErrorCode)


class GatewayMetrics:
    def __init__(self) -> None:
        # ``*_created`` series (one per labelled child) are noise to Prometheus users; the switch is
        # process-wide in prometheus_client, so it is thrown where every registry is built.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The process's own figures (process_*: CPU, memory, file descriptors; python_info; python_gc_*)
        # on this registry too: /metrics serves only this one.
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(standard)
        self.sessions_started = Counter(f"{PREFIX}_sessions_started", "Sessions started", ["dialect"], registry=r)
        self.sessions_ended = Counter(
            f"{PREFIX}_sessions_ended", "Sessions ended, by outcome", ["dialect", "outcome"], registry=r
        )
        self.audio_seconds = Counter(
            f"{PREFIX}_audio_seconds", "Client audio relayed, seconds", ["dialect"], registry=r
        )
        self.audio_bytes = Counter(f"{PREFIX}_audio_bytes", "Client audio relayed, bytes", ["dialect"], registry=r)
        self.events = Counter(f"{PREFIX}_events_relayed", "Data Flow events relayed", ["name"], registry=r)
        self._event_counters: dict[str, Counter] = {}
        self.upstream_recoveries = Counter(
            f"{PREFIX}_upstream_recoveries", "Moves of a live session to a new upstream stream (one session may move"
            " more than once)", ["reason"], registry=r,
        )  # fmt: skip
        self.upstream_errors = Counter(
            f"{PREFIX}_upstream_errors", "Sessions ended by an upstream failure, by error code and gRPC status",
            ["code", "grpc_status"], registry=r,
        )  # fmt: skip
        # By code alone: the gRPC status of one failure depends on which side met it first (UNAVAILABLE,
        # INTERNAL for a reset stream, ...), so it would add series at random; the log lines name it.
        self.upstream_stream_failures = Counter(
            f"{PREFIX}_upstream_stream_failures", "Upstream streams that failed under a live session with recovery on,"
            " recovered or not (new streams that failed to take over included), by error code", ["code"], registry=r,
        )  # fmt: skip
        self.start_latency = Histogram(
            f"{PREFIX}_start_latency_seconds", "Start to StartResponse", buckets=_START_BUCKETS, registry=r
        )
        self.event_latency = Histogram(
            f"{PREFIX}_event_relay_latency_seconds", "Upstream receipt to client send", buckets=_LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.backpressure_pauses = Counter(
            f"{PREFIX}_backpressure_pauses", "Times a client was paused because Data Flow was slow", registry=r
        )
        self.ws_messages = Counter(
            f"{PREFIX}_ws_messages", "Client WebSocket messages, by path: fast (straight to the session) or queued",
            ["path"], registry=r,
        )  # fmt: skip
        self.denials = Counter(f"{PREFIX}_denials", "Refused sessions or requests, by reason", ["reason"], registry=r)
        self.requests_refused = Counter(
            f"{PREFIX}_requests_refused",
            "HTTP requests and WebSocket handshakes answered with an error, by status and error code",
            ["status", "reason"],
            registry=r,
        )
        self.upstream_write_interval = Gauge(
            f"{PREFIX}_upstream_write_interval_seconds",
            "Longest one stream holds audio to merge frames into one write, at the current load",
            registry=r,
        )
        self.drain_state = Gauge(
            f"{PREFIX}_drain_budget_seconds", "Drain budget in force (0: not draining)", registry=r
        )

    def session_ended(
        self, dialect: str, outcome: str, audio_bytes: int, audio_s: float, pauses: int, upstream: UpstreamError | None
    ) -> None:
        """Everything a session adds to the counters, once, at its end (never per frame)."""
        self.sessions_ended.labels(dialect=dialect, outcome=outcome).inc()
        if audio_bytes:
            self.audio_bytes.labels(dialect=dialect).inc(audio_bytes)
            self.audio_seconds.labels(dialect=dialect).inc(audio_s)
        if pauses:
            self.backpressure_pauses.inc(pauses)
        if upstream is not None:
            self.upstream_errors.labels(code=upstream.error_code, grpc_status=upstream.grpc_status or "").inc()

    def upstream_stream_failed(self, error: UpstreamError) -> None:
        """One upstream stream failed under a live session (a recovery may hide it from the client)."""
        self.upstream_stream_failures.labels(code=error.error_code).inc()

    def event_relayed(self, name: str) -> None:
        """One event queued for a client. A name Data Flow does not document counts as ``other``: event
        names can be a client's (custom events echo back), so neither the labels nor this cache of
        labelled children (looked up once per name, not once per event) can grow with them."""
        label = name if name in KNOWN_EVENT_NAMES else "other"
        child = self._event_counters.get(label)
        if child is None:
            child = self._event_counters[label] = self.events.labels(name=label)
        child.inc()

    def refused(self, status: int, code: str) -> None:
        """One error answer; a code outside the closed set counts as ``other``."""
        reason = code if code in _REFUSAL_REASONS else "other"
        self.requests_refused.labels(status=str(status), reason=reason).inc()

    def watch(self, sessions: LiveCounts) -> None:
        self.registry.register(_LiveSessions(sessions))


# --- logs --------------------------------------------------------------------------------------------
# The logging half lives in gateway/logs/; these names stay importable from here.

__all__ = ["ClientMistakeFilter", "GatewayMetrics", "JsonFormatter", "LiveCounts", "logging_config"]
