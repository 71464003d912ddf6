"""Settings of the HTTP server: address, WebSocket implementation, request heads, logs, drain, admin."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from gateway.config import bounds

WsImplementation = Literal["websockets", "websockets-sansio", "wsproto"]


class HttpServerSettings(BaseModel):
    # --- HTTP server -----------------------------------------------------------------------------
    host: bounds.ListenHost = Field("127.0.0.1", description="Address to listen on (0.0.0.0 in containers).")
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
    ws_frames_per_s: int = Field(
        1000,
        ge=0,
        description="WebSocket frames a client may send per second that are no whole message a session paces "
        "(fragments, pings, pongs), with a second of them as burst; past it reading waits (websockets-sansio only). "
        "0: unpaced.",
    )
    ws_ping_interval_s: float = Field(20.0, gt=0, description="WebSocket keepalive ping period.")
    ws_ping_timeout_s: float = Field(20.0, gt=0, description="Close a client that does not answer a ping in time.")
    http_header_timeout_s: float = Field(
        10.0, gt=0, description="Close a connection whose request headers or WebSocket handshake take longer (408)."
    )
    max_request_head_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="Largest request head (request line and headers), and a chunked body's trailer section; "
        "larger gets 431.",
    )
    http_max_pipelined_requests: int = Field(
        16,
        ge=1,
        description="Pipelined requests read ahead on one connection; past it the connection closes after them.",
    )
    http_write_stall_s: float = Field(
        30.0,
        gt=0,
        description="End a connection whose HTTP answer goes unread this long (at least 2 x "
        "GATEWAY_CLIENT_SEND_TIMEOUT_S: a lower value is refused, the default raised to it).",
    )
    connection_linger_s: float = Field(
        10.0,
        gt=0,
        description="Abort a closed connection once its client takes nothing of what is left for this long, and at the "
        "latest six times this after its close.",
    )
    max_connections: int | None = Field(
        None,
        ge=0,
        description="Open client connections per process; past it a new one gets 503 capacity_exceeded (GET /healthz "
        "is still served). Unset: the lower of 2 x GATEWAY_MAX_SESSIONS + 256 and the open-file limit less a quarter "
        "of it (at least 64 descriptors kept for upstream, webhooks, files); 0: no cap.",
    )
    max_connections_per_address: int | None = Field(
        None,
        ge=0,
        description="Open connections per client address (an IPv6 one by its /64) before their WebSocket upgrade; "
        "past it a new one gets 503 capacity_exceeded. GATEWAY_TRUSTED_PROXIES are not counted. Unset: half the "
        "connection cap in force, at least 16; 0: no share.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info",
        description="Log level of the gateway and uvicorn (credentials are masked at every level); other libraries log "
        "warnings unless this is error. debug writes lines per WebSocket frame: not under untrusted load.",
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
