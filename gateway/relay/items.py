"""A session's plain data: its states, and what it hands its driver in order (each dialect renders it its own way)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import DataflowEvent, DataflowResponse, UpstreamAudio
from gateway.errors import GatewayError
from gateway.relay.stream import Recovered, UpstreamStream

__all__ = ["Closed", "Flow", "Notice", "OutItem", "Recovered", "SessionState", "Started"]


class SessionState(StrEnum):
    NEW = "new"
    STARTING = "starting"
    STREAMING = "streaming"
    FINALIZING = "finalizing"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Started:
    session_id: str
    dataflow_session_id: str | None
    client_format: AudioFormat
    upstream_format: AudioFormat
    response: DataflowResponse


@dataclass(frozen=True, slots=True)
class Flow:
    """Flow-control report: how much audio arrived, went upstream, and waits in between."""

    audio_ms: float
    sent_ms: float
    buffered_ms: float
    paused: bool

    @classmethod
    def measure(
        cls,
        client: AudioFormat | None,
        upstream: AudioFormat | None,
        bytes_in: int,
        stream: UpstreamStream | None,
        pacing: bool = False,
    ) -> Flow:
        """``paused``: the client is being held, because Data Flow is slow or audio outruns the rate limit."""
        if client is None or upstream is None or stream is None:
            return cls(0.0, 0.0, 0.0, False)
        return cls(
            audio_ms=round(client.bytes_to_ms(bytes_in), 1),
            sent_ms=round(upstream.bytes_to_ms(stream.audio_bytes_sent), 1),
            buffered_ms=round(upstream.bytes_to_ms(stream.buffered_bytes), 1),
            paused=stream.backpressured or pacing,
        )


@dataclass(frozen=True, slots=True)
class Notice:
    """A non-fatal error for the client (the session goes on)."""

    error: GatewayError


@dataclass(frozen=True, slots=True)
class Closed:
    reason: str
    code: int
    audio_ms: float
    error: GatewayError | None


# A plain dict is a dialect-specific reply the adapter built itself (e.g. pong), kept in order.
OutItem = (
    Started | DataflowEvent | DataflowResponse | UpstreamAudio | Flow | Notice | Recovered | Closed | dict[str, Any]
)
