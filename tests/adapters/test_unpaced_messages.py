"""Messages a client sends while no session of its connection streams, and after the gateway's close, over
raw sockets in both WebSocket modes (gateway.adapters.unpaced, gateway.connections.pongs).

Nothing paced them: binary frames sent before the start message were read at line rate (9 GB in 14 s),
each answered with an ``audio_before_start`` error, until the start timeout; then, after the close frame,
uvicorn read and dropped what came for its 10 s close timeout. Now such messages cost 2 ms plus their
length at 1 MiB/s after a 1 s burst (the client is slowed), and at most 4 MiB are read after the close.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from gateway.adapters.unpaced import BURST_S, BYTES_PER_S, MESSAGE_S
from gateway.connections.pongs import CLOSING_READ_BYTES
from tests.support.harness import RunningGateway
from tests.support.probes import figure
from tests.support.raw_ws import OP_BINARY, OP_CLOSE, OP_TEXT, Frame, RawWebSocket, frame

FRAME = frame(OP_BINARY, b"\0" * 65536)
#: What the kernel's socket buffers may hold on loopback, both ends, beyond what the gateway reads.
SOCKET_BUFFERS = 16 * 1024 * 1024


async def flood(ws: RawWebSocket, seconds: float) -> int:
    """Write FRAME for ``seconds`` as fast as the connection takes it (never reading); the bytes taken.
    Stops early once the gateway ends the connection."""
    sent, began = 0, time.monotonic()
    with contextlib.suppress(ConnectionError):
        while time.monotonic() - began < seconds:
            ws.writer.write(FRAME)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.writer.drain(), 0.5)
                sent += len(FRAME)
    return sent


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"start_timeout_s": 30}], indirect=True)
async def test_binary_frames_before_the_start_are_paced(gw: RunningGateway) -> None:
    """3 s of 64 KiB frames before any start: 1 s of burst and 3 s at 1 MiB/s is ~4 MiB read (the
    sockets' buffers hold more); it was ~2 GB, each frame answered. The start behind them still works."""
    ws = await RawWebSocket.connect(gw.port)
    began = time.monotonic()
    try:
        sent = await flood(ws, 3.0)
        figure("binary frames before the start", f"{sent / 1e6:.1f} MB taken in 3 s")
        paced = (BURST_S + 3.0) * BYTES_PER_S
        assert sent < paced + SOCKET_BUFFERS, sent
        replies = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                while (received := await ws.recv()) is not None and received.opcode == OP_TEXT:
                    replies += 1
        handled = (time.monotonic() - began + BURST_S) / (MESSAGE_S + len(FRAME) / BYTES_PER_S)
        assert replies <= handled + 2, (replies, handled)  # one per frame handled: thousands a second
    finally:
        ws.abort()


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"start_timeout_s": 0.5}], indirect=True)
async def test_what_comes_after_the_close_is_read_only_so_far(gw: RunningGateway) -> None:
    """A client that never starts is closed at 0.5 s (1008 start_timeout) and sends on for 8 s: the
    gateway reads at most 4 MiB after its close (it read and dropped at line rate, GBs, for 10 s)."""
    ws = await RawWebSocket.connect(gw.port)
    closed_at: float | None = None

    async def watch() -> None:
        nonlocal closed_at
        while (received := await ws.recv(timeout=15)) is not None:
            if isinstance(received, Frame) and received.opcode == OP_CLOSE:
                closed_at = time.monotonic()
                assert received.close_code == 1008
                return

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(asyncio.shield(watcher), 5)
        assert closed_at is not None
        sent = await flood(ws, 8.0)
        figure("bytes after the close", f"{sent / 1e6:.1f} MB taken in 8 s")
        assert sent < CLOSING_READ_BYTES + SOCKET_BUFFERS, sent
    finally:
        watcher.cancel()
        ws.abort()
