"""What a session hands its adapter, in order; each dialect renders it its own way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import DataflowEvent, DataflowResponse, UpstreamAudio
from gateway.errors import GatewayError

__all__ = ["Closed", "Flow", "Notice", "OutItem", "Started"]


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
OutItem = Started | DataflowEvent | DataflowResponse | UpstreamAudio | Flow | Notice | Closed | dict[str, Any]
