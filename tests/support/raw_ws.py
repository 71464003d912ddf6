"""A raw WebSocket client for abuse tests: hand-built frames (RFC 6455) over a plain TCP stream.

Real clients (``websockets``) refuse to send malformed frames; this one sends whatever it is told:
oversized length fields, invalid UTF-8, fragmented or oversized control frames, interleaved
messages, a handshake one byte at a time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
from dataclasses import dataclass

from tests.support import ws_mode

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def handshake_request(port: int, path: str = "/v1/stream", extra: str = "") -> bytes:
    ws_mode.count_handshake()  # a WebSocket test, whichever gateway it reaches (tests/support/ws_mode.py)
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, length: int | None = None) -> bytes:
    """A masked client frame; ``length`` overrides the declared payload length (to lie about it)."""
    declared = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    if declared < 126:
        head += bytes([0x80 | declared])
    elif declared < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", declared)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", declared)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@dataclass
class Frame:
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE:
            return None
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else 1005


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.status: int | None = None
        self.headers: dict[str, str] = {}

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> RawWebSocket:
        """``source``: the client's address (another loopback address, 127.0.0.2, is another client)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        return cls(reader, writer)

    @classmethod
    async def connect(cls, port: int, path: str = "/v1/stream", extra_headers: str = "") -> RawWebSocket:
        ws = await cls.open(port)
        await ws.send_raw(handshake_request(port, path, extra_headers))
        await ws.read_response()
        assert ws.status == 101, ws.status
        return ws

    async def read_response(self, timeout: float = 5) -> int:
        """Read an HTTP response head; its status, with ``headers`` (lower-case names) kept."""
        async with asyncio.timeout(timeout):
            head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ", 2)[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
        return self.status

    async def read_body(self, timeout: float = 5) -> bytes:
        """The body of the response just read (by Content-Length)."""
        async with asyncio.timeout(timeout):
            return await self.reader.readexactly(int(self.headers.get("content-length", "0")))

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, opcode: int, payload: bytes = b"", *, fin: bool = True, length: int | None = None) -> None:
        await self.send_raw(frame(opcode, payload, fin=fin, length=length))

    async def recv(self, timeout: float = 10) -> Frame | None:
        """The next server frame, or None at EOF."""
        try:
            async with asyncio.timeout(timeout):
                first, second = await self.reader.readexactly(2)
                length = second & 0x7F
                if length == 126:
                    length = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif length == 127:
                    length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                return Frame(first & 0x0F, await self.reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def close_code(self, timeout: float = 10) -> tuple[int | None, list[Frame]]:
        """Read until the server's close frame (its code) or EOF (None); returns what came before too."""
        seen: list[Frame] = []
        async with asyncio.timeout(timeout):
            while (received := await self.recv(timeout)) is not None:
                if received.opcode == OP_CLOSE:
                    return received.close_code, seen
                seen.append(received)
        return None, seen

    async def eof(self, timeout: float = 10) -> bool:
        """True once the server closed the TCP connection (reads drained)."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    if not await self.reader.read(65536):
                        return True
                except ConnectionError:
                    return True

    def abort(self) -> None:
        self.writer.transport.abort()

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
