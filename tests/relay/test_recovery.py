"""gateway.relay.recovery over the in-memory fake upstream: a failed stream is replaced by one with the
same Start, the audio after the last final result is replayed, times move onto the session's
timeline, results the client had are not repeated, and causes a retry cannot cure are not retried."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator

import pytest

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import MILESTONE, DataflowEvent, StartRequest, build_request
from gateway.errors import (
    MessageTooBig,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.relay import failures
from gateway.relay.failures import StreamFailures
from gateway.relay.recovery import RecoveringStream
from gateway.relay.recovery_policy import RecoveryPolicy
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


# --- the input ended, a teardown and updates during a recovery; rotations that fail ----------------


async def second_start(opener: FakeOpener) -> None:
    async with asyncio.timeout(2):
        while len(opener.streams) < 2 or not opener.last.start_called.is_set():
            await asyncio.sleep(0.001)


async def recovering(stream: RecoveringStream, opener: FakeOpener) -> asyncio.Task[list[object]]:
    """Fail the current stream with a retryable cause while the next Start is held: a recovery is
    under way (and waits for ``opener.last.release_start()``) when this returns."""
    opener.hold_start = True
    opener.last.end(UpstreamUnavailable("reset"))
    reading = asyncio.create_task(collect(stream.items(), 1))
    await second_start(opener)
    return reading


@pytest.mark.parametrize("ending", ["finalize", "stop"])
async def test_the_input_ended_during_a_recovery_is_ended_once_on_the_new_stream(ending: str) -> None:
    stream, opener = await started()
    await stream.send_audio(audio(500, 1))
    reading = await recovering(stream, opener)
    ended = asyncio.create_task(stream.finalize() if ending == "finalize" else stream.stop())
    await asyncio.sleep(0.02)
    opener.last.release_start()
    await ended  # the recovery ended the new stream's input: no second Finalize (session_finalizing)
    assert isinstance((await reading)[0], Recovered)
    second = opener.last
    assert (second.finalized, second.stopped) == (ending == "finalize", ending == "stop")
    assert second.audio_received == audio(500, 1)


async def test_a_teardown_during_a_recovery_ends_waiting_audio_with_a_typed_error() -> None:
    stream, opener = await started()
    reading = await recovering(stream, opener)
    sending = asyncio.create_task(stream.send_audio(audio(100)))
    await asyncio.sleep(0.02)
    stream.cancel()  # a drain or an abort, from another task
    with pytest.raises(UpstreamUnavailable):
        await sending
    reading.cancel()
    assert len(opener.streams) == 2


ROTATING = RecoveryPolicy(replay_ms=10_000, attempts=3, window_s=5.0, max_stream_s=0.05)


@pytest.mark.parametrize("refusal", [UpstreamRejected("refused"), UpstreamTimeout("slow"), UpstreamUnavailable("gone")])
async def test_a_rotation_that_fails_lets_the_old_stream_go_on_and_waits_before_the_next(
    refusal: UpstreamError,
) -> None:
    stream, opener = await started(ROTATING)
    first = opener.last
    await stream.send_audio(audio(200, 1))
    await asyncio.sleep(0.06)  # the stream is due for a rotation at its next final result
    opener.start_error = refusal
    opener.hold_start = True
    first.push(said("12", 0, 150))
    items = stream.items()
    assert await collect(items, 1) == [said("12", 0, 150)]
    reading = asyncio.create_task(collect(items, 1))
    await second_start(opener)
    sending = asyncio.create_task(stream.send_audio(audio(100, 2)))  # held while the rotation is tried
    await asyncio.sleep(0.02)
    opener.last.release_start()
    await sending
    assert first.audio_received == audio(200, 1) + audio(100, 2) and not first.cancelled
    first.push(said("34", 200, 280))  # right away: a new try only after a back-off
    assert await reading == [said("34", 200, 280)]
    assert len(opener.streams) == 2 and opener.streams[1].cancelled


async def test_updates_are_kept_for_a_recovery_only_when_accepted_and_within_the_limit() -> None:
    stream, opener = await started(dataclasses.replace(POLICY, max_settings_bytes=2048))
    for i in range(20):  # each alone over the limit: refused, and nothing of them kept
        with pytest.raises(MessageTooBig):
            await stream.update({f"Hint{i}": "v" * 3000})
    await stream.update({"A": "a" * 800})
    await stream.update({"B": "b" * 800})
    with pytest.raises(MessageTooBig):  # fits alone, but not with the rest: a recovery could not re-send it
        await stream.update({"C": "c" * 800})
    await stream.update({"A": "x"})  # a key again replaces its value: room for C now
    await stream.update({"C": "c" * 800})
    assert opener.last.updates == [{"A": "a" * 800}, {"B": "b" * 800}, {"A": "x"}, {"C": "c" * 800}]
    opener.last.end(UpstreamUnavailable("reset"))
    assert isinstance((await collect(stream.items(), 1))[0], Recovered)
    resent = opener.last.updates
    assert resent == [{"A": "x", "B": "b" * 800, "C": "c" * 800}]
    assert len(json.dumps(build_request("Update", Settings=resent[0]))) <= 2048


def counted(stream: RecoveringStream) -> list[UpstreamError]:
    """What the stream reports to the process's counter (``upstream_stream_failures_total``)."""
    seen: list[UpstreamError] = []
    stream.failures = StreamFailures(seen.append)
    return seen


async def test_one_failure_noticed_by_both_sides_is_counted_once() -> None:
    stream, opener = await started()
    seen = counted(stream)
    await stream.send_audio(audio(100))
    reading = await recovering(stream, opener)  # the reading side noticed it
    sending = asyncio.create_task(stream.send_audio(audio(100)))  # and the sending side
    await asyncio.sleep(0.02)
    opener.last.release_start()
    await sending
    assert isinstance((await reading)[0], Recovered)
    assert [type(e) for e in seen] == [UpstreamUnavailable]


async def test_a_new_stream_refused_ends_the_recovery_and_its_line_says_so(caplog: pytest.LogCaptureFixture) -> None:
    stream, opener = await started()
    seen = counted(stream)
    failures.close()  # a window another test opened: these lines are logged at once
    caplog.clear()
    opener.start_error = UpstreamRejected("refused")
    opener.last.end(UpstreamUnavailable("reset"))
    with pytest.raises(UpstreamRejected):
        await collect(stream.items(), 1)
    assert [type(e) for e in seen] == [UpstreamUnavailable, UpstreamRejected]
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.relay.failures"]
    assert lines[0].endswith("(upstream_unavailable, gRPC status none); the session is being recovered"), lines
    failures.close()  # the refusal was counted in the window: told now
    told = [r.getMessage() for r in caplog.records if r.name == "gateway.relay.failures"][1:]
    assert told == ["1 more upstream stream failures in the last 0.0 s (upstream_rejected (none): 1)"], told
