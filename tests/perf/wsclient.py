"""A lean RFC 6455 client for the load generator: an asyncio Protocol, no per-message task switches.

The websockets library costs the load generator tens of microseconds per frame and queues what
arrives behind its own reader tasks; with hundreds of sessions on the same two cores as the
gateway it took a third of a core and added its own queueing to every latency it measured. This
client frames and masks in a few microseconds, stamps every message with its arrival time the
moment the bytes are read, and hands messages to a callback. It speaks only what the benchmark
needs: one handshake, unfragmented client frames, any server frames, ping/pong and close.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import struct
import time
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA

#: on_message(opcode, payload, arrival_ns) for every complete text or binary message
OnMessage = Callable[[int, bytes, int], None]


def _mask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return payload
    n = len(payload)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame (a fresh key each frame; a benchmark needs no crypto-grade one)."""
    key = random.randbytes(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + key + _mask(payload, key)


class LeanWebSocket(asyncio.Protocol):
    def __init__(self, host: str, path: str, on_message: OnMessage) -> None:
        self._host, self._path, self._on_message = host, path, on_message
        self._key = base64.b64encode(os.urandom(16))
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0
        self._open = False
        self._close_sent = False
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        transport = self.transport
        transport.write(
            f"GET {self._path} HTTP/1.1\r\nHost: {self._host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self._key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self._buffer += data
        if not self._open and not self._handshake():
            return
        self._frames(now)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed during the handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    # --- sending --------------------------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        self._write(encode_frame(TEXT, text.encode()))

    def send_binary(self, data: bytes) -> None:
        self._write(encode_frame(BINARY, data))

    async def close(self, code: int = 1000) -> int | None:
        if self.transport is not None and not self.transport.is_closing() and not self._close_sent:
            self._close_sent = True
            self._write(encode_frame(CLOSE, struct.pack("!H", code)))
        try:
            return await asyncio.wait_for(asyncio.shield(self.closed), 10)
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()
            return self.close_code

    def _write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    # --- receiving ------------------------------------------------------------------------------------

    def _handshake(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
        accept = base64.b64encode(hashlib.sha1(self._key + _GUID).digest()).decode()  # RFC 6455, not a security use
        if " 101 " not in head[0] + " " or headers.get("sec-websocket-accept") != accept:
            self.opened.set_exception(ConnectionError(f"handshake refused: {head[0]}"))
            assert self.transport is not None
            self.transport.close()
            return False
        self._open = True
        self.opened.set_result(None)
        return True

    def _frames(self, now: int) -> None:
        buf = self._buffer
        while len(buf) >= 2:
            first, second = buf[0], buf[1]
            n, offset = second & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, offset = struct.unpack_from("!H", buf, 2)[0], 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, offset = struct.unpack_from("!Q", buf, 2)[0], 10
            if second & 0x80:  # a server must not mask, but be lenient: skip the key
                offset += 4
            if len(buf) < offset + n:
                return
            payload = bytes(buf[offset : offset + n])
            del buf[: offset + n]
            self._frame(first & 0x80 != 0, first & 0x0F, payload, now)

    def _frame(self, final: bool, opcode: int, payload: bytes, now: int) -> None:
        if opcode == PING:
            self._write(encode_frame(PONG, payload))
        elif opcode == CLOSE:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            if not self._close_sent:  # answer the server's close; ours, if we sent one first, was the answer
                self._close_sent = True
                self._write(encode_frame(CLOSE, payload[:2]))
            if self.transport is not None:
                self.transport.close()
        elif opcode in (TEXT, BINARY) or opcode == 0:
            if opcode:
                self._fragment_opcode = opcode
            self._fragments.append(payload)
            if final:
                message, self._fragments = b"".join(self._fragments), []
                self._on_message(self._fragment_opcode, message, now)


async def connect(url: str, on_message: OnMessage) -> LeanWebSocket:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(
        lambda: LeanWebSocket(f"{host}:{port}", parts.path or "/", on_message), host, port
    )
    await asyncio.wait_for(protocol.opened, 30)
    return protocol
