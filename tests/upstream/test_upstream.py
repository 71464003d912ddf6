"""Upstream client against the simulator over real gRPC: round trips, dialects, faults."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from gateway.audio.convert import encode
from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import (
    FINAL_RESULT,
    MILESTONE,
    DataflowEvent,
    DataflowResponse,
    StartRequest,
    UpstreamAudio,
    UpstreamItem,
)
from gateway.errors import (
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.simulator.server import DataflowSimulator, SimulatorConfig
from gateway.upstream.channel import UpstreamClient
from gateway.upstream.stream import DataflowStream
from gateway.upstream.token import StaticTokenProvider
from tests.support import signals
from tests.support.settings import SIM_TENANT, SIM_TOKEN, settings_for


def audio_bytes(samples: np.ndarray, fmt: AudioFormat) -> bytes:
    frames = samples if samples.ndim == 2 else samples[:, None]
    return encode(frames.astype(np.float32), fmt.encoding)


async def open_stream(client: UpstreamClient, fmt: AudioFormat, **start: Any) -> DataflowStream:
    stream = client.stream(fmt, deadline_s=60)
    await stream.start(StartRequest(project="demo", audio=fmt, **start))
    return stream


async def run_session(
    client: UpstreamClient, data: bytes, fmt: AudioFormat, *, end: str = "finalize", chunk_ms: int = 20, **start: Any
) -> list[UpstreamItem]:
    stream = await open_stream(client, fmt, **start)
    items: list[UpstreamItem] = []

    async def reader() -> None:
        async for item in stream.items():
            items.append(item)

    task = asyncio.create_task(reader())
    step = fmt.ms_to_bytes(chunk_ms)
    for offset in range(0, len(data), step):
        await stream.send_audio(data[offset : offset + step])
    await (stream.finalize() if end == "finalize" else stream.stop())
    await asyncio.wait_for(task, 10)
    await stream.aclose()
    return items


def milestones(items: list[UpstreamItem], channel: int = 0) -> list[str]:
    return [
        i.text or "" for i in items if isinstance(i, DataflowEvent) and i.name == MILESTONE and i.channel == channel
    ]


@pytest.mark.parametrize(
    ("encoding", "rate"), [("pcm16", 16000), ("pcm16", 8000), ("mulaw", 8000), ("alaw", 8000), ("mulaw", 16000)]
)
async def test_dtmf_round_trip_mono(
    upstream: UpstreamClient, simulator: DataflowSimulator, encoding: str, rate: int
) -> None:
    fmt = AudioFormat(encoding, rate, 1)  # type: ignore[arg-type]
    data = audio_bytes(signals.utterances(["123", "4567"], rate), fmt)
    items = await run_session(upstream, data, fmt)
    assert milestones(items) == ["123", "4567"]
    names = [i.name for i in items if isinstance(i, DataflowEvent)]
    assert names.count("Speech Started") == 2
    assert names.count("Speech Ended") == 2
    assert names[-1] == FINAL_RESULT
    responses = [i.name for i in items if isinstance(i, DataflowResponse)]
    assert responses == ["FinalizeResponse"]
    record = simulator.records[-1]
    assert record.outcome == "finalized"
    assert record.token_ok
    assert record.audio_bytes == len(data)


async def test_stereo_channels_keep_their_own_digits(upstream: UpstreamClient) -> None:
    fmt = AudioFormat("mulaw", 8000, 2)
    both = signals.interleave(signals.utterances(["12"], 8000), signals.utterances(["9087"], 8000))
    items = await run_session(upstream, audio_bytes(both, fmt), fmt)
    assert milestones(items, 0) == ["12"]
    assert milestones(items, 1) == ["9087"]
    partials = [i for i in items if isinstance(i, DataflowEvent) and i.name == "SR Partial" and i.channel == 1]
    assert [p.text for p in partials] == ["9", "90", "908", "9087"]
    assert len({p.group_id for p in partials}) == 1


async def test_start_response_carries_session_id_and_token_is_injected(
    upstream: UpstreamClient, simulator: DataflowSimulator
) -> None:
    stream = await open_stream(upstream, AudioFormat("pcm16", 16000, 1))
    assert stream.session_id == simulator.records[-1].session_id
    assert simulator.records[-1].tokens_seen == [SIM_TOKEN]
    await stream.aclose()


class TestLegacyDialect:
    @pytest.fixture
    def sim_config(self) -> SimulatorConfig:
        return SimulatorConfig(token=SIM_TOKEN, tenant=SIM_TENANT, dialect="legacy")

    async def test_legacy_server_is_read_tolerantly(self, upstream: UpstreamClient) -> None:
        fmt = AudioFormat("pcm16", 8000, 1)
        items = await run_session(upstream, audio_bytes(signals.utterances(["42"], 8000), fmt), fmt)
        assert milestones(items) == ["42"]
        finals = [i for i in items if isinstance(i, DataflowEvent) and i.final]
        assert [f.text for f in finals] == ["42"]
        assert all(i.start_ms >= 0 for i in finals)  # numbers sent as strings were read
        assert any(isinstance(i, DataflowResponse) and i.name == "FinalizeResponse" and i.ok for i in items)


async def test_finalize_flushes_but_stop_drops_the_open_utterance(upstream: UpstreamClient) -> None:
    fmt = AudioFormat("pcm16", 16000, 1)
    # Speech that never ends in silence: only a flush can close the utterance.
    data = audio_bytes(np.concatenate([signals.silence(300, 16000), signals.dtmf("78", 16000)]), fmt)
    finalized = await run_session(upstream, data, fmt, end="finalize")
    stopped = await run_session(upstream, data, fmt, end="stop")
    assert milestones(finalized) == ["78"]
    assert milestones(stopped) == []
    assert [i.name for i in stopped if isinstance(i, DataflowResponse)] == ["StopResponse"]
    assert isinstance(stopped[-1], DataflowEvent)
    assert stopped[-1].name == FINAL_RESULT


async def test_update_and_custom_events_and_tts_audio(upstream: UpstreamClient, simulator: DataflowSimulator) -> None:
    fmt = AudioFormat("pcm16", 16000, 1)
    stream = await open_stream(upstream, fmt)
    await stream.update({"Language": "tr-TR"})
    await stream.send_event({"Name": "TTS Request", "Data": {"Text": "hello"}})
    await stream.finalize()
    items = [item async for item in stream.items()]
    await stream.aclose()
    assert [i.name for i in items if isinstance(i, DataflowResponse)] == ["UpdateResponse", "FinalizeResponse"]
    names = [i.name for i in items if isinstance(i, DataflowEvent)]
    assert names[:3] == ["TTS Request", "Start of TTS Fragment", "End of TTS Fragment"]
    audio = [i for i in items if isinstance(i, UpstreamAudio)]
    assert len(audio) == 1
    assert len(audio[0].data) == 2 * 16000 // 5
    assert simulator.records[-1].client_events == [{"Name": "TTS Request", "Data": {"Text": "hello"}}]
    assert simulator.records[-1].requests == ["update", "finalize"]


async def test_audio_queued_during_a_write_is_coalesced(upstream: UpstreamClient, simulator: DataflowSimulator) -> None:
    fmt = AudioFormat("pcm16", 16000, 1)
    stream = await open_stream(upstream, fmt)
    chunk = bytes(640)
    for _ in range(500):  # 10 s of audio handed over without yielding to the writer in between
        await stream.send_audio(chunk)
    await stream.finalize()
    [_ async for _ in stream.items()]
    await stream.aclose()
    record = simulator.records[-1]
    assert record.audio_bytes == 500 * 640
    assert record.audio_messages < 100
    assert record.largest_audio_message <= fmt.ms_to_bytes(200)
    assert record.largest_audio_message % 2 == 0


async def test_audio_that_splits_a_sample_is_refused(upstream: UpstreamClient) -> None:
    stream = await open_stream(upstream, AudioFormat("pcm16", 16000, 2))
    with pytest.raises(ValueError, match="whole sample"):
        await stream.send_audio(bytes(6))
    await stream.aclose()


# --- faults: each one surfaces as its own typed error ---------------------------------------------------


async def fault_session(client: UpstreamClient, fault: str, seconds: float = 3.0) -> None:
    fmt = AudioFormat("pcm16", 16000, 1)
    stream = await open_stream(client, fmt, settings={"SimulatorFault": fault})
    chunk = audio_bytes(signals.tone(1000, 20, 16000), fmt)
    try:

        async def feed() -> None:
            while True:
                await stream.send_audio(chunk)
                await asyncio.sleep(0.02)

        async def drain() -> None:
            async for _ in stream.items():
                pass

        async with asyncio.timeout(seconds):
            feeder = asyncio.create_task(feed())
            try:
                await drain()
            finally:
                feeder.cancel()
                await asyncio.gather(feeder, return_exceptions=True)
    finally:
        await stream.aclose()


async def test_reject_start_is_an_api_level_error(upstream: UpstreamClient) -> None:
    with pytest.raises(UpstreamRejected) as info:
        await open_stream(upstream, AudioFormat("pcm16", 16000, 1), settings={"SimulatorFault": "reject_start"})
    assert info.value.dataflow_message == "simulated start failure"
    assert info.value.grpc_status is None
    assert upstream.active_streams == 0


@pytest.mark.parametrize(
    ("status", "error_type"),
    [("UNAVAILABLE", UpstreamUnavailable), ("INTERNAL", UpstreamUnavailable), ("UNAUTHENTICATED", UpstreamAuthFailed),
     ("INVALID_ARGUMENT", UpstreamRejected)],
)  # fmt: skip
async def test_abort_maps_grpc_status(upstream: UpstreamClient, status: str, error_type: type[Exception]) -> None:
    with pytest.raises(error_type) as info:
        await fault_session(upstream, f"abort:200:{status}")
    assert getattr(info.value, "grpc_status", None) == status


async def test_drop_is_unavailable(upstream: UpstreamClient) -> None:
    with pytest.raises(UpstreamUnavailable):
        await fault_session(upstream, "drop:200")


async def test_stall_blocks_the_sender_then_times_out(simulator: DataflowSimulator) -> None:
    settings = settings_for(simulator, upstream_buffer_ms=500, upstream_response_timeout_s=1.0)
    assert settings.upstream_token is not None
    client = UpstreamClient(settings, StaticTokenProvider(settings.upstream_token))
    fmt = AudioFormat("pcm16", 16000, 1)
    stream = await open_stream(client, fmt, settings={"SimulatorFault": "stall:100"})
    chunk = bytes(fmt.ms_to_bytes(100))
    saw_backpressure = False
    with pytest.raises(UpstreamTimeout, match="stopped accepting audio"):
        async with asyncio.timeout(30):
            while True:
                await stream.send_audio(chunk)
                saw_backpressure = saw_backpressure or stream.backpressured
    assert stream.buffered_bytes <= fmt.ms_to_bytes(500) + len(chunk)
    assert simulator.records[-1].outcome == "stalled"
    await stream.aclose()
    await client.aclose()


async def test_slow_start_hits_the_start_timeout(simulator: DataflowSimulator) -> None:
    settings = settings_for(simulator, upstream_start_timeout_s=0.3)
    assert settings.upstream_token is not None
    client = UpstreamClient(settings, StaticTokenProvider(settings.upstream_token))
    with pytest.raises(UpstreamTimeout, match="Start"):
        await open_stream(client, AudioFormat("pcm16", 16000, 1), settings={"SimulatorFault": "slow_start:2000"})
    assert client.active_streams == 0
    await client.aclose()


async def test_stream_deadline_is_enforced(upstream: UpstreamClient) -> None:
    stream = upstream.stream(AudioFormat("pcm16", 16000, 1), deadline_s=0.5)
    await stream.start(StartRequest(project="demo", audio=AudioFormat("pcm16", 16000, 1)))
    with pytest.raises(UpstreamTimeout):
        async for _ in stream.items():
            pass
    await stream.aclose()


async def test_wrong_token_is_an_auth_error_without_the_token_in_it(
    simulator: DataflowSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-token-d41d8cd98f00"
    client = UpstreamClient(settings_for(simulator), StaticTokenProvider(SecretStr(wrong)))
    with pytest.raises(UpstreamAuthFailed) as info:
        await open_stream(client, AudioFormat("pcm16", 16000, 1))
    await client.aclose()
    text = f"{info.value} {info.value!r} {caplog.text}"
    assert wrong not in text
    assert SIM_TOKEN not in text


async def test_unreachable_upstream_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: nothing listens there
    sim = DataflowSimulator(SimulatorConfig(token=SIM_TOKEN))
    sim.port = port
    client = UpstreamClient(settings_for(sim), StaticTokenProvider(SecretStr(SIM_TOKEN)))
    with pytest.raises(UpstreamUnavailable):
        await open_stream(client, AudioFormat("pcm16", 16000, 1))
    await client.aclose()


async def test_wrong_method_path_is_a_protocol_error(simulator: DataflowSimulator) -> None:
    settings = settings_for(simulator, upstream_method_path="/sestek.Dataflow/Stream")
    client = UpstreamClient(settings, StaticTokenProvider(SecretStr(SIM_TOKEN)))
    failures: list[UpstreamError] = []
    for _ in range(3):
        with pytest.raises(UpstreamError) as info:
            await open_stream(client, AudioFormat("pcm16", 16000, 1))
        failures.append(info.value)
    await client.aclose()
    assert all(isinstance(f, UpstreamProtocolError) and "METHOD_PATH" in f.message for f in failures), failures


async def test_write_interval_merges_paced_frames(simulator: DataflowSimulator) -> None:
    settings = settings_for(simulator, upstream_write_interval_ms=100)
    client = UpstreamClient(settings, StaticTokenProvider(SecretStr(SIM_TOKEN)))
    fmt = AudioFormat("pcm16", 16000, 1)
    stream = await open_stream(client, fmt)
    for _ in range(50):  # 1 s of 20 ms frames, paced: without the interval each is its own message
        await stream.send_audio(bytes(640))
        await asyncio.sleep(0.02)
    await stream.finalize()
    [_ async for _ in stream.items()]
    await stream.aclose()
    await client.aclose()
    record = simulator.records[-1]
    assert record.audio_bytes == 50 * 640
    assert record.audio_messages <= 15


async def _paced_second(stream: DataflowStream) -> None:
    for _ in range(50):  # 1 s of 20 ms frames, paced like a live caller
        await stream.send_audio(bytes(640))
        await asyncio.sleep(0.02)
    await stream.finalize()
    [_ async for _ in stream.items()]


@pytest.mark.parametrize(("streams", "most_messages", "least_messages"), [(1, 50, 30), (8, 15, 5)])
async def test_write_rate_merges_frames_only_under_load(
    simulator: DataflowSimulator, streams: int, most_messages: int, least_messages: int
) -> None:
    # 100 writes/s for the process: one stream's share (10 ms) is under two 20 ms steps, so each frame
    # goes alone; eight streams share it, so each holds up to 80 ms and merges four frames a write.
    settings = settings_for(
        simulator, upstream_write_rate=100, upstream_write_interval_ms=0, upstream_max_write_interval_ms=100
    )
    client = UpstreamClient(settings, StaticTokenProvider(SecretStr(SIM_TOKEN)))
    fmt = AudioFormat("pcm16", 16000, 1)
    opened = [await open_stream(client, fmt) for _ in range(streams)]
    assert client.audio_write_interval_s() == pytest.approx(0.0 if streams == 1 else 0.08)
    await asyncio.gather(*(_paced_second(s) for s in opened))
    for stream in opened:
        await stream.aclose()
    assert client.audio_write_interval_s() == 0.0  # no stream left: no merging
    await client.aclose()
    records = list(simulator.records)[-streams:]
    assert all(r.audio_bytes == 50 * 640 for r in records)  # merged, never dropped
    assert all(least_messages <= r.audio_messages <= most_messages for r in records), [
        r.audio_messages for r in records
    ]


def test_write_interval_bounds(simulator: DataflowSimulator) -> None:
    tokens = StaticTokenProvider(SecretStr(SIM_TOKEN))
    capped = UpstreamClient(
        settings_for(
            simulator, upstream_write_rate=10, upstream_write_interval_ms=0, upstream_max_write_interval_ms=50
        ),
        tokens,
    )
    capped.active_streams = 100
    assert capped.audio_write_interval_s() == pytest.approx(0.05)
    stepped = UpstreamClient(settings_for(simulator, upstream_write_rate=1000, upstream_write_interval_ms=0), tokens)
    for streams, interval in ((19, 0.0), (39, 0.0), (40, 0.04), (59, 0.04), (60, 0.06), (5000, 0.1)):
        stepped.active_streams = streams
        assert stepped.audio_write_interval_s() == pytest.approx(interval), streams  # whole 20 ms frames
    floor = UpstreamClient(settings_for(simulator, upstream_write_rate=0, upstream_write_interval_ms=30), tokens)
    floor.active_streams = 1000
    assert floor.audio_write_interval_s() == pytest.approx(0.03)  # 0 turns load-merging off; the floor stays
    default = UpstreamClient(settings_for(simulator), tokens)
    default.active_streams = 1
    assert default.audio_write_interval_s() == pytest.approx(0.06)  # one stream merges three 20 ms frames


async def test_by_default_a_lone_paced_stream_sends_three_frames_a_message(simulator: DataflowSimulator) -> None:
    """The low-load default (issue 18): a gRPC message costs the same whatever it holds, so 60 ms go as one."""
    client = UpstreamClient(settings_for(simulator), StaticTokenProvider(SecretStr(SIM_TOKEN)))
    stream = await open_stream(client, AudioFormat("pcm16", 16000, 1))
    await _paced_second(stream)
    await stream.aclose()
    await client.aclose()
    record = simulator.records[-1]
    assert record.audio_bytes == 50 * 640
    assert 15 <= record.audio_messages <= 20, record.audio_messages  # 50 frames in threes (and the tail)


async def _sent_within(stream: DataflowStream, count: int, seconds: float) -> bool:
    """Whether ``count`` bytes of audio have been written upstream within ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while stream.audio_bytes_sent < count:
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def test_held_audio_goes_as_soon_as_the_message_is_full(simulator: DataflowSimulator) -> None:
    # A 500 ms hold, messages of at most 200 ms (6400 bytes): half a message waits, a full one goes.
    settings = settings_for(simulator, upstream_write_rate=0, upstream_write_interval_ms=500)
    client = UpstreamClient(settings, StaticTokenProvider(SecretStr(SIM_TOKEN)))
    stream = await open_stream(client, AudioFormat("pcm16", 16000, 1))
    for _ in range(5):
        await stream.send_audio(bytes(640))
    assert not await _sent_within(stream, 1, 0.1)  # held: 100 ms of audio, well inside the hold
    began = asyncio.get_running_loop().time()
    for _ in range(5):
        await stream.send_audio(bytes(640))
    assert await _sent_within(stream, 6400, 0.45)  # full: written without waiting out the hold
    assert asyncio.get_running_loop().time() - began < 0.45
    await stream.send_audio(bytes(640 * 3))
    await stream.finalize()  # a control message ends the hold: the tail goes with it, in order
    assert await _sent_within(stream, 6400 + 1920, 0.4)
    [_ async for _ in stream.items()]
    await stream.aclose()
    await client.aclose()
    record = simulator.records[-1]
    assert (record.audio_bytes, record.audio_messages) == (6400 + 1920, 2)
    assert record.requests[-1] == "finalize"
