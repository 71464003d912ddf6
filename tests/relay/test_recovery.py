"""gateway.relay.recovery over the in-memory fake upstream: a failed stream is replaced by one with the
same Start, the audio after the last final result is replayed, times move onto the session's
timeline, results the client had are not repeated, and causes a retry cannot cure are not retried."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import MILESTONE, DataflowEvent, StartRequest
from gateway.errors import UpstreamAuthFailed, UpstreamError, UpstreamUnavailable
from gateway.relay.recovery import RecoveringStream, RecoveryPolicy
from gateway.relay.replay import ReplayBuffer
from gateway.relay.stream import Recovered
from tests.support.fake_upstream import FakeOpener, event

PCM16_16K = AudioFormat("pcm16", 16000, 1)  # 32 bytes per ms
POLICY = RecoveryPolicy(replay_ms=10_000, attempts=3, window_s=5.0)


def said(text: str, start_ms: int, end_ms: int, channel: int = 0) -> DataflowEvent:
    return dataclasses.replace(event(MILESTONE, channel, Text=text), start_ms=start_ms, end_ms=end_ms)


def audio(ms: int, fill: int = 0) -> bytes:
    return bytes([fill]) * PCM16_16K.ms_to_bytes(ms)


async def collect(items: AsyncIterator[object], count: int) -> list[object]:
    out: list[object] = []
    async with asyncio.timeout(3):
        async for item in items:
            out.append(item)
            if len(out) == count:
                break
    return out


async def started(policy: RecoveryPolicy = POLICY) -> tuple[RecoveringStream, FakeOpener]:
    opener = FakeOpener()
    stream = RecoveringStream(opener, PCM16_16K, 60.0, policy)
    await stream.start(StartRequest(project="demo", audio=PCM16_16K))
    return stream, opener


async def test_replays_from_the_last_final_result_and_keeps_the_session_timeline() -> None:
    stream, opener = await started()
    await stream.update({"Language": "tr-TR"})
    first = opener.last
    await stream.send_audio(audio(1000, 1))
    await stream.send_audio(audio(1000, 2))  # 2 s sent; "12" was recognised up to 1.2 s
    first.push(said("12", 300, 1200))
    items = stream.items()
    assert await collect(items, 1) == [said("12", 300, 1200)]
    first.end(UpstreamUnavailable("connection reset"))
    notice = (await collect(items, 1))[0]
    assert isinstance(notice, Recovered)
    assert (notice.reason, notice.attempts, notice.lost_ms, notice.replayed_ms) == ("failure", 1, 0.0, 800.0)
    second = opener.last
    assert second is not first and first.cancelled
    assert second.updates == [{"Language": "tr-TR"}]  # the settings so far, again
    assert second.audio_received == audio(1000, 2)[PCM16_16K.ms_to_bytes(200) :]  # from 1.2 s on, no more
    second.push(said("12", 0, 0), said("34", 100, 700))  # the new stream's time 0 is the session's 1.2 s
    assert await collect(items, 1) == [said("34", 1300, 1900)]  # "12" again (end 1.2 s) is not repeated
    assert stream.audio_bytes_sent == PCM16_16K.ms_to_bytes(2000)


async def test_audio_sent_during_a_recovery_follows_the_replay() -> None:
    stream, opener = await started()
    await stream.send_audio(audio(500, 1))
    opener.hold_start = True  # the next Start waits: the recovery is under way meanwhile
    opener.last.end(UpstreamUnavailable("reset"))
    items = stream.items()
    reading = asyncio.create_task(collect(items, 1))
    await asyncio.sleep(0.05)
    sending = asyncio.create_task(stream.send_audio(audio(200, 2)))
    await asyncio.sleep(0.05)
    assert stream.backpressured and not sending.done()  # the client is paused, nothing is lost
    opener.last.release_start()
    await sending
    assert isinstance((await reading)[0], Recovered)
    assert opener.last.audio_received == audio(500, 1) + audio(200, 2)


@pytest.mark.parametrize("cause", [UpstreamAuthFailed("refused"), UpstreamError("protocol")])
async def test_causes_a_retry_cannot_cure_are_raised_as_they_are(cause: UpstreamError) -> None:
    stream, opener = await started()
    opener.last.end(cause)
    with pytest.raises(type(cause)):
        await collect(stream.items(), 1)
    assert len(opener.streams) == 1


async def test_a_stream_that_keeps_failing_ends_with_the_cause_after_the_budget() -> None:
    stream, opener = await started(RecoveryPolicy(replay_ms=1000, attempts=3, window_s=5.0))
    opener.start_error = UpstreamUnavailable("Data Flow is down")
    opener.last.end(UpstreamUnavailable("reset"))
    with pytest.raises(UpstreamUnavailable, match="reset"):
        await collect(stream.items(), 1)
    assert len(opener.streams) == 4  # the first and three attempts (at once, 0.25 s, 0.5 s)


def test_the_replay_buffer_keeps_the_last_bytes_and_reads_from_any_offset() -> None:
    buffer = ReplayBuffer(max_bytes=10)
    for chunk in (b"aaaa", b"bbbb", b"cccc", b"dddd"):
        buffer.append(chunk)
    assert (buffer.start, buffer.end) == (4, 16)  # at least the last 10 bytes, in whole chunks
    assert buffer.read(0, 100) == b"bbbb"  # older than kept: from the oldest byte kept
    assert buffer.read(6, 100) == b"bb"
    assert buffer.read(13, 2) == b"dd"
    assert buffer.read(16, 100) == b""
