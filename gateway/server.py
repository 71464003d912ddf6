"""Run the gateway under uvicorn with the settings' pinned WebSocket options and a graceful drain.

uvicorn's own SIGTERM handling closes every WebSocket with 1012 at once. The gateway first drains:
readiness fails, new sessions are refused, live sessions get ``drain_budget_s`` and are closed
with 1001 — then uvicorn shuts down. A second signal skips the drain.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import signal
import socket
from types import FrameType

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.app import create_app
from gateway.observability import logging_config
from gateway.runtime import tune_gc
from gateway.service import Gateway
from gateway.settings import Settings, load_settings

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


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol plus a deadline on each request's headers. uvicorn has none: a client
    that sends its headers (or its WebSocket handshake) a byte at a time, or nothing at all, would hold
    a connection and a file descriptor forever (slowloris). Late headers get 408 and the connection closes."""

    header_timeout_s = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    @classmethod
    def with_timeout(cls, timeout_s: float) -> type[HeaderDeadlineProtocol]:
        return type(cls.__name__, (cls,), {"header_timeout_s": timeout_s})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # the next request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http=HeaderDeadlineProtocol.with_timeout(settings.http_header_timeout_s),
        ws=settings.ws_implementation,
        ws_max_size=settings.max_ws_message_bytes,
        ws_per_message_deflate=False,  # compression costs CPU per frame and audio does not compress
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        lifespan="on",
        log_config=None,  # serve() configures logging once; embedding apps and tests keep their own
        log_level=settings.log_level,
        server_header=False,
        # The drain happens before uvicorn's shutdown starts; this only bounds stragglers after it.
        timeout_graceful_shutdown=5,
    )


def serve() -> int:
    settings = load_settings()
    logging.config.dictConfig(logging_config(settings.log_level, settings.log_format))
    config = uvicorn_config(settings)
    tune_gc()  # after the app is built: what exists now lives as long as the process
    DrainingServer(config).run()
    return 0
