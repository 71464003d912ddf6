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
from dataclasses import dataclass

import pytest

from gateway.connections.closing_reads import DISCARD_BYTES, QUIET_S
from gateway.connections.linger import CHECK_S, SENDING_ON_S, LingeringTransport
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


@dataclass
class Ends:
    closed: asyncio.Future[float]  # when the server closed (time.monotonic())
    lost: asyncio.Future[float]  # when its connection was let go


class _AnswerAndClose(asyncio.Protocol):
    """Answers a little and closes, ``after_s`` after the connection came, reading nothing: what the
    gateway does after a refusal or a timeout."""

    def __init__(self, linger_s: float, after_s: float, ends: Ends) -> None:
        self.linger_s, self.after_s, self.ends = linger_s, after_s, ends

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        loop = asyncio.get_running_loop()
        wrapped = LingeringTransport(transport, loop, self.linger_s)

        def answer_and_close() -> None:
            wrapped.write(b"the answer")
            self.ends.closed.set_result(time.monotonic())
            wrapped.close()

        loop.call_later(self.after_s, answer_and_close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.ends.lost.set_result(time.monotonic())


async def closing_server(linger_s: float, after_s: float = 0.0) -> tuple[int, Ends, asyncio.Server]:
    loop = asyncio.get_running_loop()
    ends = Ends(loop.create_future(), loop.create_future())
    server = await loop.create_server(lambda: _AnswerAndClose(linger_s, after_s, ends), "127.0.0.1", 0)
    return server.sockets[0].getsockname()[1], ends, server


def send_until(port: int, enough: Callable[[bytes, float], bool], piece: bytes, every_s: float) -> tuple[bytes, str]:
    """Sends ``piece`` every ``every_s`` and looks at what came between, until ``enough(what came,
    seconds since the start)``; then reads to the end and closes. (what came, how it ended)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        got, started = b"", time.monotonic()
        while not enough(got, time.monotonic() - started):
            if piece:
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


async def let_go_after_close(
    linger_s: float, enough: Callable[[bytes, float], bool], piece: bytes, every_s: float, after_s: float = 0.0
) -> tuple[bytes, str, float]:
    """:func:`send_until` against a server that closes ``after_s`` after the connection came: (what came,
    how it ended, seconds from the server's close until its connection was let go)."""
    port, ends, server = await closing_server(linger_s, after_s)
    try:
        got, ended = await asyncio.to_thread(send_until, port, enough, piece, every_s)
        async with asyncio.timeout(2):
            let_go = await ends.lost - await ends.closed
    finally:
        server.close()
    return got, ended, let_go


async def test_a_client_sending_on_after_the_close_gets_the_answer_and_a_clean_end() -> None:
    """It sends for 0.3 s, the answer and the end waiting unread meanwhile (an upload's body going on
    after its refusal), then reads to the end and closes: its end is looked at at once."""
    port, ends, server = await closing_server(linger_s=5.0)
    try:
        got, ended = await asyncio.to_thread(send_until, port, lambda _, taken_s: taken_s > 0.3, b"y" * 16384, 0.01)
        stopped = time.monotonic()
        async with asyncio.timeout(QUIET_S + CHECK_S + 2):
            let_go = await ends.lost - stopped
    finally:
        server.close()
    assert (got, ended) == (b"the answer", "eof")  # before: a broken pipe or a reset on the next write
    assert let_go < QUIET_S / 2, let_go  # not a quiet period after its last write


async def test_a_client_that_had_long_been_quiet_is_let_go_at_once() -> None:
    """A kept-alive client between requests (or a refused one that sent its all): the kernel says it has
    sent nothing for a while, so the close does not wait a quiet period, nor for the client's own close."""
    got, ended, let_go = await let_go_after_close(5.0, lambda _, taken_s: taken_s > 1.0, b"", 0.05, after_s=0.5)
    assert (got, ended) == (b"the answer", "eof")
    assert let_go < QUIET_S / 2, let_go  # it held the connection (and its place under the cap) 0.25 s


async def test_a_client_that_never_stops_sending_is_let_go_soon_after_it_took_all() -> None:
    """Trickling a byte every 50 ms (a slowloris after its 408) it is never quiet: closed SENDING_ON_S
    after it took everything, not a linger period (5 s) later."""
    _, ended, let_go = await let_go_after_close(5.0, lambda _, taken_s: taken_s > 3, b"y", 0.05)
    assert SENDING_ON_S <= let_go <= SENDING_ON_S + QUIET_S + 0.3, let_go
    assert ended.startswith("write failed") or ended in ("ConnectionResetError", "eof"), ended


async def test_what_a_flooding_client_sends_after_the_close_is_bounded() -> None:
    """Past DISCARD_BYTES reading stops and the close goes on: a client at line rate is not read for ever."""
    _, ended, let_go = await let_go_after_close(5.0, lambda _, taken_s: taken_s > 3, b"y" * 1048576, 0)
    assert let_go < SENDING_ON_S, let_go  # read at line rate, the discard's bound comes first
    assert ended.startswith("write failed"), (ended, DISCARD_BYTES)
