"""A client still sending when the gateway closes reads the close before its writes fail.

Closed with the client's data unread, or sent to after its close, a socket is reset by the kernel, and a
client busy sending meets the reset on its next write, before it reads the answer's end: Chromium then
reports 1006 where the gateway closed with 1009 (a CI failure of test_browser_client_edges). The staged
close (gateway.connections.linger) reads and throws away what the client still sends, and closes once
the client is done sending. Real sockets on 127.0.0.1; the clients are blocking sockets in a thread that
send on a timer and look at what came on another, as a browser's network thread does.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import struct
import time
from collections.abc import Callable

import pytest

from gateway.connections.linger import CHECK_S, DISCARD_BYTES, QUIET_S, LingeringTransport
from tests.support.harness import RunningGateway
from tests.support.probes import figure
from tests.support.raw_ws import OP_BINARY, OP_CLOSE, OP_CONT, frame, handshake_request

PIECE = 64 * 1024  # a fragment of one message past the 1 MiB limit: ~6 MB/s at one every 10 ms
SEND_EVERY_S = 0.01
LOOK_EVERY_S = 0.05  # the client looks at what came this often, and sends in between
RUNS = 6


def server_frames(buf: bytes) -> list[tuple[int, bytes]]:
    """The whole (unmasked) frames at the start of what a server sent."""
    frames, at = [], 0
    while at + 2 <= len(buf):
        opcode, size, at2 = buf[at] & 0x0F, buf[at + 1] & 0x7F, at + 2
        if size >= 126:
            width = 2 if size == 126 else 8
            if at2 + width > len(buf):
                break
            size, at2 = int.from_bytes(buf[at2 : at2 + width], "big"), at2 + width
        if at2 + size > len(buf):
            break
        frames.append((opcode, buf[at2 : at2 + size]))
        at = at2 + size
    return frames


def read_what_came(sock: socket.socket) -> bytes:
    """What waits to be read; a reset is met again by the next write or read."""
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while select.select([sock], [], [], 0)[0]:
            piece = sock.recv(65536)
            if not piece:
                break
            got += piece
    return got


def stream_past_the_limit(port: int, path: str) -> tuple[int | str, str]:
    """Streams one message in fragments until the gateway closes; (close code read, how it ended), or
    ("write failed", the error) when a write failed before the close was read."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(handshake_request(port, path))
        got = b""
        while b"\r\n\r\n" not in got:
            got += sock.recv(4096)
        head, got = got.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        opcode, looked, deadline = OP_BINARY, time.monotonic(), time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                sock.sendall(frame(opcode, b"\x01" * PIECE, fin=False))
            except OSError as exc:
                return "write failed", type(exc).__name__
            opcode = OP_CONT
            time.sleep(SEND_EVERY_S)
            if time.monotonic() - looked < LOOK_EVERY_S:
                continue
            looked = time.monotonic()
            got += read_what_came(sock)
            closes = [payload for op, payload in server_frames(got) if op == OP_CLOSE]
            if closes:
                code = struct.unpack("!H", closes[0][:2])[0]
                with contextlib.suppress(OSError):
                    sock.sendall(frame(OP_CLOSE, closes[0][:2]))
                try:
                    while sock.recv(65536):
                        pass
                except ConnectionResetError:
                    return code, "reset"
                return code, "eof"
    return "no close", ""


@pytest.mark.ws
@pytest.mark.parametrize("path", ["/v1/stream", "/project-runner"])
async def test_a_browser_streaming_past_the_message_limit_reads_1009(gw: RunningGateway, path: str) -> None:
    """Before: 0 of 20 runs read the close on /v1/stream (each write failed with a broken pipe first)."""
    ends = [await asyncio.to_thread(stream_past_the_limit, gw.port, path) for _ in range(RUNS)]
    figure(f"close_while_sending{path.replace('/', '_')}", f"{RUNS} clients streaming {PIECE >> 10} KiB "
           f"fragments past the message limit, looking every {LOOK_EVERY_S * 1000:.0f} ms: {ends}")  # fmt: skip
    assert ends == [(1009, "eof")] * RUNS


class _AnswerAndClose(asyncio.Protocol):
    """Answers a little and closes at once, reading nothing: what the gateway does after a refusal."""

    def __init__(self, linger_s: float, lost: asyncio.Future[float]) -> None:
        self.linger_s, self.lost = linger_s, lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        wrapped = LingeringTransport(transport, asyncio.get_running_loop(), self.linger_s)
        wrapped.write(b"the answer")
        wrapped.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(time.monotonic())


async def closing_server(linger_s: float) -> tuple[int, asyncio.Future[float], asyncio.Server]:
    loop = asyncio.get_running_loop()
    lost: asyncio.Future[float] = loop.create_future()
    server = await loop.create_server(lambda: _AnswerAndClose(linger_s, lost), "127.0.0.1", 0)
    return server.sockets[0].getsockname()[1], lost, server


def send_until(port: int, enough: Callable[[bytes, float], bool], piece: bytes, every_s: float) -> tuple[bytes, str]:
    """Sends ``piece`` every ``every_s`` and looks at what came between, until ``enough(what came,
    seconds since the start)``; then reads to the end. (what came, how it ended)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        got, started = b"", time.monotonic()
        while not enough(got, time.monotonic() - started):
            try:
                sock.sendall(piece)
            except OSError as exc:
                return got, f"write failed: {type(exc).__name__}"
            time.sleep(every_s)
            got += read_what_came(sock)
        try:
            while more := sock.recv(65536):
                got += more
        except OSError as exc:
            return got, type(exc).__name__
        return got, "eof"


async def test_a_client_sending_on_after_the_close_gets_the_answer_and_a_clean_end() -> None:
    """It sends for 0.3 s, the answer and the end waiting unread meanwhile (an upload's body going on
    after its refusal), then reads to the end."""
    port, lost, server = await closing_server(linger_s=5.0)
    try:
        got, ended = await asyncio.to_thread(send_until, port, lambda _, taken_s: taken_s > 0.3, b"y" * 16384, 0.01)
        stopped = time.monotonic()
        async with asyncio.timeout(QUIET_S + CHECK_S + 2):
            let_go = await lost - stopped
    finally:
        server.close()
    assert (got, ended) == (b"the answer", "eof")  # before: a broken pipe or a reset on the next write
    assert let_go <= QUIET_S + CHECK_S, let_go


async def test_a_client_that_never_stops_sending_is_let_go_within_a_linger_period() -> None:
    """Trickling a byte every 50 ms it is never quiet: dropped once a whole period passed after it took
    everything, as a client that takes nothing is."""
    port, lost, server = await closing_server(linger_s=1.0)
    started = time.monotonic()
    try:
        _, ended = await asyncio.to_thread(send_until, port, lambda _, taken_s: taken_s > 3, b"y", 0.05)
        async with asyncio.timeout(2):
            let_go = await lost - started
    finally:
        server.close()
    assert 1.0 <= let_go <= 1.0 + CHECK_S + 0.5, let_go
    assert ended.startswith("write failed") or ended in ("ConnectionResetError", "eof"), ended


async def test_what_a_flooding_client_sends_after_the_close_is_bounded() -> None:
    """Past DISCARD_BYTES reading stops and the close goes on: a client at line rate is not read for ever."""
    port, lost, server = await closing_server(linger_s=5.0)
    started = time.monotonic()
    try:
        _, ended = await asyncio.to_thread(send_until, port, lambda _, taken_s: taken_s > 3, b"y" * 1048576, 0)
        async with asyncio.timeout(2):
            let_go = await lost - started
    finally:
        server.close()
    assert let_go < 3, let_go  # well before the client stops (3 s) or the linger's bounds (5 s)
    assert ended.startswith("write failed"), (ended, DISCARD_BYTES)
