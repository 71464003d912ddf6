"""Shared pieces of the POST /v1/recognize tests: bodies, the decoder-thread check, and a raw HTTP/1.1
client for what httpx cannot do (read the response while the request body is still being sent,
vanish mid-upload; send a long WAV body over a plain socket, made as it goes, and read its chunked
NDJSON answer whole)."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np

from gateway.audio import decoders
from gateway.simulator.server import DataflowSimulator
from tests.support import signals
from tests.support.harness import RunningGateway

URL = "/v1/recognize"
RATE = 8000
BLOCK_S = 5
BLOCK = signals.to_pcm16(np.concatenate([signals.dtmf("1234", RATE), signals.silence(BLOCK_S * 1000 - 640, RATE)]))
DENSE = signals.to_pcm16(np.concatenate([signals.dtmf("1234", RATE), signals.silence(360, RATE)]))  # 1 s
FAST = {"upstream_coalesce_ms": 1000, "upstream_sample_rate_hz": 8000}  # fewer upstream messages, same path


def wav_head(minutes: int, block: bytes = BLOCK) -> bytes:
    size = minutes * 60 * RATE * 2 // len(block) * len(block)
    fmt = struct.pack("<HHIIHH", 1, 1, RATE, RATE * 2, 2, 16)
    riff = b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
    return riff + b"data" + struct.pack("<I", size)


def error_of(response: httpx.Response, status: int, code: str) -> str:
    """The message of an answer's error envelope, once its status and code are as expected."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    message: str = error["message"]
    return message


async def no_decoder_thread_left() -> None:
    async with asyncio.timeout(2):
        while [t for t in threading.enumerate() if t.name.startswith(decoders.THREAD_PREFIX)]:
            await asyncio.sleep(0.01)


async def outcome(simulator: DataflowSimulator) -> str:
    """How the simulator saw the last stream end (a cancel reaches it a moment after the response)."""
    record = simulator.records[-1]
    async with asyncio.timeout(2):
        while record.ended_at is None:
            await asyncio.sleep(0.01)
    return record.outcome


async def pieces(data: bytes, size: int, pause_s: float = 0.0) -> AsyncIterator[bytes]:
    """``data`` as a streamed (chunked) request body of ``size``-byte pieces."""
    for i in range(0, len(data), size):
        yield data[i : i + size]
        if pause_s:
            await asyncio.sleep(pause_s)


def multipart(parts: list[tuple[str, str | None, str, bytes]], boundary: str = "dfgw-b0undary") -> tuple[bytes, str]:
    """(body, content type) of multipart/form-data from (name, filename, content type, data) parts."""
    out = b""
    for name, filename, ctype, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {ctype}\r\n\r\n".encode() + data
        out += b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class RawUpload:
    """A chunked POST over a plain socket: send the body piece by piece, read NDJSON lines meanwhile."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.status = 0
        self._buffer = b""

    @classmethod
    async def open(cls, gw: RunningGateway, query: str = "", headers: dict[str, str] | None = None) -> RawUpload:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        lines = [f"POST {URL}{query} HTTP/1.1", f"Host: 127.0.0.1:{gw.port}", "Transfer-Encoding: chunked"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await self.writer.drain()

    async def end(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    def vanish(self) -> None:
        self.writer.transport.abort()

    async def _read_head(self) -> None:
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        assert b"transfer-encoding: chunked" in head.lower()

    async def next_message(self) -> dict[str, Any] | None:
        """The next NDJSON line of the (chunked) response; None at its end."""
        if not self.status:
            await self._read_head()
        while b"\n" not in self._buffer:
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                return None
            self._buffer += (await self.reader.readexactly(size + 2))[:-2]
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def send_body(sock: socket.socket, minutes: int, sent: list[float]) -> None:
    loop = asyncio.get_running_loop()
    head = wav_head(minutes, DENSE)
    request = (
        f"POST {URL}?interim=true&raw=true HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/x-ndjson\r\n"
        f"Content-Type: audio/wav\r\nContent-Length: {len(head) + minutes * 60 * len(DENSE)}\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode() + head)
    for _ in range(minutes * 60):  # the body made as it goes: neither side holds the file
        await loop.sock_sendall(sock, DENSE)
        sent[0] = time.monotonic()


async def read_answer(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    answer = bytearray()
    while not answer.endswith(b"\r\n0\r\n\r\n"):
        piece = await loop.sock_recv(sock, 65536)
        if not piece:
            break
        answer += piece
    return bytes(answer)


def ndjson_lines(answer: bytes) -> list[dict[str, Any]]:
    head, _, chunked = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    text = b""
    while chunked:
        size_line, _, rest = chunked.partition(b"\r\n")
        size = int(size_line, 16)
        text, chunked = text + rest[:size], rest[size + 2 :]
    return [json.loads(line) for line in text.split(b"\n") if line]
