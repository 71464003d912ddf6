"""Run the gateway under uvicorn with the settings' pinned WebSocket options and a graceful drain.

uvicorn's own SIGTERM handling closes every WebSocket with 1012 at once. The gateway first drains:
readiness fails, new sessions are refused, live sessions get ``drain_budget_s`` and are closed
with 1001 — then uvicorn shuts down. A second signal skips the drain.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import signal
import socket
from types import FrameType

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.app import create_app
from gateway.config.report import secret_values
from gateway.connections.linger import LingeringTransport
from gateway.connections.pongs import BoundedControlProtocol
from gateway.logs.access import AccessLog
from gateway.logs.config import configure_logging
from gateway.routes.http_conventions import HEADERS
from gateway.runtime import tune_gc
from gateway.service import Gateway
from gateway.settings import Settings, SettingsError, load_settings
from gateway.upstream.token import token_provider_from_settings
from gateway.webhooks.targets import WebhookTargets
from gateway.ws_protocol import FastReceiveProtocol

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self._loop is None or sig not in (signal.SIGTERM, signal.SIGINT):
            super().handle_exit(sig, frame)
            return
        self._draining = True
        self._captured_signals.append(sig)  # re-raised by uvicorn after shutdown, as it does itself
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        gateway = self.gateway
        if gateway is None:
            self.should_exit = True
            return
        gateway.drain().add_done_callback(lambda _: setattr(self, "should_exit", True))

    @property
    def gateway(self) -> Gateway | None:
        app = self.config.loaded_app
        while app is not None and not hasattr(app, "state"):
            app = getattr(app, "app", None)
        return getattr(app.state, "gateway", None) if app is not None else None


_HEAD_END = b"\r\n\r\n"
#: What every answer carries (gateway.routes.http_conventions), on the answers made here below the app.
_CONVENTIONAL = b"".join(b"%s: %s\r\n" % (name.encode(), value.encode()) for name, value in HEADERS.items())
#: A response that cannot be written for this long (its client reads nothing) ends the connection.
WRITE_STALL_S = 30.0
#: A closed connection is aborted once this long passes with its client taking nothing of what is left.
CLOSE_LINGER_S = 10.0
#: Pipelined requests that may wait, read, on one connection while an earlier one is answered.
MAX_PIPELINED = 16


class _PipelineFull(Exception):
    pass


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol with each request head bounded in time and in bytes; uvicorn bounds
    neither. A client that sends its headers (or its WebSocket handshake) a byte at a time, or nothing,
    would hold a connection forever (slowloris): late heads get 408. A head of megabytes would be held
    whole before any authentication: past ``max_head_bytes`` the request gets 431 and the connection
    closes before the parser sees the excess.

    A client that does not read what it is answered is bounded too: a response that cannot be written
    for ``write_stall_s`` ends the connection, and a closed connection lingers only while its client
    takes what was sent (gateway.connections.linger). Pipelined requests wait while one is answered
    (uvicorn read on after each answer: an unbounded queue); past ``max_pipelined`` waiting, the last
    one is answered with ``connection: close`` and the rest dropped, which a pipelining client retries
    (RFC 9112 9.3.2)."""

    header_timeout_s = 10.0
    max_head_bytes = 16 * 1024
    write_stall_s = WRITE_STALL_S
    max_pipelined = MAX_PIPELINED
    _stall_timer: asyncio.TimerHandle | None = None
    _pipeline_full = False  # the connection ends after the requests already waiting
    _header_timer: asyncio.TimerHandle | None = None
    _in_head = True  # reading a request head (until its headers are complete)
    _head_bytes = 0  # bytes of the current head seen so far
    _head_tail = b""  # the last bytes seen, so an end of head split across reads is still found

    @classmethod
    def with_limits(cls, timeout_s: float, max_head_bytes: int, send_timeout_s: float) -> type[BoundedHeadProtocol]:
        # The gateway's own budget for a client that does not read (streamed uploads) acts first.
        stall_s = max(WRITE_STALL_S, 2 * send_timeout_s)
        limits = {"header_timeout_s": timeout_s, "max_head_bytes": max_head_bytes, "write_stall_s": stall_s}
        return type(cls.__name__, (cls,), limits)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(LingeringTransport(transport, self.loop, CLOSE_LINGER_S))
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._pipeline_full:
            return
        if self._in_head:
            end = (self._head_tail + data).find(_HEAD_END)
            seen = len(data) if end < 0 else end + len(_HEAD_END) - len(self._head_tail)
            if self._head_bytes + seen > self.max_head_bytes:
                self._refuse(b"431 Request Header Fields Too Large", b'{"error":{"code":"request_head_too_large",'
                             b'"message":"the request head is too large","retryable":false}}')  # fmt: skip
                return
            self._head_bytes += seen
            self._head_tail = (self._head_tail + data)[-3:]
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """uvicorn's ``data_received``, but a full pipeline stops the parser without a 400."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if not self._pipeline_full:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def on_message_begin(self) -> None:
        if len(self.pipeline) >= self.max_pipelined:
            self._pipeline_full = True
            self.cycle.keep_alive = False  # the last request read is answered, then the connection closes
            raise _PipelineFull  # stops the parser: what is left of this read is dropped
        super().on_message_begin()
        if self._header_timer is None:  # the next request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head, self._head_bytes, self._head_tail = False, 0, b""
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # a kept-alive connection's next request starts with its head

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.pipeline:  # requests already read wait their turn: read no more before they are answered
            self.flow.pause_reading()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.write_stall_s, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._unstall()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._unstall()
        super().connection_lost(exc)

    def _unstall(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def handle_websocket_upgrade(self) -> None:
        self._unstall()  # the WebSocket protocol bounds its own writes from here on
        super().handle_websocket_upgrade()
        # The WebSocket protocol has the transport now. The parser's callbacks point back at this
        # object: a cycle that only a full collection would free, long after the socket is gone.
        del self.parser

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        self._refuse(b"408 Request Timeout", b"")

    def _refuse(self, status: bytes, body: bytes) -> None:
        self._disarm()
        if not self.transport.is_closing():
            kind = b"content-type: application/json\r\n" if body else b""
            head = b"HTTP/1.1 %s\r\n%s%scontent-length: %d\r\nconnection: close\r\n\r\n" % (
                status,
                kind,
                _CONVENTIONAL,
                len(body),
            )
            self.transport.write(head + body)
            self.transport.close()


def websocket_protocol(settings: Settings) -> str | type[asyncio.Protocol]:
    """uvicorn's WebSocket implementation, or ours on top of its sans-I/O one (its pongs bounded, and the
    audio fast path)."""
    if settings.ws_implementation != "websockets-sansio":
        return settings.ws_implementation
    return FastReceiveProtocol if settings.ws_fast_path else BoundedControlProtocol


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        AccessLog(create_app(settings)),  # outermost: times the whole request, sees the path as sent
        host=settings.host,
        port=settings.port,
        http=BoundedHeadProtocol.with_limits(
            settings.http_header_timeout_s, settings.max_request_head_bytes, settings.client_send_timeout_s
        ),
        ws=websocket_protocol(settings),
        ws_max_size=settings.max_ws_message_bytes,
        ws_per_message_deflate=False,  # compression costs CPU per frame and audio does not compress
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        lifespan="on",
        log_config=None,  # serve() configures logging once; embedding apps and tests keep their own
        log_level=settings.log_level,  # debug too: handshake lines are masked where made (gateway.logs.filters)
        access_log=False,  # gateway.access has these lines, with fields and redacted paths
        server_header=False,
        # The client's address (the auth throttle's key) comes from X-Forwarded-For only behind a
        # configured proxy; uvicorn would otherwise believe it from 127.0.0.1.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or None,
        # The drain happens before uvicorn's shutdown starts; this only bounds stragglers after it.
        timeout_graceful_shutdown=5,
    )


def preflight(settings: Settings) -> None:
    """Configuration checks that would otherwise fail inside uvicorn's startup, as a traceback: each
    raises :class:`SettingsError` with one line (the command prints it and exits 2)."""
    WebhookTargets.from_settings(settings)
    if settings.drain_budget_s > settings.max_session_s:  # a budget POST /internal/drain refuses too
        raise SettingsError("GATEWAY_DRAIN_BUDGET_S: longer than a session may last (GATEWAY_MAX_SESSION_S)")
    if settings.ws_implementation == "wsproto" and importlib.util.find_spec("wsproto") is None:
        raise SettingsError("GATEWAY_WS_IMPLEMENTATION: wsproto is not installed (pip install wsproto)")
    if not settings.simulator_mode:
        token_provider_from_settings(settings)  # builds nothing that needs closing (its client is lazy)


def serve() -> int:
    settings = load_settings()
    preflight(settings)
    configure_logging(settings.log_level, settings.log_format, secret_values(settings))
    config = uvicorn_config(settings)
    tune_gc()  # after the app is built: what exists now lives as long as the process
    DrainingServer(config).run()
    return 0
