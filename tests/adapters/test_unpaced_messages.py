"""Messages a client sends while no session of its connection streams, and after the gateway's close,
over raw sockets in both WebSocket modes (gateway.adapters.unpaced, gateway.connections.pongs).

Nothing paced them: binary frames sent before the start message were read at line rate (9 GB in 14 s),
each answered with an ``audio_before_start`` error, until the start timeout; then, after the close
frame, uvicorn read and dropped what came for its 10 s close timeout, GBs. Now such messages cost 2 ms
plus their length at 1 MiB/s after a 1 s burst, and what comes after the close is read at 64 MiB/s at
most: the client is slowed, and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from gateway.adapters.unpaced import BURST_S, BYTES_PER_S, MESSAGE_S
from gateway.connections.pongs import CLOSING_READ_BYTES_PER_S
from tests.support.harness import RunningGateway
from tests.support.probes import figure
from tests.support.raw_ws import OP_BINARY, OP_TEXT, RawWebSocket, frame

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
    sockets' buffers hold more); it was ~1 GB, each frame answered at once."""
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
async def test_what_comes_after_the_close_is_read_at_a_bounded_pace(gw: RunningGateway) -> None:
    """A client that never starts gets its close at 0.5 s (1008 start_timeout), reads it, and sends on for
    4 s: at most a second of burst and 4 s at 64 MiB/s are read (it was read and dropped at line rate,
    GBs). Reading goes on, so a client that is only busy sending still gets through to its close reply."""
    ws = await RawWebSocket.connect(gw.port)
    try:
        code, _ = await ws.close_code(timeout=5)
        assert code == 1008, code  # start_timeout
        sent = await flood(ws, 4.0)
        figure("bytes after the close", f"{sent / 2**20:.0f} MiB taken in 4 s")
        assert sent < (1 + 4) * CLOSING_READ_BYTES_PER_S + SOCKET_BUFFERS, sent
        assert sent > CLOSING_READ_BYTES_PER_S, sent  # read on, not stopped
    finally:
        ws.abort()
