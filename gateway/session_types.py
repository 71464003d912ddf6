"""The session's plain data: what it hands its adapter (in order; each dialect renders it its own way)
and the per-session limits it is given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.audio import AudioFormat
from gateway.dataflow_json import DataflowEvent, DataflowResponse
from gateway.errors import GatewayError
from gateway.upstream.client import UpstreamAudio

__all__ = ["Closed", "Flow", "Notice", "OutItem", "SessionLimits", "Started"]


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


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Per-session limits beyond the settings' defaults (from the caller's credential)."""

    max_session_s: float
    max_rate_x: float | None = None  # live streams: audio may not outrun real time by more than this
    rate_burst_ms: float = 0.0
    spend_audio: Callable[[float], bool] | None = None  # False once the caller's audio budget is spent
