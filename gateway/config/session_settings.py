"""Settings of sessions: how many, how long, and what a client may hold or send."""

from __future__ import annotations

from pydantic import BaseModel, Field

from gateway.config import bounds


class SessionSettings(BaseModel):
    # --- sessions --------------------------------------------------------------------------------------
    default_project: str = Field("", description="Project used when a client names none.")
    max_sessions: int = Field(500, ge=1, description="Concurrent sessions per process, all dialects.")
    max_session_s: bounds.GrpcSeconds = Field(
        4 * 3600.0, description="Longest session; then it is finalized and closed."
    )
    idle_timeout_s: float = Field(30.0, gt=0, description="Close a session that sends nothing for this long.")
    start_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Time a client has to send its start message, and an HTTP request outside uploads its "
        "whole body (408 start_timeout).",
    )
    between_recognitions_s: float | None = Field(
        None,
        gt=0,
        description="AudioCodes (one socket per conversation, recognitions one after another): how long its socket "
        "may wait with no recognition running, before the first and between them (unset: up to max_session_s).",
    )
    session_start_rate: float = Field(
        2.0,
        ge=0,
        allow_inf_nan=False,
        description="Sessions one connection may start a second, one after another (AudioCodes recognitions), after "
        "a burst of 10; a start past it waits its turn, what its client sends meanwhile held (0: no limit).",
    )
    finalize_timeout_s: bounds.GrpcSeconds = Field(
        30.0,
        description="Wait for FinalResult after finalize/stop, counted again from each message of Data Flow "
        "(the first wait longer by the audio Data Flow may not have reached at real time, at most 5 times this; "
        "the whole wait at most 11 times this, or that audio at half real time).",
    )
    client_send_timeout_s: float = Field(10.0, gt=0, description="Budget for a client that does not read events.")
    client_event_queue: int = Field(1000, ge=10, description="Events held for a slow client before closing it.")
    client_outbox_bytes: int = Field(
        4 * 1024 * 1024, ge=64 * 1024, description="Bytes of events and audio held for a slow client before closing it."
    )
    client_outbox_total_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024 * 1024,
        description="Bytes of events and audio held for all clients of the process together (keep it well below "
        "the memory limit); when full, the client with the largest backlog is closed (client_too_slow).",
    )
    max_transcript_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Text of final results a session keeps for its summary (an upload's transcript, a call's webhook "
        "summary), UTF-8; past it the rest is left out and transcriptTruncated says so (events carry every result).",
    )
    max_ws_message_bytes: int = Field(1024 * 1024, ge=1024, description="Largest WebSocket message accepted.")
    ack_interval_ms: int = Field(1000, ge=50, description="Period of flow-control acks to streaming clients.")
    pre_start_audio_ms: int = Field(5000, ge=0, description="Audio held while Data Flow's start is pending.")
    max_upload_bytes: int = Field(
        1024**3, ge=1024, description="Largest POST /v1/recognize body; checked while streaming (413)."
    )
    upload_spool_bytes: int = Field(
        256 * 1024**2,
        ge=0,
        description="Audio all uploads together may hold (memory, then /tmp) when the Audio part comes before the "
        "Parameters; past it 413 upload_too_large. 0: send Parameters first, or the Start in X-Dataflow-Parameters.",
    )
    upload_decode_cpu_share: float = Field(
        0.05,
        ge=0,
        le=10,
        description="CPU seconds FFmpeg may spend decoding an upload (compressed, multichannel) per second of audio, "
        "counted as if 100 s were decoded already (0.05: 5 s before any audio); past it the upload ends with what "
        "came before (422 audio_too_costly). 0 turns the limit off.",
    )
    max_audio_rate_x: float = Field(
        3.0, gt=0, description="Live streams may not send audio faster than this multiple of real time."
    )
    audio_rate_burst_ms: int = Field(
        10000, ge=0, description="Audio a live stream may send ahead of real time before the rate limit applies."
    )
