"""The simulator's configuration and what it records of each stream (tests assert on the records)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.simulator.faults import Fault

Dialect = Literal["current", "legacy"]


@dataclass
class SimulatorConfig:
    token: str = "simulator-token"  # noqa: S105 - the simulator's own test credential
    tenant: str = ""  # when set, Start must carry exactly this tenant
    projects: frozenset[str] = frozenset()  # when set, only these projects exist
    dialect: Dialect = "current"
    fault: Fault | None = None  # applies to every session (per-session faults come from Settings)
    method_path: str = "/dataflow/Stream"
    proto_module: str = "gateway.upstream._proto.dataflow_pb2"
    echo_token: bool = False  # a careless Data Flow: rejections and event Data quote the token it was sent
    bench_stamps: bool = False  # add a monotonic emit stamp to every event (benchmarks)
    bench_frame_bytes: int = 640  # bench clients stamp frames of this size (20 ms of 16 kHz pcm16)
    # Connection limits of real servers and proxies (None: gRPC's default, unlimited):
    max_streams_per_connection: int | None = None  # HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS
    max_connection_age_ms: int | None = None  # then GOAWAY: new streams go to a new connection
    max_connection_age_grace_ms: int | None = None  # streams left after GOAWAY get this long to finish
    # Keepalive enforcement of real gRPC servers (grpc-go, grpc-java, C++: 300 000 ms, no pings without
    # calls): a third ping closer than this to the last, with no data in between, or any ping on a
    # connection without calls, gets GOAWAY too_many_pings. None: pings are welcome, as before.
    min_ping_interval_ms: int | None = None
    # The usual gRPC bidirectional server: after FinalResult it ends the RPC only once the client's requests
    # end (its half-close). False: it ends the RPC right after FinalResult.
    ends_on_half_close: bool = False

    def server_options(self) -> list[tuple[str, int]]:
        """The gRPC server options for the connection limits set."""
        limits = {
            "grpc.max_concurrent_streams": self.max_streams_per_connection,
            "grpc.max_connection_age_ms": self.max_connection_age_ms,
            "grpc.max_connection_age_grace_ms": self.max_connection_age_grace_ms,
        }
        if self.min_ping_interval_ms is not None:  # gRPC servers' own policy, with the interval given
            limits |= {
                "grpc.http2.min_ping_interval_without_data_ms": self.min_ping_interval_ms,
                "grpc.http2.max_ping_strikes": 2,
                "grpc.keepalive_permit_without_calls": 0,
            }
        return [(name, value) for name, value in limits.items() if value is not None]


@dataclass
class SessionRecord:
    """What the simulator saw of one stream; tests assert on these."""

    session_id: str = ""
    peer: str = ""  # the client's address and port: one per TCP connection
    project: str = ""
    token_ok: bool = False
    tokens_seen: list[str] = field(default_factory=list)
    audio_bytes: int = 0
    audio_messages: int = 0
    largest_audio_message: int = 0
    requests: list[str] = field(default_factory=list)
    request_offsets: list[int] = field(default_factory=list)  # audio bytes received before each request
    client_events: list[dict[str, Any]] = field(default_factory=list)
    ended_at: float | None = None
    half_closed: bool = False  # the client ended its requests (grpc.aio done_writing), not cancelled
    outcome: str = "open"  # finalized, stopped, cancelled, rejected, aborted, stalled, dropped, error

    def end(self, outcome: str) -> None:
        if self.ended_at is None:
            self.ended_at = time.monotonic()
            self.outcome = outcome
