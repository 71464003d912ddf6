"""Shared by the fuzz harnesses: an event loop for async parsers, input splitting, stubs, the oracle.

Every harness module defines ``one_input(data: bytes) -> None``. It feeds ``data`` to one parser
the way the gateway does and lets only the gateway's declared error types (``GatewayError`` and
the subclasses named per parser) through; any other exception is a finding. The same functions run
under Hypothesis in the normal suite (tests/system/test_properties.py) and under atheris on demand
(``python tests/fuzz/run.py <parser>``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from gateway.errors import GatewayError

T = TypeVar("T")
_loop: asyncio.AbstractEventLoop | None = None


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the harnesses' own event loop (created once; parsers need no real I/O)."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coro)


def close_loop() -> None:
    global _loop
    if _loop is not None:
        _loop.close()
        _loop = None


def with_pieces(parts: list[bytes]) -> bytes:
    """The inverse of :func:`pieces` (parts of 1..256 bytes), for seeds."""
    return b"".join(bytes([len(p) % 256]) + p for p in parts)


def pieces(data: bytes) -> Iterator[bytes]:
    """Split ``data`` into length-prefixed pieces (one length byte, then that many bytes; 0 = 256)."""
    pos = 0
    while pos < len(data):
        size = data[pos] or 256
        yield data[pos + 1 : pos + 1 + size]
        pos += 1 + size


def split_points(data: bytes) -> tuple[bytes, list[bytes]]:
    """The first byte seeds the chunk sizes the rest of ``data`` is cut into (to test resumable parsers)."""
    if not data:
        return b"", []
    seed, body = data[0], data[1:]
    chunks, pos, step = [], 0, 0
    while pos < len(body):
        step = (seed * 31 + step * 7 + 1) % 97 + 1
        chunks.append(body[pos : pos + step])
        pos += step
    return body, chunks


def text_of(data: bytes) -> str | None:
    """``data`` as a WebSocket text frame would carry it (None: not UTF-8, which uvicorn closes 1007)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def encodable(value: Any) -> None:
    """What the gateway renders must be writable as JSON (send_json would fail otherwise)."""
    json.dumps(value, separators=(",", ":"))


class StubSession:
    """Stands in for a Session behind an adapter's control-message dispatch; records what was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def finalize(self) -> None:
        self.calls.append(("finalize", None))

    async def stop(self) -> None:
        self.calls.append(("stop", None))

    async def update(self, settings: dict[str, Any]) -> None:
        assert isinstance(settings, dict)
        encodable(settings)
        self.calls.append(("update", settings))

    async def send_event(self, event: dict[str, Any]) -> None:
        assert isinstance(event, dict)
        encodable(event)
        self.calls.append(("event", event))

    async def feed_audio(self, data: bytes) -> None:
        self.calls.append(("audio", len(data)))

    def touch(self) -> None:
        pass

    def reply(self, payload: dict[str, Any]) -> None:
        encodable(payload)
        self.calls.append(("reply", payload))

    def notify(self, error: GatewayError) -> None:
        self.calls.append(("notify", error.error_code))
