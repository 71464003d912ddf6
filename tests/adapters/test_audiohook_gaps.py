"""AudioHook's timeline of gaps (paused, discarded) stays bounded whatever the client sends: gaps less
than ``MERGE_SAMPLES`` of heard audio after an entry join it, and past ``MAX_GAPS`` entries the session ends with
``disconnect`` (``error``, ``limit_reached``) - over real sockets, and as pure code."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.adapters import audiohook
from gateway.adapters.audiohook_media import MAX_GAPS, MERGE_SAMPLES, Timeline, parse_duration
from gateway.errors import LimitReached
from tests.support import signals
from tests.support.audiohook_client import STEREO_PCMU, finals, opened_client
from tests.support.harness import RunningGateway

RATE = 8000
MONO = [{**STEREO_PCMU, "channels": ["external"]}]
SILENCE = b"\xff"  # one PCMU sample of silence


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    """10 000 gaps of 10 ms are 100 s of audio: sent at once, not paced to real time."""
    return {"audio_rate_burst_ms": 300_000}


@pytest.fixture
def timelines(monkeypatch: pytest.MonkeyPatch) -> list[Timeline]:
    """Every Timeline the gateway's AudioHook dialects make during the test (to count their entries)."""
    made: list[Timeline] = []

    class Recorded(Timeline):
        def __init__(self, rate: int = RATE) -> None:
            super().__init__(rate)
            made.append(self)

    monkeypatch.setattr(audiohook, "Timeline", Recorded)
    return made


@pytest.mark.ws
async def test_tiny_audio_between_discards_shares_entries(gw: RunningGateway, timelines: list[Timeline]) -> None:
    pairs = MAX_GAPS + 500  # past the cap, were each pair an entry
    ws, client = await opened_client(gw, MONO)
    try:
        await client.recv()
        first = signals.g711_encode(signals.utterances(["7"], RATE, tail_ms=600), "mulaw")
        await client.audio(first, channels=1)
        for _ in range(pairs):
            await client.audio(SILENCE, channels=1)
            await client.send("discarded", {"start": f"PT{client.samples / RATE:g}S", "discarded": "PT0.001S"})
            client.samples += 8
        await client.send("ping")
        ping_seq = client.seq
        pong = (await client.until("pong"))[-1]
        (timeline,) = timelines
        assert timeline.gaps == 1 + (pairs - 1) // MERGE_SAMPLES  # one entry per 10 ms heard, not per notice
        await client.audio(SILENCE * 1600, channels=1)  # "8" starts clear of the slivers' 10-ms entries
        await client.audio(signals.g711_encode(signals.utterances(["8"], RATE), "mulaw"), channels=1)
        await client.send("close", {"reason": "end"})
        await client.until("closed")
    finally:
        await ws.close()
    assert pong["clientseq"] == ping_seq  # the session lived through every pair
    assert finals(client.received) == {0: ["7", "8"]}
    second = [e["data"] for m in client.received if m["type"] == "event" for e in m["parameters"]["entities"]][-1]
    # "8" comes after every heard sample and every discarded millisecond: the call's timeline.
    expected = (len(first) + pairs * (1 + 8) + 1600) / RATE
    assert parse_duration(second["offset"]) == pytest.approx(expected, abs=0.02)


@pytest.mark.ws
async def test_one_gap_past_the_cap_ends_the_session(gw: RunningGateway, timelines: list[Timeline]) -> None:
    ws, client = await opened_client(gw, MONO)
    frame = SILENCE * MERGE_SAMPLES  # just enough heard audio for each gap to need its own entry

    async def gap() -> None:
        await client.audio(frame, frame_bytes=len(frame), channels=1)
        await client.send("discarded", {"start": f"PT{client.samples / RATE:g}S", "discarded": "PT0.01S"})
        client.samples += 80

    try:
        await client.recv()
        for _ in range(MAX_GAPS):
            await gap()
        await client.send("ping")
        before = await client.until("pong")
        (timeline,) = timelines
        assert timeline.gaps == MAX_GAPS
        await gap()
        after = await client.until("disconnect")
        last_seq = client.seq
        await client.send("close", {"reason": "disconnect"})  # the client ends the session: closed, then it closes
        closed = await client.recv()
    finally:
        await ws.close()
    assert (closed["type"], closed["clientseq"]) == ("closed", last_seq + 1)
    assert [m["type"] for m in before] == ["pong"]  # nothing ended the session at the cap itself
    disconnect = after[-1]
    assert disconnect["clientseq"] == last_seq and disconnect["parameters"] == {
        "reason": "error",
        "info": f"limit_reached: more than {MAX_GAPS} paused or discarded spans in one session",
    }
    assert timeline.gaps == MAX_GAPS


# --- the pure pieces ---------------------------------------------------------------------------------


def test_gaps_within_a_sliver_of_heard_audio_share_an_entry() -> None:
    timeline = Timeline()
    timeline.heard(8000)
    for _ in range(1000):
        timeline.skipped(8)
        timeline.heard(1)
    assert timeline.gaps == 1 + 999 // MERGE_SAMPLES  # an entry per 10 ms heard, not per gap
    timeline.paused()  # 40 samples after the last entry: joins it
    timeline.skipped(8000)  # audio while paused
    assert timeline.gaps == 1 + 999 // MERGE_SAMPLES
    timeline.heard(8000)
    assert timeline.stream_seconds(500) == 0.5  # before any gap: untouched
    # After the last gap a time maps exactly: 9000 heard + 1000 x 8 discarded + 8000 paused, then 2000 in.
    assert timeline.stream_seconds((9000 + 2000) / 8) == (11000 + 8000 + 8000) / 8000


def test_a_gap_past_the_cap_is_refused_and_changes_nothing() -> None:
    timeline = Timeline()
    for _ in range(MAX_GAPS):
        timeline.heard(MERGE_SAMPLES)
        timeline.skipped(1)
    timeline.skipped(3)  # no audio since the last gap: joins it, cap or not
    timeline.heard(MERGE_SAMPLES)
    received = timeline.received
    with pytest.raises(LimitReached, match=f"more than {MAX_GAPS}"):
        timeline.skipped(5)
    with pytest.raises(LimitReached):
        timeline.paused()
    assert (timeline.gaps, timeline.received) == (MAX_GAPS, received)


_STEPS = st.lists(st.tuples(st.integers(MERGE_SAMPLES, 40_000), st.integers(1, 40_000)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(_STEPS, st.data())
def test_mapping_matches_a_brute_force_walk(steps: list[tuple[int, int]], data: Any) -> None:
    """Gaps apart by at least MERGE_SAMPLES keep their own entries; any heard time maps exactly."""
    timeline = Timeline()
    walk: list[tuple[int, int]] = []  # (heard samples, stream samples) at each step's heard audio
    for heard, skipped in steps:
        walk.append((timeline.forwarded, timeline.received))
        timeline.heard(heard)
        timeline.skipped(skipped)
    if not walk:
        return
    start, stream = walk[data.draw(st.integers(0, len(walk) - 1))]
    assert timeline.gaps == len(steps)
    assert timeline.stream_seconds(start / 8) == pytest.approx(stream / RATE)
