"""All configuration: one pydantic-settings class, environment prefix ``GATEWAY_``.

Every limit and timeout is a typed field whose name carries its unit. Secrets are ``SecretStr``
and :func:`load_settings` turns validation failures into one line per variable that never echoes its value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from gateway.auth import ApiKeySpec
from gateway.config import bounds
from gateway.config.environment import dotenv_names, parse_problem, unknown_variables, validation_problems

UpstreamEncoding = Literal["pcm", "ulaw", "alaw"]
WsImplementation = Literal["websockets", "websockets-sansio", "wsproto"]


class SettingsError(ValueError):
    """Configuration is invalid. The text names variables and problems (one line each), never values."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_file=".env", env_file_encoding="utf-8", extra="ignore", allow_inf_nan=False
    )

    # --- HTTP server -----------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 in containers).")
    port: int = Field(8080, ge=0, le=65535, description="TCP port to listen on (0 picks a free one).")
    ws_implementation: WsImplementation = Field(
        "websockets-sansio",
        description="uvicorn WebSocket implementation, pinned (its 'websockets' one uses a deprecated API).",
    )
    ws_fast_path: bool = Field(
        True,
        description="Audio frames go from uvicorn's WebSocket protocol straight to the session while nothing waits "
        "before them (websockets-sansio only); false: every frame through ASGI receive().",
    )
    ws_drain_refuses_handshake: bool = Field(
        False,
        description="While draining, answer a new WebSocket handshake with HTTP 503 going_away, so a proxy can retry "
        "it on another replica (nginx: proxy_next_upstream http_503); false: accept it, then going_away, close 1001.",
    )
    ws_ping_interval_s: float = Field(20.0, gt=0, description="WebSocket keepalive ping period.")
    ws_ping_timeout_s: float = Field(20.0, gt=0, description="Close a client that does not answer a ping in time.")
    http_header_timeout_s: float = Field(
        10.0, gt=0, description="Close a connection whose request headers or WebSocket handshake take longer (408)."
    )
    max_request_head_bytes: int = Field(
        16 * 1024, ge=1024, description="Largest request head (request line and headers); larger gets 431."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of the gateway and uvicorn (credentials are masked at every level)."
    )
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="json: one object per line, for log shippers; text: readable; auto: text on a terminal."
    )
    drain_budget_s: float = Field(
        30.0, ge=0, description="On SIGTERM or POST /internal/drain: time live sessions get before a 1001 close."
    )
    admin_token: bounds.AdminToken = Field(
        None, description="Bearer token (16+ chars) for /internal endpoints; unset: only loopback callers may use them."
    )

    # --- upstream Data Flow --------------------------------------------------------------------------
    upstream_target: str = Field(
        "", description="host:port of Data Flow's gRPC endpoint; empty runs the embedded simulator."
    )
    upstream_plaintext: bool | None = Field(
        None, description="Plaintext gRPC; unset means plaintext only for loopback targets."
    )
    upstream_ca_file: Path | None = Field(None, description="PEM CA roots for upstream TLS (default: system roots).")
    upstream_method_path: str = Field("/dataflow/Stream", description="gRPC method path of the Stream RPC.")
    upstream_proto_module: str = Field(
        "gateway.upstream._proto.dataflow_pb2", description="Generated protobuf module of the wire contract."
    )
    upstream_tenant: str = Field("", description="Data Flow tenant GUID injected into every Start.")
    upstream_token: SecretStr | None = Field(None, description="Static Data Flow token (or use client credentials).")
    upstream_identity_url: str = Field("", description="OAuth2 token endpoint for client credentials.")
    upstream_client_id: str = Field("", description="OAuth2 client id for client credentials.")
    upstream_client_secret: SecretStr | None = Field(None, description="OAuth2 client secret for client credentials.")
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
    upstream_response_timeout_s: float = Field(30.0, gt=0, description="Bound on Finalize/Stop/Update answers.")
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
        5, ge=0, le=6, description="Attempts to reopen a failed upstream stream under a live session."
    )
    upstream_recovery_window_s: float = Field(10.0, gt=0, description="Time for all attempts of one recovery.")
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
        description="Largest event or update a client may send, largest /project-runner Start, and largest "
        "HTTP request body outside uploads (larger: error message_too_big; 413 over HTTP, 1009 over WebSocket).",
    )

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
    finalize_timeout_s: bounds.GrpcSeconds = Field(30.0, description="Wait for FinalResult after finalize/stop.")
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
    max_ws_message_bytes: int = Field(1024 * 1024, ge=1024, description="Largest WebSocket message accepted.")
    ack_interval_ms: int = Field(1000, ge=50, description="Period of flow-control acks to streaming clients.")
    pre_start_audio_ms: int = Field(5000, ge=0, description="Audio held while Data Flow's start is pending.")
    max_upload_bytes: int = Field(
        1024**3, ge=1024, description="Largest POST /v1/recognize body; checked while streaming (413)."
    )
    max_audio_rate_x: float = Field(
        3.0, gt=0, description="Live streams may not send audio faster than this multiple of real time."
    )
    audio_rate_burst_ms: int = Field(
        10000, ge=0, description="Audio a live stream may send ahead of real time before the rate limit applies."
    )

    # --- client authentication ------------------------------------------------------------------------
    auth: Literal["required", "none"] | None = Field(
        None, description="required: every session needs an API key or browser token; unset: none in simulator mode."
    )
    allow_insecure_no_auth: bool = Field(False, description="Permit auth=none with a real upstream (logs a warning).")
    api_keys: list[ApiKeySpec] = Field(
        default_factory=list, description='JSON list: [{"name","sha256","projects","max_sessions",...}].'
    )
    token_signing_key: bounds.SigningKey = Field(
        None, description="HS256 key for browser tokens (same on all replicas)."
    )
    token_ttl_s: float = Field(60.0, gt=0, description="Default life of a browser token (to start a session).")
    token_max_ttl_s: float = Field(900.0, gt=0, description="Longest life a browser token may ask for.")
    allowed_origins: list[bounds.Origin] = Field(
        default_factory=list, description="Exact Origins allowed on WebSocket handshakes (pages on public_hosts are)."
    )
    public_hosts: list[bounds.PublicHost] = Field(
        default_factory=list,
        description="Host names clients use (host or host:port); others get 400. Empty: any with auth, else loopback.",
    )
    trusted_proxies: list[bounds.TrustedProxy] = Field(
        default_factory=list, description="Proxy addresses or CIDRs whose X-Forwarded-For is believed (empty: none)."
    )
    auth_failures_per_minute: int = Field(20, ge=0, description="Failed credentials per client address before 429.")

    # --- Genesys AudioHook (/v1/audiohook) ---------------------------------------------------------------
    audiohook_client_secret: SecretStr | None = Field(
        None,
        description="Base64 client secret of the AudioHook integration (per key: api_keys[].audiohook_client_secret)"
        "; set, upgrades must carry a valid signature.",
    )
    audiohook_signature_max_age_s: float = Field(
        30.0, gt=0, le=300, description="Oldest AudioHook upgrade signature accepted (from its created time)."
    )

    # --- Twilio, Vonage, jambonz, and result webhooks -----------------------------------------------------
    twilio_auth_token: SecretStr | None = Field(
        None, description="Twilio auth token; set, /v1/twilio upgrades must carry a valid X-Twilio-Signature."
    )
    vonage_call_header: str = Field(
        "", description="A custom header of Vonage's first frame also sent as the call's id in webhooks (callId)."
    )
    webhook_url: str = Field(
        "", description="Where Twilio/Vonage results are POSTed (per key: api_keys[].webhook_url); empty: nowhere."
    )
    webhook_secret: SecretStr | None = Field(
        None, description="Standard Webhooks secret whsec_<base64> that signs each POST (per key: api_keys[])."
    )
    webhook_timeout_s: float = Field(5.0, gt=0, description="Bound on one webhook POST (connect, send, answer).")
    webhook_attempts: int = Field(5, ge=1, le=20, description="Attempts per webhook before it is dropped.")
    webhook_retry_window_s: float = Field(
        60.0, gt=0, description="No attempt of a webhook starts later than this after it was queued."
    )
    webhook_backoff_s: float = Field(0.5, gt=0, description="Wait before a webhook's first retry; doubles each time.")
    webhook_concurrency: int = Field(32, ge=1, description="Webhook POSTs in flight at once, all calls together.")

    # --- embedded simulator --------------------------------------------------------------------------
    simulator_port: int = Field(0, ge=0, le=65535, description="Port of the embedded simulator (0: any free).")

    # --- demo page ---------------------------------------------------------------------------------------
    demo_page: bool | None = Field(
        None, description="Serve the demo page at / and its files at /static/; unset: only in simulator mode."
    )

    @property
    def simulator_mode(self) -> bool:
        return not self.upstream_target

    @property
    def auth_required(self) -> bool:
        if self.auth is None:
            return not self.simulator_mode
        return self.auth == "required"

    def upstream_is_plaintext(self) -> bool:
        if self.upstream_plaintext is not None:
            return self.upstream_plaintext
        return bounds.is_loopback(self.upstream_target)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and ``overrides``). Unknown ``GATEWAY_*`` variables and
    invalid values raise one :class:`SettingsError` with a line per variable, never echoing a value."""
    fields = list(Settings.model_fields)
    env_file = overrides.get("_env_file", Settings.model_config.get("env_file"))
    problems = unknown_variables([*os.environ, *dotenv_names(env_file)], fields)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems += validation_problems(exc.errors(), fields)
    except PydanticSettingsError as exc:  # a list or object variable that is not JSON
        problems.append(parse_problem(str(exc)))
    if problems:
        raise SettingsError(*problems)
    return settings
