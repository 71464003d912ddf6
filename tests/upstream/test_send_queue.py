"""gateway.upstream.send_queue: the order of what one stream sends, audio merged into whole-sample
messages, backpressure at the configured buffers, and how long audio is held under load."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import to_json
from gateway.settings import Settings
from gateway.upstream.contract import ContentType
from gateway.upstream.send_queue import HoldPolicy, Outgoing, SendQueue
from tests.support.settings import offline_settings

PCM16_16K = AudioFormat("pcm16", 16000, 1)  # 32 bytes per ms
STEREO_8K = AudioFormat("pcm16", 8000, 2)  # 4-byte frames


def make_settings(**overrides: Any) -> Settings:
    return offline_settings(**{**dict(upstream_coalesce_ms=200, upstream_buffer_ms=1000), **overrides})


def ms(n: float, fmt: AudioFormat = PCM16_16K, fill: int = 0) -> bytes:
    return bytes([fill]) * fmt.ms_to_bytes(n)


def make_queue(hold_s: float = 0.0, fmt: AudioFormat = PCM16_16K, **overrides: Any) -> SendQueue:
    return SendQueue(fmt, make_settings(**overrides), lambda: hold_s)


async def take(queue: SendQueue, count: int) -> list[Outgoing]:
    async with asyncio.timeout(1):
        return [await queue.next() for _ in range(count)]


# --- order and merging --------------------------------------------------------------------------------


async def test_control_messages_keep_their_place_between_audio() -> None:
    queue = make_queue()
    queue.put_audio(ms(20, fill=1))
    queue.put_text(ContentType.REQUEST, '{"MessageName": "Update"}')
    queue.put_audio(ms(20, fill=2))
    queue.put_text(ContentType.EVENT, '{"Event": {}}')
    queue.put_text(ContentType.REQUEST, '{"MessageName": "Finalize"}')
    assert await take(queue, 5) == [
        (ContentType.AUDIO, ms(20, fill=1)),
        (ContentType.REQUEST, '{"MessageName": "Update"}'),
        (ContentType.AUDIO, ms(20, fill=2)),  # not merged across the Update
        (ContentType.EVENT, '{"Event": {}}'),
        (ContentType.REQUEST, '{"MessageName": "Finalize"}'),
    ]


async def test_audio_queued_meanwhile_is_merged_into_one_message() -> None:
    queue = make_queue()
    for fill in (1, 2, 3):
        queue.put_audio(ms(20, fill=fill))
    assert await take(queue, 1) == [(ContentType.AUDIO, ms(20, fill=1) + ms(20, fill=2) + ms(20, fill=3))]
    assert queue.pending_audio == len(ms(60))  # until the writer says it is written


async def test_a_message_never_exceeds_the_coalesce_size() -> None:
    queue = make_queue(upstream_coalesce_ms=100)
    for _ in range(5):
        queue.put_audio(ms(40))  # 200 ms in all: 80 + 80 + 40 (a 40 ms chunk does not fit into 80)
    messages = await take(queue, 3)
    assert [len(payload) for _, payload in messages] == [len(ms(80)), len(ms(80)), len(ms(40))]


async def test_a_long_chunk_is_split_into_whole_sample_messages() -> None:
    queue = make_queue(fmt=STEREO_8K, upstream_coalesce_ms=30)  # 30 ms = 240 frames = 960 bytes
    audio = bytes(range(256)) * 15  # 3840 bytes, 960 frames
    queue.put_audio(audio)
    messages = await take(queue, 4)
    payloads = [payload for _, payload in messages]
    assert all(isinstance(p, bytes) and len(p) == 960 for p in payloads)
    assert b"".join(p for p in payloads if isinstance(p, bytes)) == audio


def test_audio_must_be_whole_frames() -> None:
    queue = make_queue(fmt=STEREO_8K)
    with pytest.raises(ValueError, match="whole sample frames"):
        queue.put_audio(b"\x00\x01\x02")
    assert queue.pending_audio == 0


# --- backpressure -------------------------------------------------------------------------------------


def test_audio_backpressure_at_the_configured_buffer() -> None:
    queue = make_queue(upstream_buffer_ms=100, upstream_coalesce_ms=20)
    assert queue.buffer_limit == len(ms(100))
    queue.put_audio(ms(99))
    assert queue.has_space.is_set()
    queue.put_audio(ms(1))
    assert not queue.has_space.is_set()
    assert queue.pending_audio == len(ms(100))
    queue.written(len(ms(1)))
    assert queue.has_space.is_set()
    assert queue.pending_audio == len(ms(99))


def test_the_buffer_holds_at_least_one_message() -> None:
    queue = make_queue(upstream_buffer_ms=100, upstream_coalesce_ms=500)
    assert queue.buffer_limit == len(ms(500))


def test_control_backpressure_at_its_own_budget() -> None:
    limit = 64 * 1024
    queue = make_queue(upstream_control_buffer_bytes=limit)
    queue.put_text(ContentType.EVENT, "x" * (limit - 1))
    assert queue.has_space.is_set()
    queue.put_text(ContentType.EVENT, "y")
    assert not queue.has_space.is_set()
    queue.written(0, 1)
    assert queue.has_space.is_set()
    assert queue.pending_control == limit - 1


def test_space_needs_both_budgets() -> None:
    limit = 64 * 1024
    queue = make_queue(upstream_buffer_ms=100, upstream_control_buffer_bytes=limit)
    queue.put_audio(ms(100))
    queue.put_text(ContentType.EVENT, "x" * limit)
    queue.written(len(ms(100)))  # audio drained, control still over its budget
    assert not queue.has_space.is_set()
    queue.written(0, limit)
    assert queue.has_space.is_set()


# --- holding audio to merge it ------------------------------------------------------------------------


async def test_held_audio_goes_at_the_hold_deadline() -> None:
    queue = make_queue(hold_s=0.05)
    began = time.monotonic()
    queue.put_audio(ms(20))
    assert await take(queue, 1) == [(ContentType.AUDIO, ms(20))]
    assert time.monotonic() - began >= 0.04


async def test_a_hold_ends_as_soon_as_the_message_is_full() -> None:
    queue = make_queue(hold_s=5.0, upstream_coalesce_ms=100)
    writer = asyncio.create_task(queue.next())
    queue.put_audio(ms(20))
    await asyncio.sleep(0.02)
    assert not writer.done()  # held to merge more
    queue.put_audio(ms(80))
    async with asyncio.timeout(1):
        assert await writer == (ContentType.AUDIO, ms(100))


async def test_a_control_message_ends_the_hold() -> None:
    queue = make_queue(hold_s=5.0)
    writer = asyncio.create_task(queue.next())
    queue.put_audio(ms(20))
    await asyncio.sleep(0.02)
    assert not writer.done()
    queue.put_text(ContentType.REQUEST, '{"MessageName": "Finalize"}')
    async with asyncio.timeout(1):
        assert await writer == (ContentType.AUDIO, ms(20))
    assert await take(queue, 1) == [(ContentType.REQUEST, '{"MessageName": "Finalize"}')]


async def test_a_hold_only_waits_for_what_it_needs() -> None:
    queue = make_queue(hold_s=0.04)  # 40 ms of audio ends the hold
    writer = asyncio.create_task(queue.next())
    queue.put_audio(ms(20))
    await asyncio.sleep(0.005)
    queue.put_audio(ms(20))
    async with asyncio.timeout(1):
        kind, payload = await writer
    assert (kind, payload) == (ContentType.AUDIO, ms(40))


async def test_without_a_hold_each_chunk_goes_at_once() -> None:
    policy = HoldPolicy(make_settings(upstream_write_rate=2000, upstream_write_interval_ms=0))
    queue = SendQueue(PCM16_16K, make_settings(), lambda: policy.hold_s(10))
    writer = asyncio.create_task(queue.next())
    queue.put_audio(ms(20, fill=1))
    async with asyncio.timeout(1):
        assert await writer == (ContentType.AUDIO, ms(20, fill=1))
    queue.put_audio(ms(20, fill=2))
    assert await take(queue, 1) == [(ContentType.AUDIO, ms(20, fill=2))]


# --- the hold policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("streams", "hold_s"),
    [
        (0, 0.0),
        (1, 0.0),
        (40, 0.0),  # one 20 ms step would delay frames while merging few: no hold
        (79, 0.0),
        (80, 0.04),  # 80 streams x 50 frames/s = 4000 writes/s, twice the rate: merge two frames
        (119, 0.04),
        (120, 0.06),
        (160, 0.08),
        (200, 0.1),
        (10_000, 0.1),  # never past upstream_max_write_interval_ms
    ],
)
def test_the_hold_grows_in_20ms_steps_with_the_streams(streams: int, hold_s: float) -> None:
    policy = HoldPolicy(
        make_settings(upstream_write_rate=2000, upstream_write_interval_ms=0, upstream_max_write_interval_ms=100)
    )
    assert policy.hold_s(streams) == pytest.approx(hold_s)


def test_a_write_interval_is_the_least_hold() -> None:
    policy = HoldPolicy(
        make_settings(upstream_write_rate=2000, upstream_write_interval_ms=30, upstream_max_write_interval_ms=100)
    )
    assert policy.hold_s(1) == pytest.approx(0.03)
    assert policy.hold_s(80) == pytest.approx(0.04)
    assert policy.hold_s(10_000) == pytest.approx(0.1)


def test_the_least_hold_wins_over_a_smaller_most() -> None:
    policy = HoldPolicy(make_settings(upstream_write_interval_ms=150, upstream_max_write_interval_ms=100))
    assert policy.hold_s(10_000) == pytest.approx(0.15)


def test_a_write_rate_of_zero_never_holds_for_load() -> None:
    policy = HoldPolicy(make_settings(upstream_write_rate=0, upstream_write_interval_ms=10))
    assert policy.hold_s(1_000_000) == pytest.approx(0.01)
    assert HoldPolicy(make_settings(upstream_write_rate=0, upstream_write_interval_ms=0)).hold_s(1_000_000) == 0.0


def test_by_default_even_one_stream_merges_three_frames() -> None:
    """A gRPC message costs the same whatever its size: at low load too, 60 ms go as one (issue 18)."""
    policy = HoldPolicy(make_settings())
    assert policy.hold_s(1) == pytest.approx(0.06)
    assert policy.hold_s(120) == pytest.approx(0.06)
    assert policy.hold_s(200) == pytest.approx(0.1)


def test_a_higher_write_rate_holds_later() -> None:
    policy = HoldPolicy(
        make_settings(upstream_write_rate=10_000, upstream_write_interval_ms=0, upstream_max_write_interval_ms=1000)
    )
    assert policy.hold_s(399) == 0.0
    assert policy.hold_s(400) == pytest.approx(0.04)
    assert policy.hold_s(1000) == pytest.approx(0.1)


async def test_control_messages_are_held_within_the_control_buffer_in_utf8_bytes() -> None:
    """Data Flow's JSON holds non-ASCII text as UTF-8 (4 bytes an emoji), and the buffer counted characters:
    4.2x ``GATEWAY_UPSTREAM_CONTROL_BUFFER_BYTES`` was queued before the client was paused."""
    limit = 256 * 1024
    queue = make_queue(upstream_control_buffer_bytes=limit)
    text = to_json({"Event": {"Name": "n", "Note": "😀" * 16_000}}, limit=64 * 1024)
    queued: list[str] = []
    while queue.has_space.is_set():
        queue.put_text(ContentType.EVENT, text)
        queued.append(text)
    held = sum(len(t.encode()) for t in queued)
    assert limit <= held < limit + len(text.encode()), held  # paused at the limit, not at 4x it
    for sent in await take(queue, len(queued)):
        assert isinstance(sent[1], str)
        queue.written_text(sent[1])
    assert queue.pending_control == 0 and queue.has_space.is_set()
