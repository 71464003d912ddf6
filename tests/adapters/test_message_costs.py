"""What a live client's messages cost on the pacing clock (``GATEWAY_MAX_AUDIO_RATE_X``), over real
sockets in both WebSocket modes (gateway.relay.intake).

Pacing counted audio bytes only. A message costs ~12 us of CPU whatever it holds, so one-sample frames
within the limit kept a third of a core busy, and what the gateway handles alone was not paced at all:
audio AudioHook does not forward (while paused, 6 GB in 6 s), Twilio marks (75 000 a second). Now a
message of audio costs at least AUDIO_FLOOR_MS, a binary one that feeds nothing its length as audio, a
text one the gateway handles alone 2 ms and 1 ms more per KiB; the client is slowed, not ended. Messages
a dialect ignores no longer count as activity for the idle timeout: they had kept a session that sent
no audio, and its Data Flow stream, open for hours. A read is parsed a slice at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from gateway.connections.pongs import PARSE_SLICE_BYTES, BoundedControlProtocol
from gateway.connections.ws_refusals import RefusingProtocol
from gateway.relay.intake import MESSAGE_FLOOR_MS
from gateway.ws_protocol import FastReceiveProtocol
from tests.support import telephony
from tests.support.audiohook_client import opened_client
from tests.support.harness import RunningGateway, read_all, ws_connect
from tests.support.native_client import start_message
from tests.support.probes import figure

RATE_X, BURST_S = 3.0, 1.0  # the rate limit's multiple of real time and its burst, here


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    return {"max_audio_rate_x": RATE_X, "audio_rate_burst_ms": int(BURST_S * 1000), "idle_timeout_s": 2}


async def flood(ws: Any, message: bytes | str, seconds: float) -> int:
    """Send ``message`` as fast as the connection takes it for ``seconds``; how many were sent."""
    sent, began = 0, time.monotonic()
    while time.monotonic() - began < seconds:
        for _ in range(100):
            await ws.send(message)
        sent += 100
    return sent


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"audio_rate_burst_ms": 120_000}], indirect=True)  # 1 ms each: not paced here
async def test_a_read_of_tiny_frames_is_parsed_a_slice_at_a_time(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 000 one-byte frames in one write: uvicorn parsed a whole read (up to 256 KiB, ~37 000 such
    frames, 274 ms of the event loop) in one callback and queued all of it; now a slice (4 KiB, 585 such
    frames) at a time, and (README) "the next slice only while fewer than 64 messages wait" (a mutant
    allowing 4096 queued ~4 000 messages in one callback)."""
    per_call: list[int] = []
    waiting: list[int] = []  # messages in the ASGI queue as each slice is parsed
    parse_slice = RefusingProtocol.data_received

    def counting_slice(self: RefusingProtocol, data: bytes) -> None:
        waiting.append(self.queue.qsize())
        parse_slice(self, data)

    protocol = FastReceiveProtocol if gw.gateway.settings.ws_fast_path else BoundedControlProtocol
    parse = protocol.send_receive_event_to_app
    parse_read = BoundedControlProtocol._parse

    def counting_parse(self: BoundedControlProtocol) -> None:
        per_call[-1] += 1
        parse(self)

    def counting_read(self: BoundedControlProtocol) -> None:  # from data_received, or once the queue is taken
        per_call.append(0)
        parse_read(self)

    monkeypatch.setattr(protocol, "send_receive_event_to_app", counting_parse)
    monkeypatch.setattr(BoundedControlProtocol, "_parse", counting_read)
    monkeypatch.setattr(RefusingProtocol, "data_received", counting_slice)
    async with ws_connect(gw.ws_url("/v1/vonage?project=demo")) as ws:
        await ws.send(telephony.vonage_connected(16000))
        frame = b"\x82\x81" + b"\x00\x00\x00\x00" + b"\x00"  # binary, masked with zeros, one byte
        ws.transport.write(frame * 30_000)
        await ws.send(json.dumps({"event": "websocket:dtmf", "digit": "1"}))
        await asyncio.sleep(1.0)
    figure("tiny frames per parse", f"{len(per_call)} parses, at most {max(per_call)} messages each")
    assert sum(per_call) >= 30_000
    assert max(per_call) <= PARSE_SLICE_BYTES // len(frame) + 1  # one slice at a time: it was the whole read
    assert len(waiting) >= 30_000 * len(frame) // PARSE_SLICE_BYTES and max(waiting) < 64, max(waiting)


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"idle_timeout_s": 30}], indirect=True)
async def test_audio_while_audiohook_is_paused_is_paced_as_audio(gw: RunningGateway) -> None:
    """Stereo PCMU is 16 000 bytes a second: 3 s at 3x and a 1 s burst take 160 KB of paused audio (the
    sockets' buffers hold a few MB more); it used to take 3 GB. The session lives on."""
    ws, client = await opened_client(gw)
    try:
        await client.recv()  # opened
        await client.audio(b"\xff" * 16000)
        await client.send("paused")
        sent = await flood(ws, b"\xff" * 64000, 3.0)  # 4 s of audio a frame
        figure("paused AudioHook audio", f"{sent * 64000 / 1e6:.1f} MB sent in 3 s")
        assert sent * 64000 < 30e6
        await client.send("resumed")
        await client.send("ping")
        assert (await client.until("pong", timeout=30))[-1]["type"] == "pong"
    finally:
        await ws.close()


@pytest.mark.ws
async def test_messages_a_dialect_ignores_do_not_keep_a_session_open(gw: RunningGateway) -> None:
    """A Twilio stream sending marks every 0.2 s and no media ends at the idle timeout (2 s here); it
    stayed open for as long as the marks came."""
    async with ws_connect(gw.ws_url("/v1/twilio")) as ws:
        await ws.send(telephony.twilio_connected())
        await ws.send(telephony.twilio_start())
        began = time.monotonic()
        with pytest.raises(ConnectionClosed):
            for n in range(50):
                await ws.send(json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": f"m{n}"}}))
                await asyncio.sleep(0.2)
        took = time.monotonic() - began
    assert took < 6, took
    assert ws.close_reason == "idle_timeout"


@pytest.mark.ws
async def test_messages_a_dialect_answers_still_count_as_activity(gw: RunningGateway) -> None:
    """A paused AudioHook call whose client pings every 0.5 s outlives the 2 s idle timeout."""
    ws, client = await opened_client(gw)
    try:
        await client.recv()
        await client.send("paused")
        for _ in range(8):
            await client.send("ping")
            assert (await client.until("pong"))[-1]["type"] == "pong"
            await asyncio.sleep(0.5)
    finally:
        await ws.close()


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"idle_timeout_s": 30}], indirect=True)
async def test_messages_a_dialect_ignores_are_paced(gw: RunningGateway) -> None:
    """600 Twilio marks cost MESSAGE_FLOOR_MS (20 ms) of audio time each: 12 s, less the 1 s burst, at 3x
    real time is 3.7 s before the stop behind them is read. They were handled as fast as they came (6 000
    well under 1 s), 75 000 a second, a core busy; at 2 ms each, 1 500 a second per session, 20 sessions
    of one key took a core and other tenants' events waited seconds."""
    async with ws_connect(gw.ws_url("/v1/twilio")) as ws:
        await ws.send(telephony.twilio_connected())
        await ws.send(telephony.twilio_start())
        for media in telephony.twilio_media("1", lead_ms=0)[:5]:
            await ws.send(media)
        began = time.monotonic()
        for n in range(600):
            await ws.send(json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": f"m{n}"}}))
        await ws.send(telephony.twilio_stop())
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 30)
        took = time.monotonic() - began
    figure("600 Twilio marks", f"stop handled after {took:.1f} s")
    assert took > 3.0, took


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"idle_timeout_s": 30}], indirect=True)
async def test_a_large_text_message_costs_a_millisecond_more_per_kib(gw: RunningGateway) -> None:
    """100 Twilio marks of ~60 KB cost 20 ms plus 1 ms per KiB each (~78.6 ms): 7.9 s of audio time, less
    the 1 s burst, at 3x real time is ~2.3 s before the stop behind them is read. At the floor alone
    (2 s of audio time) they would be read in 0.33 s."""
    mark = json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": "x" * 60_000}})
    count = 100
    expected = (count * (MESSAGE_FLOOR_MS + len(mark) / 1024) / 1000 - BURST_S) / RATE_X
    async with ws_connect(gw.ws_url("/v1/twilio"), max_size=None) as ws:
        await ws.send(telephony.twilio_connected())
        await ws.send(telephony.twilio_start())
        for media in telephony.twilio_media("1", lead_ms=0)[:5]:
            await ws.send(media)
        began = time.monotonic()
        for _ in range(count):
            await ws.send(mark)
        await ws.send(telephony.twilio_stop())
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        took = time.monotonic() - began
    figure(
        f"{count} Twilio marks of {len(mark)} bytes", f"stop handled after {took:.2f} s (cost model {expected:.2f} s)"
    )
    assert took >= 0.85 * expected, f"stop handled after {took:.2f} s, the per-KiB cost says >= {expected:.2f} s"


@pytest.mark.ws
@pytest.mark.parametrize("gw", [{"idle_timeout_s": 30}], indirect=True)
async def test_one_sample_frames_cost_at_least_the_audio_floor(gw: RunningGateway) -> None:
    """12 000 one-sample frames of 16 kHz pcm16 are 0.75 s of audio, taken at once; at 1 ms each
    (AUDIO_FLOOR_MS) they are 12 s of audio time, less the 1 s burst, at 3x: 3.7 s before the finalize
    behind them is read. The audio still all reaches Data Flow."""
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        assert json.loads(await ws.recv())["type"] == "started"
        began = time.monotonic()
        for _ in range(12_000):
            await ws.send(b"\x00\x00")
        await ws.send(json.dumps({"type": "finalize"}))
        result = await read_all(ws, timeout=30)
        took = time.monotonic() - began
    figure("12 000 one-sample frames", f"finalized after {took:.1f} s")
    assert took > 3.0, took
    assert result.close_code == 1000


@pytest.mark.ws
async def test_answered_pings_are_paced_to_what_keeps_other_tenants_live(gw: RunningGateway) -> None:
    """A native session's pings, answered by the gateway itself, cost 2 ms of audio time each: 1 500 pongs a
    second per session, and 20 sessions of one key kept a core busy (other tenants' events waited 2-4 s).
    At MESSAGE_FLOOR_MS (20 ms) a session gets at most the burst plus 150 a second at 3x."""
    seconds, pongs = 3.0, 0
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        assert json.loads(await ws.recv())["type"] == "started"
        flooding = asyncio.create_task(flood(ws, json.dumps({"type": "ping", "id": 1}), 4 * seconds))
        began = time.monotonic()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for message in ws:
                    pongs += json.loads(message)["type"] == "pong"
        elapsed = time.monotonic() - began
        flooding.cancel()
        ws.transport.abort()  # the pings still queued would take minutes to be read
    most = (BURST_S + RATE_X * elapsed) * 1000 / 20  # README: 20 ms of audio time each
    figure("pings flooded", f"{pongs} answered in {elapsed:.1f} s (cost model: at most {most:.0f})")
    assert 0 < pongs <= most * 1.15, f"{pongs} pongs in {elapsed:.1f} s; the cost model allows {most:.0f}"
