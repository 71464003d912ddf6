"""The WebSocket fast path (gateway/ws_protocol.py, gateway/adapters/fast_audio.py): audio frames go
from uvicorn's protocol straight to the session, and nothing else changes — order with control
messages, what reaches Data Flow, what the client gets back. The end-to-end tests here (and every
WebSocket test of the suite) run with the fast path on and off."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from gateway.adapters import commands
from gateway.adapters.audiocodes import AudioCodesDialect
from gateway.adapters.dialect import ClientMessage, Dialect
from gateway.adapters.native import NativeDialect
from gateway.adapters.twilio import TwilioDialect
from gateway.simulator.server import DataflowSimulator
from gateway.ws_protocol import MESSAGES_PER_READ
from tests.support import signals, telephony
from tests.support.harness import GatewayFactory, RunningGateway, next_message, read_all, ws_connect
from tests.support.native_client import client_audio, start_message
from tests.support.settings import SECRETS

FRAME = 640  # 20 ms of 16 kHz pcm16


def ws_messages(gw: RunningGateway, path: str) -> float:
    value = gw.gateway.metrics.registry.get_sample_value("dataflow_gateway_ws_messages_total", {"path": path})
    return value or 0.0


async def counted(gw: RunningGateway, path: str, at_least: float) -> float:
    """The connection counts its messages when it ends, just after the client saw the close."""
    async with asyncio.timeout(5):
        while ws_messages(gw, path) < at_least:
            await asyncio.sleep(0.01)
    return ws_messages(gw, path)


@pytest.mark.ws
@pytest.mark.ws
async def test_paced_audio_takes_the_fast_path_and_every_digit_comes_back(gw: RunningGateway) -> None:
    audio = client_audio(signals.utterances(["314", "159"], 16000), "pcm16")
    frames = [audio[i : i + FRAME] for i in range(0, len(audio), FRAME)]
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        await next_message(ws, "started")
        for frame in frames:
            await ws.send(frame)
            await asyncio.sleep(0.004)  # a paced client (faster than real time, well within the rate limit)
        await ws.send(json.dumps({"type": "finalize"}))
        result = await read_all(ws)
    assert result.milestones() == ["314", "159"]
    assert result.close_code == 1000
    queued = await counted(gw, "queued", 2)  # start and finalize at least
    fast = ws_messages(gw, "fast")
    if gw.gateway.settings.ws_fast_path:
        # A frame takes the queued path only when it arrives while the driver still handles another.
        assert fast >= 0.9 * len(frames), (fast, queued, len(frames))
        assert fast + queued == len(frames) + 2
    else:
        assert fast == 0
        assert queued == len(frames) + 2


@pytest.mark.ws
@pytest.mark.ws
async def test_control_messages_stay_in_order_with_audio_sent_in_one_burst(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    """Updates between audio frames, all sent without waiting: Data Flow gets each update exactly after
    the audio that preceded it, whichever path each frame took."""
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        await next_message(ws, "started")
        for i in range(1, 41):
            await ws.send(bytes(FRAME))
            if i % 10 == 0:
                await ws.send(json.dumps({"type": "update", "settings": {"Marker": i}}))
        await ws.send(json.dumps({"type": "finalize"}))
        result = await read_all(ws)
    assert result.close_code == 1000
    assert [m["name"] for m in result.of_type("response")] == ["UpdateResponse"] * 4 + ["FinalizeResponse"]
    record = simulator.records[-1]
    assert record.requests == ["update", "update", "update", "update", "finalize"]
    assert record.request_offsets == [10 * FRAME, 20 * FRAME, 30 * FRAME, 40 * FRAME, 40 * FRAME]
    assert record.audio_bytes == 40 * FRAME


@pytest.mark.ws
@pytest.mark.ws
async def test_one_read_gives_the_fast_path_at_most_32_messages_and_keeps_their_order(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    """200 tiny frames, an update and 100 more in one TCP write (one read on loopback): the fast path
    takes at most MESSAGES_PER_READ of them, the rest queue (so a flood yields the loop), and Data
    Flow still gets the update after exactly the audio sent before it."""
    tiny = [Frame(Opcode.BINARY, bytes([i % 256]) * 10).serialize(mask=True, extensions=[]) for i in range(300)]
    update = Frame(Opcode.TEXT, json.dumps({"type": "update", "settings": {"Marker": 1}}).encode())
    burst = b"".join(tiny[:200]) + update.serialize(mask=True, extensions=[]) + b"".join(tiny[200:])
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        await next_message(ws, "started")
        ws.transport.write(burst)
        assert (await next_message(ws, "response"))["name"] == "UpdateResponse"
        await ws.send(json.dumps({"type": "finalize"}))
        result = await read_all(ws)
    assert result.close_code == 1000
    record = simulator.records[-1]
    assert record.request_offsets == [2000, 3000]  # the update after 200 frames, finalize after all 300
    await counted(gw, "queued", 3 + 300 - MESSAGES_PER_READ)
    if gw.gateway.settings.ws_fast_path:
        assert ws_messages(gw, "fast") == MESSAGES_PER_READ
        assert ws_messages(gw, "queued") == 3 + 300 - MESSAGES_PER_READ
    else:
        assert ws_messages(gw, "fast") == 0


@pytest.mark.ws
async def test_twilio_media_text_frames_take_the_fast_path(
    gateway_factory: GatewayFactory, simulator: DataflowSimulator
) -> None:
    """Twilio's audio is base64 in JSON text messages: those go the fast way too, every byte arrives."""
    token, host = "twilio-fast-path-token-0123456789", "gw.example.test"
    SECRETS.add(token)
    media = telephony.twilio_media("42")
    async with gateway_factory(twilio_auth_token=token, public_hosts=[host]) as gw:
        signature = telephony.twilio_signature(token, f"wss://{host}/v1/twilio")
        async with ws_connect(gw.ws_url("/v1/twilio"), additional_headers={"X-Twilio-Signature": signature}) as ws:
            await ws.send(telephony.twilio_connected())
            await ws.send(telephony.twilio_start())
            for frame in media:
                await ws.send(frame)
                await asyncio.sleep(0.004)
            await ws.send(telephony.twilio_stop())
            result = await read_all(ws)
        assert result.close_code == 1000
        queued = await counted(gw, "queued", 3)  # connected, start and stop at least
        fast = ws_messages(gw, "fast")
        if gw.gateway.settings.ws_fast_path:
            assert fast >= 0.9 * len(media), (fast, queued, len(media))
        else:
            assert fast == 0
        assert fast + queued == len(media) + 3
    assert simulator.records[-1].audio_bytes == 2 * 160 * len(media)  # mu-law 8 kHz as pcm16 8 kHz


# --- the dialects' fast_audio is their streaming(), for audio only -------------------------------------


def replay(dialect: Dialect, messages: list[ClientMessage], *, fast: bool) -> list[Any]:
    """What the driver would do with ``messages``: audio fed, and every other command, in order."""
    out: list[Any] = []
    for message in messages:
        if fast:
            data = dialect.fast_audio(message)
            if data is not None:
                if data:
                    out.append(data)
                continue
        command = dialect.streaming(message)
        if isinstance(command, commands.Audio):
            if command.data:
                out.append(command.data)
        elif command is not None:
            out.append(type(command).__name__)
    return out


def joined(out: list[Any]) -> list[Any]:
    """Adjacent audio merged: the two paths may cut it differently only if a dialect buffers."""
    merged: list[Any] = []
    for item in out:
        if isinstance(item, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += item
        else:
            merged.append(item)
    return merged


_INBOUND = telephony.twilio_media("12", lead_ms=0)[:12]
_OUTBOUND = [
    m.replace('"track": "inbound"', '"track": "outbound"') for m in telephony.twilio_media("9", lead_ms=0)[:12]
]
_TWILIO_OTHER = [
    telephony.twilio_dtmf("5"),
    json.dumps({"event": "mark", "mark": {"name": "tts-1"}}),
    json.dumps({"event": "media", "media": {"payload": "not base64!"}}),
    json.dumps({"event": "media", "media": "no"}),
    '{"event": "media"',
    "[]",
    telephony.twilio_stop(),
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_INBOUND + _OUTBOUND + _TWILIO_OTHER), max_size=30), st.booleans())
def test_twilio_fast_audio_is_streaming_for_media_even_with_two_tracks(messages: list[str], two_tracks: bool) -> None:
    def dialect() -> TwilioDialect:
        made = TwilioDialect("demo")
        made.waiting(telephony.twilio_start(tracks=["inbound", "outbound"] if two_tracks else None))
        return made

    assert joined(replay(dialect(), list(messages), fast=True)) == joined(replay(dialect(), list(messages), fast=False))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.binary(max_size=700) | st.sampled_from(['{"type":"finalize"}', '{"type":"stop"}', "x"]), max_size=12)
)
def test_binary_dialects_fast_audio_is_streaming_for_binary_frames(messages: list[ClientMessage]) -> None:
    for make in (lambda: NativeDialect("demo"), lambda: AudioCodesDialect("demo")):
        assert replay(make(), messages, fast=True) == replay(make(), messages, fast=False)
