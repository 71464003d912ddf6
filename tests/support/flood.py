"""Shared by the connection-count tests (tests/system/test_connection_cap.py, test_descriptor_limit.py):
idle connections by the hundred, an answer read whole, and a live session that shows it still streams."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection

from tests.support.harness import next_message, ws_connect
from tests.support.probes import dtmf_pcm, start_json
from tests.support.raw_ws import RawWebSocket, handshake_request

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
READYZ = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def envelope(self) -> dict[str, Any]:
        error: dict[str, Any] = json.loads(self.body)["error"]
        return error


async def ask(port: int, request: bytes | None, timeout: float = 5, source: str = "127.0.0.1") -> Answer:
    """Open a connection from ``source``, send ``request`` (None: nothing), read the answer and its body."""
    conn = await RawWebSocket.open(port, source)
    try:
        if request is not None:
            await conn.send_raw(request)
        status = await conn.read_response(timeout)
        return Answer(status, dict(conn.headers), await conn.read_body(timeout))
    finally:
        conn.abort()


async def ws_handshake(port: int, timeout: float = 5) -> Answer:
    return await ask(port, handshake_request(port), timeout)


class IdleConnections:
    """TCP connections that send nothing, and what the other end sent each before closing it."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.port, self.source = port, source
        self.open: list[socket.socket] = []
        self.received: dict[socket.socket, bytes] = {}
        self.closed: list[bytes] = []  # what each connection the other end closed had received

    async def add(self, count: int = 1) -> None:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.bind((self.source, 0))
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
            self.open.append(sock)  # connected, accepted or not: the kernel's backlog answers first

    def poll(self) -> int:
        """Reads what came; connections the other end closed (or reset) move to ``closed``. Their count."""
        for sock in list(self.open):
            try:
                while data := sock.recv(65536):
                    self.received[sock] = self.received.get(sock, b"") + data
            except BlockingIOError:
                continue
            except OSError:
                pass
            self.open.remove(sock)
            self.closed.append(self.received.pop(sock, b""))
            sock.close()
        return len(self.closed)

    def close(self) -> None:
        for sock in self.open:
            with contextlib.suppress(OSError):
                sock.close()
        self.open.clear()


class LiveSession:
    """A native session that says digits and hears them back as milestones while it lasts."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, url: str, source: str = "127.0.0.1") -> LiveSession:
        ws = await ws_connect(url, local_addr=(source, 0))
        await ws.send(start_json())
        await next_message(ws, "started")
        return cls(ws)

    async def say(self, digits: str, timeout: float = 10) -> str:
        """Stream ``digits`` as DTMF audio; the milestone text that comes back."""
        pcm = dtmf_pcm([digits])
        for offset in range(0, len(pcm), 3200):
            await self.ws.send(pcm[offset : offset + 3200])
        async with asyncio.timeout(timeout):
            while True:
                event = await next_message(self.ws, "event", timeout)
                if event["name"] == "SR Milestone":
                    text: str = event["text"]
                    return text

    async def finish(self) -> int | None:
        await self.ws.send(json.dumps({"type": "finalize"}))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                async for _ in self.ws:
                    pass
        await self.ws.wait_closed()
        return self.ws.close_code


async def converse(port: int, *writes: bytes, pause_s: float = 0.1, quiet_s: float = 1.0) -> bytes:
    """Each of ``writes`` on one raw connection, ``pause_s`` apart (a proxy forwards a body after the
    head, often in a later read); everything answered until the other end closes or is quiet ``quiet_s``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for data in writes:
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(pause_s)
        answered = b""
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), quiet_s)
            except TimeoutError:
                return answered
            if not chunk:
                return answered
            answered += chunk
    finally:
        writer.close()
