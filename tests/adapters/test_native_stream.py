"""/v1/stream end to end: real uvicorn on port 0, real simulator over gRPC, real websockets client."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
from starlette.websockets import WebSocket

from gateway.adapters.reader import HELD_MESSAGE_MIN_BYTES, ClientReader
from gateway.simulator.server import DataflowSimulator
from tests.support import signals
from tests.support.harness import (
    GatewayFactory,
    RunningGateway,
    Transcript,
    next_message,
    read_all,
    vanish_and_expect_upstream_cancelled,
    ws_connect,
)
from tests.support.native_client import client_audio, dtmf_session, send_audio, start_message

pytestmark = pytest.mark.ws  # opens WebSockets: runs with the fast path on and off


@pytest.mark.parametrize(("encoding", "rate"), [("f32", 48000), ("pcm16", 16000), ("mulaw", 8000), ("alaw", 8000)])
async def test_dtmf_digits_come_back_in_every_client_format(gw: RunningGateway, encoding: str, rate: int) -> None:
    result = await dtmf_session(gw, ["159", "#0*"], encoding, rate)
    assert result.milestones() == ["159", "#0*"]
    assert result.close_code == 1000
    assert result.of_type("closed")[-1]["reason"] == "finalized"
    assert [r["name"] for r in result.of_type("response")] == ["FinalizeResponse"]
    assert result.events("FinalResult")
    assert [e["final"] for e in result.events("SR Milestone")] == [True, True]
    assert len(result.events("Speech Started")) == 2


async def test_odd_frame_sizes_are_reframed(gw: RunningGateway) -> None:
    # 333-byte frames split samples everywhere; the gateway must re-frame, not corrupt.
    samples = signals.utterances(["2468"], 16000)
    data = client_audio(samples, "pcm16")
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        await next_message(ws, "started")
        await send_audio(ws, data, 333)
        await ws.send(json.dumps({"type": "finalize"}))
        transcript = await read_all(ws)
    assert transcript.milestones() == ["2468"]
    assert transcript.errors() == []  # the total is whole samples, so nothing was dropped


async def test_closed_audio_ms_keeps_its_fraction(gw: RunningGateway) -> None:
    """4004 samples of 8 kHz pcm16 are 500.5 ms of audio: ``closed`` says 500.5, not a rounded 500."""
    data = b"\x00\x00" * 4004
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message(rate=8000))
        await next_message(ws, "started")
        await send_audio(ws, data, 1000)
        await ws.send(json.dumps({"type": "finalize"}))
        transcript = await read_all(ws)
    [closed] = transcript.of_type("closed")
    assert (closed["reason"], closed["audioMs"], transcript.errors()) == ("finalized", 500.5, [])


async def test_stereo_client_gets_per_channel_text(gw: RunningGateway) -> None:
    both = signals.interleave(signals.utterances(["11"], 16000), signals.utterances(["23"], 16000))
    data = client_audio(both, "pcm16")
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message(channels=2, channelTags=["customer", "agent"]))
        await next_message(ws, "started")
        await send_audio(ws, data, 1280)
        await ws.send(json.dumps({"type": "finalize"}))
        result = await read_all(ws)
    assert result.milestones(0) == ["11"]
    assert result.milestones(1) == ["23"]


async def test_stop_update_event_and_ping(gw: RunningGateway, simulator: DataflowSimulator) -> None:
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message(interim=False, raw=True))
        await next_message(ws, "started")
        await ws.send(json.dumps({"type": "ping", "id": 7}))
        assert (await next_message(ws, "pong"))["id"] == 7
        await ws.send(json.dumps({"type": "update", "settings": {"Language": "en-GB"}}))
        response = await next_message(ws, "response")
        assert (response["name"], response["ok"]) == ("UpdateResponse", True)
        await ws.send(json.dumps({"type": "event", "event": {"Name": "TTS Request", "Data": {"Text": "hi"}}}))
        echoed = await next_message(ws, "event")
        assert echoed["name"] == "TTS Request"
        assert echoed["raw"]["Name"] == "TTS Request"
        await ws.send(json.dumps({"type": "stop"}))
        result = await read_all(ws)
    assert result.close_code == 1000
    assert result.of_type("closed")[-1]["reason"] == "stopped"
    assert len(result.audio) == 1  # the simulated TTS fragment arrived as a binary frame
    assert simulator.records[-1].requests == ["update", "stop"]


async def test_interim_false_drops_partials_only(gw: RunningGateway) -> None:
    result = await dtmf_session(gw, ["37"], "pcm16", 16000, interim=False)
    assert result.events("SR Partial") == []
    assert result.milestones() == ["37"]


async def test_bad_input_gets_documented_errors_and_loses_nothing(gw: RunningGateway) -> None:
    samples = signals.utterances(["90"], 16000)
    data = client_audio(samples, "pcm16")
    async with ws_connect(gw.ws_url()) as ws:
        await ws.send(b"\x00\x01")  # audio before start
        await ws.send("{not json")
        await ws.send(json.dumps({"type": "start", "audio": {"encoding": "opus"}}))
        await ws.send(json.dumps({"type": "start", "audio": {"sampleRate": 96000}}))
        await ws.send(json.dumps({"type": "start", "bogus": 1}))
        await ws.send(start_message())
        result = Transcript()
        await next_message(ws, "started", skipped=result)
        await send_audio(ws, data[: len(data) // 2], 640)
        await ws.send("[1, 2]")
        await ws.send(json.dumps({"type": "dance"}))
        await ws.send(start_message())
        await ws.send(json.dumps({"type": "update", "settings": 3}))
        await send_audio(ws, data[len(data) // 2 :], 640)
        await ws.send(b"\x07")  # leaves half a sample at the end
        await ws.send(json.dumps({"type": "finalize"}))
        await ws.send(b"\x00\x00")  # after finalize
        await read_all(ws, result)
    assert result.errors() == [
        "audio_before_start", "invalid_message", "unsupported_audio_format", "unsupported_audio_format",
        "invalid_start", "invalid_message", "unknown_message_type", "already_started", "invalid_update",
        "misaligned_audio", "session_finalizing",
    ]  # fmt: skip
    assert result.milestones() == ["90"]
    assert result.close_code == 1000


async def test_oversize_frame_closes_1009(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(max_ws_message_bytes=4096) as gw, ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        await next_message(ws, "started")
        await ws.send(bytes(8192))
        result = await read_all(ws)
    assert result.close_code == 1009


async def test_idle_timeout(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(idle_timeout_s=0.5, ack_interval_ms=100) as gw, ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        await next_message(ws, "started")
        result = await read_all(ws, timeout=5)
    assert result.errors() == ["idle_timeout"]
    assert result.of_type("closed")[-1]["reason"] == "idle_timeout"
    assert result.close_code == 1008
    assert result.of_type("ack")  # flow reports arrived while the session was open


async def test_audio_the_gateway_holds_longer_than_the_idle_timeout_is_not_idleness(
    gateway_factory: GatewayFactory,
) -> None:
    # One message of 8 s of audio at 2x real time after a 1 s burst is held 3.5 s; the idle timeout is 1 s.
    # The client sent everything at once: the session must deliver it (it had closed idle_timeout, audioMs 0).
    audio = client_audio(signals.utterances(["123"], 8000, lead_ms=300, tail_ms=8000), "mulaw")[: 8 * 8000]
    settings = {"idle_timeout_s": 1.0, "max_audio_rate_x": 2.0, "audio_rate_burst_ms": 1000, "ack_interval_ms": 100}
    async with gateway_factory(**settings) as gw, ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message("mulaw", 8000))
        await next_message(ws, "started")
        began = time.monotonic()
        await ws.send(audio)
        await ws.send(json.dumps({"type": "finalize"}))
        result = await read_all(ws, timeout=15)
    assert result.errors() == [] and result.close_code == 1000
    assert result.milestones() == ["123"]
    assert result.of_type("closed")[-1]["audioMs"] == 8000
    assert time.monotonic() - began >= 3.4  # it was held, not refused


async def test_an_allowance_left_unused_in_a_real_time_stream_is_not_banked(gateway_factory: GatewayFactory) -> None:
    """3 s in real time at 3x with a 1 s burst, then 6 s at once: held (6 - 1) / 3 s. The unused allowance
    had built up ((3 - 1) x 3 s = 6 s): the 6 s went through at once (after an hour, two hours of audio)."""
    settings = {"max_audio_rate_x": 3.0, "audio_rate_burst_ms": 1000, "ack_interval_ms": 100}
    frame = b"\x00\x00" * 320  # 20 ms of 16 kHz pcm16
    async with gateway_factory(**settings) as gw, ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        await next_message(ws, "started")
        began = time.monotonic()
        for n in range(1, 151):
            await ws.send(frame)
            await asyncio.sleep(max(0.0, began + n * 0.02 - time.monotonic()))
        blasted = time.monotonic()
        await ws.send(frame * 300)
        paused = False
        while (ack := await next_message(ws, "ack"))["audioMs"] < 9000:
            paused = paused or ack["paused"]
        took = time.monotonic() - blasted
    assert took >= 1.5 and paused, (took, paused)


async def test_max_duration_delivers_results_then_closes(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(max_session_s=1.2, ack_interval_ms=100) as gw, ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message())
        await next_message(ws, "started")
        # Real-time pace: digits then speech still going when the limit hits.
        data = client_audio(np.concatenate([signals.silence(200, 16000), signals.dtmf("55", 16000)]), "pcm16")
        await send_audio(ws, data, 640, pace_s=0.02)
        result = await read_all(ws, timeout=5)
    assert result.errors() == ["max_duration"]
    assert result.milestones() == ["55"]  # finalize flushed the open utterance before closing
    assert result.close_code == 1008


async def test_session_cap_refuses_with_1013(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(max_sessions=1) as gw, ws_connect(gw.ws_url()) as first:
        await first.send(start_message())
        await next_message(first, "started")
        async with ws_connect(gw.ws_url()) as second:
            refused = await read_all(second)
        assert refused.errors() == ["capacity_exceeded"]
        assert refused.of_type("error")[0]["retryable"] is True
        assert refused.close_code == 1013
        assert gw.gateway.registry.active == 1


async def test_client_disconnect_cancels_upstream_within_a_second(
    gw: RunningGateway, simulator: DataflowSimulator
) -> None:
    ws = await ws_connect(gw.ws_url())
    await ws.send(start_message())
    await next_message(ws, "started")
    await ws.send(bytes(640))
    record = simulator.records[-1]
    await vanish_and_expect_upstream_cancelled(ws, record, gw)


@pytest.mark.parametrize(
    ("fault", "code", "reason", "close_code"),
    [
        ("reject_start", "upstream_rejected", "start_failed", 1011),
        ("abort:300:UNAVAILABLE", "upstream_unavailable", "upstream_error", 1011),
        ("abort:300:RESOURCE_EXHAUSTED", "upstream_unavailable", "upstream_error", 1011),
        ("abort:300:UNAUTHENTICATED", "upstream_auth_failed", "upstream_error", 1011),
        ("drop:300", "upstream_unavailable", "upstream_error", 1011),
    ],
)
async def test_simulator_faults_reach_the_client_typed(
    gateway_factory: GatewayFactory, fault: str, code: str, reason: str, close_code: int
) -> None:
    # Every stream fails 300 ms in: the recovery's attempts go on for its window (2 s here, 10 s by default).
    async with gateway_factory(upstream_recovery_window_s=2.0) as gw, ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message(settings={"SimulatorFault": fault}))
        sender = asyncio.create_task(send_audio(ws, bytes(640 * 100), 640, pace_s=0.02))
        result = await read_all(ws, timeout=10)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    assert result.errors() == [code]
    assert result.of_type("closed")[-1]["reason"] == reason
    assert result.close_code == close_code
    assert gw.gateway.registry.active == 0


async def test_slow_start_times_out(gateway_factory: GatewayFactory) -> None:
    async with gateway_factory(upstream_start_timeout_s=0.3) as gw, ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message(settings={"SimulatorFault": "slow_start:3000"}))
        result = await read_all(ws)
    assert result.errors() == ["upstream_timeout"]
    assert result.close_code == 1011


@pytest.mark.parametrize("leaves", ["reset", "close"])
async def test_a_client_gone_while_data_flow_answers_start_frees_its_slot_at_once(
    gateway_factory: GatewayFactory, leaves: str
) -> None:
    """Data Flow takes 3 s to answer Start; the client hangs up at once: the connection's slot and the
    upstream stream are let go within a second, not when the start would have timed out."""
    async with gateway_factory(upstream_start_timeout_s=10) as gw:
        ws = await ws_connect(gw.ws_url())
        await ws.send(start_message(settings={"SimulatorFault": "slow_start:3000"}))
        await asyncio.sleep(0.2)
        gone_at = time.monotonic()
        if leaves == "reset":
            ws.transport.abort()
        else:
            await ws.close()
        async with asyncio.timeout(1.0):
            while gw.gateway.registry.active or gw.gateway.upstream.active_streams:
                await asyncio.sleep(0.01)
        assert time.monotonic() - gone_at < 1.0


async def test_empty_frames_during_a_slow_start_are_held_within_the_bound(
    gateway_factory: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Data Flow takes 2 s to answer Start; meanwhile the client sends thousands of empty frames. Each
    held message counts at least HELD_MESSAGE_MIN_BYTES, so holding stops at the bound (the rest waits
    in the socket) instead of parking every one; then all are handled in order and the session goes on."""
    readers: list[ClientReader] = []
    init = ClientReader.__init__

    def recorded(reader: ClientReader, ws: WebSocket) -> None:
        init(reader, ws)
        readers.append(reader)

    monkeypatch.setattr(ClientReader, "__init__", recorded)
    bound = 8000 * 2 // 10 // HELD_MESSAGE_MIN_BYTES  # 100 ms of 8 kHz pcm16: 1600 bytes, 25 messages
    gateway = gateway_factory(pre_start_audio_ms=100, upstream_start_timeout_s=10)
    async with gateway as gw, ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message("pcm16", 8000, settings={"SimulatorFault": "slow_start:2000"}))
        await asyncio.sleep(0.2)
        for _ in range(3000):
            await ws.send(b"")
        await ws.send(json.dumps({"type": "ping", "id": 1}))
        await asyncio.sleep(0.5)
        (reader,) = readers
        held_while_starting = len(reader._held)
        await next_message(ws, "started")
        await ws.send(json.dumps({"type": "finalize"}))
        result = await read_all(ws)
    assert 0 < held_while_starting <= bound + 1  # one read may complete past the bound
    assert [m["id"] for m in result.of_type("pong")] == [1]  # nothing lost: the rest was read after the start
    assert (result.errors(), result.close_code) == ([], 1000)


async def test_upstream_stall_pauses_the_client_and_says_so(gateway_factory: GatewayFactory) -> None:
    overrides = {"upstream_buffer_ms": 1000, "upstream_response_timeout_s": 2.0, "ack_interval_ms": 100}
    async with gateway_factory(**overrides) as gw, ws_connect(gw.ws_url()) as ws:
        await ws.send(start_message(settings={"SimulatorFault": "stall:0"}))
        await next_message(ws, "started")
        transcript = Transcript()
        reader = asyncio.create_task(read_all(ws, transcript, timeout=15))
        sent = 0
        with pytest.raises(Exception):  # noqa: B017,PT011 - the socket closes under the sender eventually
            async with asyncio.timeout(12):
                while True:
                    await ws.send(bytes(3200))  # 100 ms per frame, as fast as the gateway reads
                    sent += 3200
        result = await reader
    paused = [a for a in result.of_type("ack") if a["paused"]]
    assert paused, "the client must be told that upstream is not taking audio"
    assert max(a["bufferedMs"] for a in result.of_type("ack")) <= 1000 + 200
    assert result.errors() == ["upstream_timeout"]
    assert result.close_code == 1011
    # The gateway stopped reading the client: what it accepted is bounded by the upstream buffer and
    # gRPC's flow-control window, not by how fast the client can push (tens of MB/s on loopback).
    accepted_ms = result.of_type("closed")[-1]["audioMs"]
    print(f"accepted {accepted_ms} ms of audio while {sent / 32:.0f} ms were pushed")
    assert accepted_ms < 10_000


async def test_fifty_concurrent_sessions_without_cross_talk(gw: RunningGateway) -> None:
    digit_sets = [f"{i % 10}{(i * 7) % 10}{(i * 3) % 10}" for i in range(50)]

    async def one(digits: str) -> list[str]:
        return (await dtmf_session(gw, [digits], "pcm16", 8000)).milestones()

    results = await asyncio.gather(*(one(d) for d in digit_sets))
    assert results == [[d] for d in digit_sets]
    assert gw.gateway.registry.active == 0
