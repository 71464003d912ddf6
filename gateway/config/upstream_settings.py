"""Settings of the upstream Data Flow: where it is, credentials, connections, audio and recovery."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, Field, model_validator

from gateway.config import bounds

UpstreamEncoding = Literal["pcm", "ulaw", "alaw"]


class UpstreamSettings(BaseModel):
    # --- upstream Data Flow --------------------------------------------------------------------------
    upstream_target: bounds.UpstreamTarget = Field(
        "", description="host:port of Data Flow's gRPC endpoint; empty runs the embedded simulator."
    )
    upstream_plaintext: bool | None = Field(
        None, description="Plaintext gRPC; unset means plaintext only for loopback targets."
    )
    upstream_ca_file: bounds.OptionalPath = Field(
        None, description="PEM CA roots for upstream TLS (default: system roots)."
    )
    upstream_method_path: bounds.MethodPath = Field(
        "/dataflow/Stream", description="gRPC method path of the Stream RPC."
    )
    upstream_proto_module: str = Field(
        "gateway.upstream._proto.dataflow_pb2", description="Generated protobuf module of the wire contract."
    )
    upstream_tenant: str = Field("", description="Data Flow tenant GUID injected into every Start.")
    upstream_token: bounds.Credential = Field(None, description="Static Data Flow token (or use client credentials).")
    upstream_identity_url: str = Field("", description="OAuth2 token endpoint for client credentials.")
    upstream_client_id: str = Field("", description="OAuth2 client id for client credentials.")
    upstream_client_secret: bounds.Credential = Field(None, description="OAuth2 client secret for client credentials.")
    upstream_token_scope: str = Field("Wagtail", description="OAuth2 scope requested with client credentials.")
    upstream_token_refresh_margin_s: float = Field(300.0, ge=0, description="Refresh this long before expiry.")
    upstream_token_fetch_timeout_s: float = Field(10.0, gt=0, description="Bound on one token request.")
    upstream_token_fetch_attempts: int = Field(3, ge=1, le=10, description="Token requests before giving up.")
    upstream_keepalive_interval_s: bounds.GrpcSeconds = Field(20.0, description="gRPC keepalive ping period.")
    upstream_keepalive_timeout_s: bounds.GrpcSeconds = Field(
        10.0, description="Drop the channel if a ping is unanswered."
    )
    upstream_reconnect_backoff_max_s: bounds.GrpcSeconds = Field(
        5.0, description="Longest wait between reconnection attempts after Data Flow was unreachable."
    )
    upstream_max_message_bytes: bounds.GrpcBytes = Field(
        4 * 1024 * 1024, ge=64 * 1024, description="Largest gRPC message."
    )
    upstream_max_streams_per_connection: int = Field(
        100, ge=1, description="Most sessions on one upstream connection; more open another connection."
    )
    upstream_probe_stream_cap: bool = Field(
        True,
        description="Read each upstream address's HTTP/2 stream cap and take no more streams per connection; "
        "also ask whether it refuses keepalive pings on connections without calls, and ping none if so.",
    )
    upstream_resolve_interval_s: float = Field(
        30.0, gt=0, description="Re-resolve the upstream name this often; connections spread over its addresses."
    )
    upstream_idle_connection_s: float = Field(
        60.0, gt=0, description="Close an upstream connection idle this long (one per address stays open)."
    )
    upstream_min_connections: int = Field(
        1, ge=1, le=64, description="Upstream connections kept open even when few sessions need them."
    )
    upstream_max_connection_age_s: float | None = Field(
        None, gt=0, description="Retire an upstream connection this old: its streams finish, new ones go elsewhere."
    )
    upstream_start_timeout_s: float = Field(10.0, gt=0, description="Bound on waiting for StartResponse.")
    upstream_response_timeout_s: float = Field(
        15.0,
        gt=0,
        description="Longest audio or a control message waits for room in Data Flow's buffer, then upstream_timeout. "
        "The client is paused meanwhile and its keepalive pings go unanswered: keep it below clients' ping "
        "timeouts (20 s in websockets).",
    )
    upstream_encoding: UpstreamEncoding = Field("pcm", description="Audio encoding sent to Data Flow.")
    upstream_sample_rate_hz: bounds.DataflowRate = Field(
        16000, description="Rate sent to Data Flow (8000/16000); 8 kHz input stays 8 kHz."
    )
    upstream_coalesce_ms: int = Field(200, ge=10, le=1000, description="Most audio merged into one upstream message.")
    upstream_write_interval_ms: int = Field(
        60,
        ge=0,
        le=500,
        description="Least hold: audio waits up to this long to merge into one upstream write (a gRPC message "
        "costs the same CPU whatever its size: 60 ms merges three 20 ms frames); 0: every frame at once.",
    )
    upstream_write_rate: int = Field(
        2000,
        ge=0,
        description="Audio writes per second for all streams; past it each stream holds audio to merge frames, "
        "in 20 ms steps from 40 ms (0: never).",
    )
    upstream_max_write_interval_ms: int = Field(
        100, ge=0, le=1000, description="Longest a stream merges audio when over upstream_write_rate."
    )
    upstream_buffer_ms: int = Field(3000, ge=100, description="Audio held for upstream before the client is paused.")
    upstream_replay_ms: int = Field(
        10000, ge=0, description="Audio kept to replay on a new upstream stream after a failure (0: no recovery)."
    )
    upstream_recovery_attempts: int = Field(
        8, ge=0, le=16, description="Attempts to reopen a failed upstream stream (or a first Start) under a session."
    )
    upstream_recovery_window_s: float = Field(
        10.0, gt=0, description="Time for all attempts of one recovery (or of a first Start that met an outage)."
    )
    upstream_max_stream_s: float | None = Field(
        None, gt=0, description="Move a session to a new upstream stream after this long, at a final result."
    )
    upstream_control_buffer_bytes: int = Field(
        256 * 1024,
        ge=64 * 1024,
        description="Events and updates held for upstream before the client is paused.",
    )
    max_control_message_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest event or update a client may send, measured as the gateway writes it to Data Flow "
        '(compact UTF-8 JSON, non-ASCII as its UTF-8 bytes, in its wrapper: {"MessageName":"Update","Settings":{…}} '
        'or {"Event":{…}}, the client\'s settings or event plus 36 bytes (an update) or 10 (an event); larger: '
        "error message_too_big, not sent, the session goes on); largest start message as the client sent it "
        "(/v1/stream: non-fatal error message_too_big, the socket stays open; /project-runner: close 1009); largest "
        "HTTP request body outside uploads (413 message_too_big).",
    )

    @model_validator(mode="after")
    def _replay_covers_the_buffer(self) -> Self:
        # A recovery replays the audio still held for Data Flow from the replay buffer: a shorter one loses it.
        if 0 < self.upstream_replay_ms < self.upstream_buffer_ms:
            raise ValueError(
                "GATEWAY_UPSTREAM_REPLAY_MS: shorter than GATEWAY_UPSTREAM_BUFFER_MS (a recovery replays the "
                "audio held for Data Flow from it: a shorter one loses audio; 0 turns recovery off)"
            )
        return self

    @model_validator(mode="after")
    def _tls_or_plaintext(self) -> Self:
        # The CA file was silently not used: the connection went unencrypted.
        if self.upstream_plaintext and self.upstream_ca_file is not None:
            raise ValueError(
                "GATEWAY_UPSTREAM_PLAINTEXT: true while GATEWAY_UPSTREAM_CA_FILE is set (CA roots are for TLS):"
                " unset one of them"
            )
        return self
