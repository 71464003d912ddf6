"""Frames no session pays for: the fragments of a message, pings and pongs.

A session paces its client's messages (gateway.relay.intake), but a message may come in any number of
frames, and pings and pongs are no messages: 1 MiB sent as one-byte fragments was a million frames
parsed at line rate (seconds of a core for one message, and ~40 bytes held per byte until its last
fragment), and pings were answered as fast as they came. Now each such frame costs 1/FRAMES_PER_S of
the connection's time, FRAME_BURST_S of it in hand, and the rest of a read waits (the client is slowed
by TCP; nothing it sent is lost). Over real sockets, in both WebSocket modes.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from gateway.connections.pongs import FRAME_BURST_S, FRAMES_PER_S, PARSE_SLICE_BYTES, BoundedControlProtocol
from gateway.simulator.server import DataflowSimulator
from gateway.ws_protocol import FastReceiveProtocol
from tests.support.harness import RunningGateway
from tests.support.probes import LoopLag, dtmf_round_trip, figure, start_json
from tests.support.raw_ws import OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWebSocket, frame

FRAMES = 3 * FRAMES_PER_S  # each attack's frames: two seconds of them past the burst
#: A pace other than the default (GATEWAY_WS_FRAMES_PER_S): the same count of frames takes four times
#: as long past the burst, which is a quarter the size.
SLOWER_FRAMES_PER_S = FRAMES_PER_S // 4


def paced_s(frames: int, frame_bytes: int, frames_per_s: int) -> float:
    """How long ``frames`` frames of ``frame_bytes`` each hold up what follows them: a read is parsed a
    slice at a time, each slice once the frames before it are paid for, so the last slice's are not
    waited for."""
    return (frames - PARSE_SLICE_BYTES // frame_bytes) / frames_per_s - FRAME_BURST_S


async def started(gw: RunningGateway) -> RawWebSocket:
    ws = await RawWebSocket.connect(gw.port)
    await ws.send(OP_TEXT, start_json().encode())
    received = await ws.recv()
    assert received is not None and json.loads(received.payload)["type"] == "started", received
    return ws


def fragmented(payload: bytes) -> bytes:
    """``payload`` as one binary message of one-byte frames."""
    last = len(payload) - 1
    return b"".join(
        frame(OP_BINARY if i == 0 else OP_CONT, payload[i : i + 1], fin=i == last) for i in range(len(payload))
    )


@pytest.mark.ws
async def test_a_message_in_one_byte_fragments_is_paced_and_arrives_whole(
    gw: RunningGateway, simulator: DataflowSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its frames are taken at FRAMES_PER_S past the burst, kept in one buffer, and the message reaches
    Data Flow whole; a session beside it keeps its pace (it was taken at once, held as one bytes object
    per frame)."""
    held: list[int] = []  # how many pieces the protocol holds for a message when it is complete
    protocol = FastReceiveProtocol if gw.gateway.settings.ws_fast_path else BoundedControlProtocol
    deliver = protocol.send_receive_event_to_app

    def counting(self: BoundedControlProtocol) -> None:
        held.append(len(self.frames))
        deliver(self)

    monkeypatch.setattr(protocol, "send_receive_event_to_app", counting)
    audio = bytes(range(256)) * (FRAMES // 256)  # whole 16-bit samples
    ws = await started(gw)
    record = simulator.records[-1]
    try:
        async with LoopLag() as lag:
            began = time.monotonic()
            await ws.send_raw(fragmented(audio) + frame(OP_TEXT, b'{"type":"finalize"}'))
            beside = asyncio.create_task(dtmf_round_trip(gw, "147", pace_s=0.1))
            code, _ = await ws.close_code(timeout=30)
            took = time.monotonic() - began
            latency = await beside
    finally:
        ws.abort()
    figure("fragment_pace", f"a {len(audio)} B message in one-byte frames taken in {took:.2f} s (pace "
           f"{FRAMES_PER_S}/s, burst {FRAME_BURST_S:g} s); a session beside it: finalize->closed "
           f"{latency * 1000:.0f} ms; "
           f"worst loop stall {lag.worst * 1000:.0f} ms")  # fmt: skip
    assert code == 1000
    assert record.audio_bytes == len(audio)  # the message, whole
    assert max(held) == 1  # one buffer, not one bytes object per frame (was len(audio))
    assert took > paced_s(len(audio), len(frame(OP_CONT, b"x")), FRAMES_PER_S) * 0.9, took  # was ~0.2 s
    assert latency < 3.0 and lag.worst < 0.5


async def ping_flood(gw: RunningGateway, pings: int) -> tuple[float, int]:
    """Sends ``pings`` pings and a message behind them: how long until the message is answered, and how
    many pongs came before."""
    ws = await started(gw)
    try:
        began = time.monotonic()
        await ws.send_raw(frame(OP_PING, b"p" * 16) * pings + frame(OP_TEXT, b'{"type":"ping","id":7}'))
        pongs = 0
        async with asyncio.timeout(30):
            while (received := await ws.recv()) is not None:
                if received.opcode == OP_PONG:
                    pongs += 1
                elif received.opcode == OP_TEXT and json.loads(received.payload).get("type") == "pong":
                    assert json.loads(received.payload)["id"] == 7
                    break
        return time.monotonic() - began, pongs
    finally:
        ws.abort()


@pytest.mark.ws
async def test_a_ping_flood_is_paced_and_every_ping_answered(gw: RunningGateway) -> None:
    """A message behind the pings is read once they are paid for; each ping still gets its pong."""
    took, pongs = await ping_flood(gw, FRAMES)
    figure("ping_pace", f"{FRAMES} pings in one burst: the message behind them read after {took:.2f} s, {pongs} pongs")
    assert pongs == FRAMES
    assert took > paced_s(FRAMES, len(frame(OP_PING, b"p" * 16)), FRAMES_PER_S) * 0.9, took  # was ~0.1 s


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"ws_frames_per_s": SLOWER_FRAMES_PER_S}], indirect=True)
async def test_the_frame_pace_follows_its_setting(gw: RunningGateway) -> None:
    """At GATEWAY_WS_FRAMES_PER_S = a quarter of the default, a quarter as many pings hold the message
    behind them about as long as the default's count does at the default pace (at the default pace
    these would all fit in the burst)."""
    pings = 3 * SLOWER_FRAMES_PER_S
    expected = paced_s(pings, len(frame(OP_PING, b"p" * 16)), SLOWER_FRAMES_PER_S)
    took, pongs = await ping_flood(gw, pings)
    figure("ping_pace_setting", f"{pings} pings at {SLOWER_FRAMES_PER_S}/s: the message behind them read "
           f"after {took:.2f} s (expected {expected:.2f} s)")  # fmt: skip
    assert pongs == pings
    assert expected * 0.9 < took < expected + 2.0, took  # ~0.0 s at the default pace


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"ws_frames_per_s": SLOWER_FRAMES_PER_S}], indirect=True)
async def test_unsolicited_pongs_are_paced_like_pings(gw: RunningGateway) -> None:
    """Pongs nobody asked for are frames no session pays for too: a ping behind a flood of them is answered
    once they are paid for (a mutant did not count pongs: the ping was answered at once, and a client
    could have the gateway parse pongs at line rate)."""
    pongs = 3 * SLOWER_FRAMES_PER_S
    expected = paced_s(pongs, len(frame(OP_PONG, b"u" * 16)), SLOWER_FRAMES_PER_S)
    ws = await started(gw)
    try:
        began = time.monotonic()
        await ws.send_raw(frame(OP_PONG, b"u" * 16) * pongs + frame(OP_PING, b"probe"))
        async with asyncio.timeout(30):
            while (received := await ws.recv()) is not None:
                if received.opcode == OP_PONG:
                    assert received.payload == b"probe"
                    break
        took = time.monotonic() - began
    finally:
        ws.abort()
    assert received is not None, "the connection ended before the ping was answered"
    figure("pong_pace", f"{pongs} unsolicited pongs at {SLOWER_FRAMES_PER_S}/s: the ping behind them answered "
           f"after {took:.2f} s (expected {expected:.2f} s)")  # fmt: skip
    assert expected * 0.9 < took < expected + 2.0, took  # was ~0.0 s
