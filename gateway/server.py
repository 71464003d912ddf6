"""Run the gateway under uvicorn with the settings' pinned WebSocket options and a graceful drain.

uvicorn's own SIGTERM handling closes every WebSocket with 1012 at once. The gateway first drains:
readiness fails, new sessions are refused, live sessions get ``drain_budget_s`` and are closed
with 1001 — then uvicorn shuts down. A second signal skips what is left of the budget, not the
goodbye: every connection is closed with ``going_away`` and 1001 at once and gets
``client_send_timeout_s`` to take it; a third exits at once (uvicorn's force exit: 1012).
"""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import logging
import signal
import socket
import ssl
from types import FrameType

import uvicorn

from gateway.app import create_app
from gateway.config.report import secret_values
from gateway.connections.cap import app_gateway, beyond_descriptors
from gateway.connections.http import BoundedHeadProtocol
from gateway.connections.pongs import BoundedControlProtocol
from gateway.connections.ws_refusals import allow_header_lines
from gateway.logs.access import AccessLog
from gateway.logs.config import configure_logging
from gateway.runtime import tune_gc
from gateway.service import Gateway
from gateway.settings import Settings, SettingsError, load_settings
from gateway.signatures.audiohook import AudioHookSignatures
from gateway.upstream.contract import WireContract
from gateway.upstream.peer_settings import tls_context
from gateway.upstream.token import token_provider_from_settings
from gateway.webhooks.targets import WebhookTargets
from gateway.ws_protocol import FastReceiveProtocol

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signals = 0  # SIGTERM/SIGINT taken: the first drains, the second cuts it short, the third exits
        self._goodbye: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        # Past the graceful timeout, connections still closing (a client taking nothing of its answer's
        # end, gateway.connections.linger) go with the server, not at their linger's deadline. They are
        # not aborted before it: a client on a slow link may still be taking its goodbye (WARNING, not
        # uvicorn's ERROR, when they were all that was left: gateway.logs.filters).
        for connection in list(self.server_state.connections):
            if isinstance(transport := getattr(connection, "transport", None), asyncio.Transport):
                transport.abort()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or sig not in (signal.SIGTERM, signal.SIGINT):
            super().handle_exit(sig, frame)
            return
        self._signals += 1
        self._captured_signals.append(sig)  # re-raised by uvicorn after shutdown, as it does itself
        if self._signals == 1:
            self._loop.call_soon_threadsafe(self._start_drain)
        elif self._signals == 2 and not self.should_exit:
            self._loop.call_soon_threadsafe(self._cut_drain_short)
        else:  # a third, or a second once uvicorn's own shutdown has begun: its force exit (its CTRL+C twice)
            self.should_exit = self.force_exit = True

    def _start_drain(self) -> None:
        gateway = self.gateway
        if gateway is None:
            self.should_exit = True
            return
        gateway.drain().add_done_callback(lambda _: setattr(self, "should_exit", True))

    def _cut_drain_short(self) -> None:
        gateway = self.gateway
        if gateway is None or self._loop is None:
            self.should_exit = True
            return
        self._goodbye = self._loop.create_task(self._goodbye_now(gateway), name="gateway-drain-cut-short")

    async def _goodbye_now(self, gateway: Gateway) -> None:
        """What a drain does once its budget is spent, now: every connection is told ``going_away`` (close
        1001), they get ``client_send_timeout_s`` to deliver it (and result webhooks what is left of it),
        then the server exits. The drain under way sees its sessions end and finishes as it would."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + gateway.settings.client_send_timeout_s
        log.warning(
            "second signal: the drain's budget is cut short; %d connections are closed with going_away now",
            len(gateway.registry.drainables()),
        )
        try:
            while True:
                # Also a connection accepted before the drain that starts its session during this goodbye.
                gateway.registry.send_away()
                if not (gateway.registry.occupied or gateway.registry.drainables()) or loop.time() >= deadline:
                    break
                await asyncio.sleep(0.02)
            if await gateway.webhooks.drain(deadline - loop.time()):
                log.warning("second signal: %d result webhooks are still pending", gateway.webhooks.pending)
        finally:
            self.should_exit = True  # whatever happened above: the second signal was a request to exit

    @property
    def gateway(self) -> Gateway | None:
        return app_gateway(self.config.loaded_app)


def websocket_protocol(settings: Settings) -> str | type[asyncio.Protocol]:
    """uvicorn's WebSocket implementation, or ours on top of its sans-I/O one (its pongs bounded, and the
    audio fast path)."""
    if settings.ws_implementation != "websockets-sansio":
        return settings.ws_implementation
    allow_header_lines(settings.max_request_head_bytes)
    protocol = FastReceiveProtocol if settings.ws_fast_path else BoundedControlProtocol
    return protocol.paced(settings.ws_frames_per_s)


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        AccessLog(create_app(settings)),  # outermost: times the whole request, sees the path as sent
        host=settings.host,
        port=settings.port,
        http=BoundedHeadProtocol.with_limits(settings),  # its bounds, the connection cap among them
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


def preflight(settings: Settings, *, serving: bool = True) -> None:
    """Configuration checks that would otherwise fail inside uvicorn's startup, as a traceback: each
    raises :class:`SettingsError` with one line (the command prints it and exits 2). ``serving``: this
    process is about to listen (``dataflow-gateway settings``, run beside a live gateway, probes no port)."""
    WebhookTargets.from_settings(settings)
    if settings.drain_budget_s > settings.max_session_s:  # a budget POST /internal/drain refuses too
        raise SettingsError("GATEWAY_DRAIN_BUDGET_S: longer than a session may last (GATEWAY_MAX_SESSION_S)")
    if settings.ws_implementation == "wsproto" and importlib.util.find_spec("wsproto") is None:
        raise SettingsError("GATEWAY_WS_IMPLEMENTATION: wsproto is not installed (pip install wsproto)")
    if problem := beyond_descriptors(settings.max_connections):
        raise SettingsError(f"GATEWAY_MAX_CONNECTIONS: {problem}")
    if not settings.simulator_mode:
        token_provider_from_settings(settings)  # builds nothing that needs closing (its client is lazy)
    elif serving and settings.simulator_port and (problem := _unbindable("127.0.0.1", settings.simulator_port)):
        # gRPC's bind failed inside the app's startup: a traceback, "Application startup failed", exit 3.
        raise SettingsError(f"GATEWAY_SIMULATOR_PORT: the embedded simulator cannot listen on {problem}")
    _upstream_preflight(settings)
    try:
        AudioHookSignatures.from_settings(settings)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _unbindable(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (in use, not allowed), or None. Bound as a server binds
    (SO_REUSEADDR: a port left in TIME_WAIT is free) but without gRPC's SO_REUSEPORT, which would share
    a port another server listens on rather than fail."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            probe.listen()
        except OSError as exc:
            why = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or type(exc).__name__
            return f"{host}:{port} ({why})"
    return None


def _upstream_preflight(settings: Settings) -> None:
    # Each failed as a traceback from inside uvicorn's startup (a missing CA file's said neither the
    # variable nor the path), with the embedded simulator already started.
    try:
        WireContract(settings.upstream_proto_module, settings.upstream_method_path)
    except Exception as exc:  # whatever importing or reading it raises (a newer protoc's VersionError, say)
        why = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line, however many the error has
        raise SettingsError(
            f"GATEWAY_UPSTREAM_PROTO_MODULE: {settings.upstream_proto_module} is not a usable generated protobuf"
            f" module of Data Flow's Stream RPC ({why[:400]})"
        ) from None
    if (ca := settings.upstream_ca_file) is not None:
        try:
            tls_context(ca)
        except (OSError, ssl.SSLError) as exc:
            why = exc.strerror or getattr(exc, "reason", None) or type(exc).__name__
            raise SettingsError(
                f"GATEWAY_UPSTREAM_CA_FILE: {ca} cannot be read as PEM CA certificates ({why})"
            ) from None


def serve() -> int:
    settings = load_settings()
    preflight(settings)
    configure_logging(settings.log_level, settings.log_format, secret_values(settings))
    config = uvicorn_config(settings)
    cap = getattr(config.http, "max_connections", None)
    log.info("open client connections: %s (GATEWAY_MAX_CONNECTIONS)", f"at most {cap}" if cap else "no cap")
    tune_gc()  # after the app is built: what exists now lives as long as the process
    try:
        DrainingServer(config).run()
    except KeyboardInterrupt:  # uvicorn raises the SIGINT it drained for again: Ctrl-C ends without a traceback
        return 128 + signal.SIGINT
    return 0
