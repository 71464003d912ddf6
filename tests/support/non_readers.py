"""Clients that read nothing, and what the gateway holds for them: a socket with a small receive window,
a native client that fills its backlog with echoed events and never reads, a raw connection that reads
nothing (and a request whose answer outgrows the socket buffers, and the default pipelining bound), and
the gateway's live sessions and open connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway.adapters.ws import Connection
from gateway.config.http_settings import HttpServerSettings
from gateway.relay.session import Session
from tests.support.harness import RunningGateway, ws_connect
from tests.support.native_client import start_message
from tests.support.raw_ws import RawWebSocket

EVENT = json.dumps({"type": "event", "event": {"Name": "Pad", "Data": {"Pad": "a" * 60 * 1024}}})
DEFAULT_PIPELINED = HttpServerSettings.model_fields["http_max_pipelined_requests"].default
BIG = b"GET /docs/assets/swagger-ui-bundle.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"  # about 1.4 MB


def small_window_socket(port: int) -> socket.socket:
    """A client socket whose receive buffer is small, so what it does not read backs up into the gateway."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def never_reads(url: str, port: int) -> ClientConnection:
    """Sends 6 MiB of events that Data Flow echoes back and reads nothing: more than the kernel's socket
    buffers and the outbox's byte bound hold, so the gateway gives up on it (client_too_slow)."""
    ws = await ws_connect(url, ping_interval=None, max_queue=1, sock=small_window_socket(port))
    await ws.send(start_message())
    ws.transport.pause_reading()  # from here on nothing is read: the echoes pile up in the gateway
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        async with asyncio.timeout(10):
            for _ in range(100):
                await ws.send(EVENT)
    return ws


async def non_reader(port: int) -> RawWebSocket:
    """A TCP connection with a small receive window that reads nothing (until told to)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    return RawWebSocket(reader, writer)


def connections(gw: RunningGateway) -> list[object]:
    return list(gw.server.server_state.connections)


def live_sessions(gw: RunningGateway) -> set[Session]:
    drivers = gw.gateway.registry.drainables()
    return {c.session for c in drivers if isinstance(c, Connection) and c.session is not None}
