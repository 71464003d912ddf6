"""gateway.relay.session.Session driven through an in-memory upstream: every state, every way a
session ends (reason, close code, error), the limits, the state errors, the converter and the flow
reports. No sockets, no gRPC; each test takes well under a second."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import DataflowEvent, StartRequest, UpstreamAudio
from gateway.errors import (
    ClientTooSlow,
    ErrorCode,
    GatewayError,
    GoingAway,
    InvalidMessage,
    InvalidState,
    LimitError,
    MessageTooBig,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.observability import GatewayMetrics
from gateway.relay.items import Closed, Flow, Notice, OutItem, SessionState, Started
from gateway.relay.limits import SessionLimits
from gateway.relay.session import Session
from gateway.settings import Settings
from tests.support.fake_upstream import FakeOpener, FakeStream, final_result, milestone, response
from tests.support.settings import offline_settings

PCM16_16K = AudioFormat("pcm16", 16000, 1)
PCM16_8K = AudioFormat("pcm16", 8000, 1)
MULAW_8K = AudioFormat("mulaw", 8000, 1)
ALAW_8K = AudioFormat("alaw", 8000, 1)


def ms(n: int, fmt: AudioFormat = PCM16_16K) -> bytes:
    """``n`` ms of silence in ``fmt``."""
    return bytes(fmt.ms_to_bytes(n))


def kept(closed: Closed, error: GatewayError) -> bool:
    """The session ends with ``error`` as it keeps it: a copy without the traceback of its raising, whose
    frames would hold the session in a cycle (GatewayError.detached)."""
    kept = closed.error
    same = kept is not None and type(kept) is type(error) and kept.to_json() == error.to_json()
    return same and kept is not None and kept.__traceback__ is None


def make_settings(**overrides: Any) -> Settings:
    return offline_settings(
        # The session core without recovery (which tests/relay/test_recovery.py covers over the same fake).
        **{
            **dict(ack_interval_ms=50, finalize_timeout_s=1.0, client_event_queue=1000, upstream_replay_ms=0),
            **overrides,
        }
    )


class Rig:
    """One session over a fake upstream, with its metrics."""

    def __init__(self, settings: Settings, limits: SessionLimits | None) -> None:
        self.opener = FakeOpener()
        self.metrics = GatewayMetrics()
        self.settings = settings
        self.session = Session(self.opener, settings, limits, metrics=self.metrics, dialect="native")

    @property
    def stream(self) -> FakeStream:
        return self.opener.last

    async def start(self, client_format: AudioFormat = PCM16_16K, project: str = "demo") -> Started:
        return await self.session.start(StartRequest(project=project, audio=client_format), client_format)

    async def closed(self, timeout_s: float = 2.0) -> Closed:
        async with asyncio.timeout(timeout_s):
            return await self.session.wait_closed()

    async def outbound(self) -> list[OutItem]:
        """Everything the client would get (call once the session is closed)."""
        async with asyncio.timeout(2):
            return [item async for item in self.session.outbound()]

    def sample(self, metric: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(f"dataflow_gateway_{metric}", labels)

    def ended(self, outcome: str) -> float | None:
        return self.sample("sessions_ended_total", dialect="native", outcome=outcome)


RigFactory = Callable[..., Rig]


@pytest.fixture
async def make_rig() -> AsyncIterator[RigFactory]:
    rigs: list[Rig] = []

    def make(limits: SessionLimits | None = None, **overrides: Any) -> Rig:
        rig = Rig(make_settings(**overrides), limits)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.session.aclose()
        left = [t for t in asyncio.all_tasks() if t.get_name().startswith(f"session-{rig.session.id}") and not t.done()]
        assert left == [], "the session left tasks running"


def events_in(items: list[OutItem]) -> list[DataflowEvent]:
    return [item for item in items if isinstance(item, DataflowEvent)]


def without_flow(items: list[OutItem]) -> list[OutItem]:
    return [item for item in items if not isinstance(item, Flow)]


async def until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


# --- the states and the normal ends ------------------------------------------------------------------


async def test_a_finalized_session_goes_through_every_state(make_rig: RigFactory) -> None:
    rig = make_rig()
    session, opener = rig.session, rig.opener
    states = [session.state]
    opener.hold_start = True
    starting = asyncio.create_task(rig.start())
    await _started_called(opener)
    states.append(session.state)
    rig.stream.release_start()
    started = await starting
    states.append(session.state)
    assert (started.session_id, started.dataflow_session_id) == (session.id, "df-session-1")
    assert (started.client_format, started.upstream_format) == (PCM16_16K, PCM16_16K)
    assert started.response.name == "StartResponse"
    stream = rig.stream
    assert stream.start_request is not None and stream.start_request.project == "demo"
    assert session.project == "demo"

    await session.feed_audio(ms(100))
    assert stream.audio_received == ms(100)
    await session.finalize()
    states.append(session.state)
    assert (stream.finalized, stream.stopped) == (True, False)
    assert session.closed is None  # still waiting for Data Flow's results

    words, final = milestone("one two"), final_result()
    stream.push(words, final)
    stream.end()
    closed = await rig.closed()
    states.append(session.state)
    assert states == [
        SessionState.NEW,
        SessionState.STARTING,
        SessionState.STREAMING,
        SessionState.FINALIZING,
        SessionState.CLOSED,
    ]
    assert closed == Closed("finalized", 1000, 100.0, None)
    items = await rig.outbound()
    assert without_flow(items) == [started, words, final, closed]
    assert rig.sample("sessions_started_total", dialect="native") == 1
    assert rig.ended("finalized") == 1
    assert rig.sample("audio_bytes_total", dialect="native") == len(ms(100))
    assert rig.sample("events_relayed_total", name="SR Milestone") == 1
    assert stream.cancelled  # every end tears the upstream stream down
    await session.aclose()


async def _started_called(opener: FakeOpener) -> None:
    await until(lambda: bool(opener.streams))
    async with asyncio.timeout(2):
        await opener.last.start_called.wait()


async def test_the_stream_is_opened_with_a_deadline_past_the_longest_session(make_rig: RigFactory) -> None:
    rig = make_rig(SessionLimits(max_session_s=60.0), finalize_timeout_s=2.5)
    await rig.start()
    assert rig.stream.deadline_s == 60.0 + 2.5 + 30.0
    assert rig.stream.audio == PCM16_16K
    await rig.session.aclose()


async def test_stop_ends_input_without_flushing_and_closes_stopped(make_rig: RigFactory) -> None:
    rig = make_rig(upstream_encoding="ulaw", upstream_sample_rate_hz=8000)
    await rig.start()
    await rig.session.feed_audio(ms(200))
    sent = len(rig.stream.audio_received)
    await rig.session.stop()
    assert (rig.stream.stopped, rig.stream.finalized) == (True, False)
    assert len(rig.stream.audio_received) == sent  # stop discards the resampler's tail
    assert rig.session.state is SessionState.FINALIZING
    rig.stream.push(final_result())
    rig.stream.end()
    assert await rig.closed() == Closed("stopped", 1000, 200.0, None)
    assert rig.ended("stopped") == 1
    await rig.session.aclose()


async def test_a_final_result_without_the_stream_ending_closes_at_the_finalize_deadline(make_rig: RigFactory) -> None:
    rig = make_rig(finalize_timeout_s=0.2)
    await rig.start()
    await rig.session.finalize()
    began = time.monotonic()
    rig.stream.push(final_result())
    closed = await rig.closed()
    assert closed == Closed("finalized", 1000, 0.0, None)
    assert time.monotonic() - began >= 0.15
    await rig.session.aclose()


async def test_the_stream_ending_after_finalize_is_a_normal_end(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.start()
    await rig.session.finalize()
    rig.stream.end()
    assert await rig.closed() == Closed("finalized", 1000, 0.0, None)
    await rig.session.aclose()


async def test_the_stream_ending_after_a_final_result_while_streaming_is_completed(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.start()
    rig.stream.push(final_result())
    rig.stream.end()
    assert await rig.closed() == Closed("completed", 1000, 0.0, None)
    assert rig.ended("completed") == 1
    await rig.session.aclose()


# --- upstream failures --------------------------------------------------------------------------------


async def test_the_stream_ending_without_a_final_result_is_an_upstream_error(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.start()
    await rig.session.feed_audio(ms(40))
    rig.stream.end()
    closed = await rig.closed()
    assert (closed.reason, closed.code, closed.audio_ms) == ("upstream_error", 1011, 40.0)
    assert isinstance(closed.error, UpstreamUnavailable)
    assert closed.error.error_code is ErrorCode.UPSTREAM_UNAVAILABLE and closed.error.retryable
    assert rig.stream.cancelled
    assert rig.sample("upstream_errors_total", code="upstream_unavailable", grpc_status="") == 1
    assert rig.ended("upstream_error") == 1
    await rig.session.aclose()


async def test_an_upstream_error_mid_stream_closes_after_what_came_before(make_rig: RigFactory) -> None:
    rig = make_rig()
    started = await rig.start()
    words = milestone("hello")
    error = UpstreamTimeout("Data Flow stalled")
    rig.stream.push(words)
    rig.stream.end(error)
    closed = await rig.closed()
    assert (closed.reason, closed.code, closed.audio_ms) == ("upstream_error", 1011, 0.0) and kept(closed, error)
    assert without_flow(await rig.outbound()) == [started, words, closed]
    assert rig.stream.cancelled
    await rig.session.aclose()


SEND_ACTIONS: dict[str, Callable[[Session], Awaitable[None]]] = {
    "audio": lambda s: s.feed_audio(ms(20)),
    "update": lambda s: s.update({"Language": "tr-TR"}),
    "event": lambda s: s.send_event({"Name": "Custom"}),
    "finalize": lambda s: s.finalize(),
    "stop": lambda s: s.stop(),
}


@pytest.mark.parametrize("action", SEND_ACTIONS)
async def test_a_failing_send_ends_the_session_with_the_upstream_error(make_rig: RigFactory, action: str) -> None:
    rig = make_rig()
    await rig.start()
    error = UpstreamUnavailable("connection reset")
    rig.stream.send_error = error
    await SEND_ACTIONS[action](rig.session)  # the error is the session's end, not the caller's
    closed = await rig.closed()
    assert (closed.reason, closed.code) == ("upstream_error", 1011) and kept(closed, error)
    assert rig.session.state is SessionState.CLOSED
    assert rig.stream.cancelled
    await rig.session.aclose()


async def test_updates_events_and_upstream_items_are_relayed_in_order(make_rig: RigFactory) -> None:
    rig = make_rig()
    started = await rig.start()
    await rig.session.update({"Language": "tr-TR"})
    await rig.session.send_event({"Name": "TTS", "Data": {"Text": "hi"}})
    assert rig.stream.updates == [{"Language": "tr-TR"}]
    assert rig.stream.events == [{"Name": "TTS", "Data": {"Text": "hi"}}]
    answer, audio, words = response("UpdateResponse"), UpstreamAudio(b"\x01\x00\x02\x00"), milestone("x")
    rig.stream.push(answer, audio)
    await rig.stream.delivered()
    rig.session.reply({"type": "pong"})
    notice = InvalidState("just saying", code=ErrorCode.INVALID_STATE)
    rig.session.notify(notice)
    rig.stream.push(words, final_result())
    rig.stream.end()
    closed = await rig.closed()
    items = without_flow(await rig.outbound())
    assert items == [started, answer, audio, {"type": "pong"}, Notice(notice), words, final_result(), closed]
    assert closed.reason == "completed"
    await rig.session.aclose()


# --- start ------------------------------------------------------------------------------------------


async def test_a_failed_start_raises_and_closes_start_failed(make_rig: RigFactory) -> None:
    rig = make_rig()
    error = UpstreamRejected("Data Flow refused the start", dataflow_message="unknown project")
    rig.opener.start_error = error
    with pytest.raises(UpstreamRejected) as raised:
        await rig.start()
    assert raised.value is error
    assert rig.session.state is SessionState.CLOSED
    closed = await rig.closed()
    assert (closed.reason, closed.code, closed.audio_ms) == ("start_failed", 1011, 0.0) and kept(closed, error)
    assert rig.stream.cancelled
    assert await rig.outbound() == [closed]
    assert rig.sample("sessions_started_total", dialect="native") is None
    assert rig.ended("start_failed") == 1
    await rig.session.aclose()


async def test_a_client_gone_during_start_cancels_the_stream(make_rig: RigFactory) -> None:
    rig = make_rig()
    rig.opener.hold_start = True
    starting = asyncio.create_task(rig.start())
    await _started_called(rig.opener)
    rig.session.abort()
    assert rig.session.state is SessionState.CLOSED
    assert rig.stream.cancelled
    with pytest.raises(UpstreamUnavailable):  # the cancelled stream fails its start
        await starting
    assert await rig.closed() == Closed("client_disconnected", 1000, 0.0, None)
    assert await rig.outbound() == [Closed("client_disconnected", 1000, 0.0, None)]
    assert rig.ended("client_disconnected") == 1
    assert rig.ended("start_failed") is None  # accounted once
    await rig.session.aclose()


async def test_a_start_answered_after_the_client_left_is_not_used(make_rig: RigFactory) -> None:
    rig = make_rig()
    rig.opener.hold_start = True
    starting = asyncio.create_task(rig.start())
    await _started_called(rig.opener)
    rig.stream.release_start()  # Data Flow's answer is on its way ...
    rig.session.abort()  # ... when the client goes
    with pytest.raises(GoingAway) as raised:
        await starting
    assert raised.value.error_code is ErrorCode.GOING_AWAY
    assert rig.session.state is SessionState.CLOSED
    assert rig.stream.cancelled
    assert await rig.outbound() == [Closed("client_disconnected", 1000, 0.0, None)]  # no Started, no Flow
    assert rig.sample("sessions_started_total", dialect="native") is None
    await rig.session.aclose()


async def test_a_drain_during_start_raises_its_going_away(make_rig: RigFactory) -> None:
    rig = make_rig()
    rig.opener.hold_start = True
    starting = asyncio.create_task(rig.start())
    await _started_called(rig.opener)
    rig.stream.release_start()
    rig.session.go_away()
    with pytest.raises(GoingAway) as raised:
        await starting
    closed = await rig.closed()
    assert kept(closed, raised.value)  # raised as a copy of what it keeps: not with the session in its frames
    assert (closed.reason, closed.code) == ("going_away", 1001)
    await rig.session.aclose()


async def test_a_cancelled_start_closes_start_failed(make_rig: RigFactory) -> None:
    rig = make_rig()
    rig.opener.hold_start = True
    starting = asyncio.create_task(rig.start())
    await _started_called(rig.opener)
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert await rig.closed() == Closed("start_failed", 1000, 0.0, None)
    assert rig.stream.cancelled
    await rig.session.aclose()


async def test_a_session_starts_once(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.start()
    with pytest.raises(InvalidState) as raised:
        await rig.start()
    assert raised.value.error_code is ErrorCode.ALREADY_STARTED
    assert len(rig.opener.streams) == 1
    assert rig.session.state is SessionState.STREAMING
    await rig.session.aclose()


# --- aborts -------------------------------------------------------------------------------------------


async def test_abort_while_streaming_keeps_the_backlog(make_rig: RigFactory) -> None:
    rig = make_rig()
    started = await rig.start()
    await rig.session.feed_audio(ms(60))
    words = milestone("kept")
    rig.stream.push(words)
    await rig.stream.delivered()
    rig.session.abort()
    rig.session.abort("internal_error", GoingAway("later calls change nothing"))
    closed = Closed("client_disconnected", 1000, 60.0, None)
    assert rig.session.closed == closed
    assert rig.stream.cancelled
    assert without_flow(await rig.outbound()) == [started, words, closed]
    assert rig.ended("client_disconnected") == 1
    assert rig.ended("internal_error") is None
    await rig.session.aclose()
    await rig.session.aclose()  # idempotent


async def test_go_away_drops_the_backlog_and_closes_1001(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.start()
    rig.stream.push(milestone("dropped"))
    await rig.stream.delivered()
    rig.session.go_away()
    closed = await rig.closed()
    assert (closed.reason, closed.code) == ("going_away", 1001)
    assert isinstance(closed.error, GoingAway) and closed.error.retryable
    assert await rig.outbound() == [closed]
    assert rig.stream.cancelled
    await rig.session.aclose()


async def test_a_client_that_does_not_read_is_closed_and_its_backlog_dropped(make_rig: RigFactory) -> None:
    rig = make_rig(client_event_queue=10, ack_interval_ms=60_000, client_send_timeout_s=0.3)  # no Flow reports
    await rig.start()  # Started is the first of 10 queued items
    rig.stream.push(*(milestone(str(n)) for n in range(10)))
    began = time.monotonic()
    closed = await rig.closed()
    assert 0.25 < time.monotonic() - began < 1.5  # the last one waited (Data Flow not read) for the send timeout
    assert (closed.reason, closed.code) == ("client_too_slow", 1008)
    assert isinstance(closed.error, ClientTooSlow)
    assert closed.error.error_code is ErrorCode.CLIENT_TOO_SLOW
    assert await rig.outbound() == [closed]
    assert rig.sample("events_relayed_total", name="SR Milestone") == 9
    assert rig.stream.cancelled
    await rig.session.aclose()


async def test_a_burst_over_the_outbox_waits_for_a_client_that_reads(make_rig: RigFactory) -> None:
    # Data Flow sends 30 events at once to a 10-item outbox: the session stops reading Data Flow (its
    # flow control holds it) until the client makes room, and the client gets all 30.
    rig = make_rig(client_event_queue=10, ack_interval_ms=60_000, client_send_timeout_s=1.0)
    await rig.start()
    rig.stream.push(*(milestone(str(n)) for n in range(30)), final_result())
    await asyncio.sleep(0.1)
    assert len(rig.session.outbox) == 10 and rig.session.closed is None
    got: list[OutItem] = []
    async with asyncio.timeout(5):
        async for item in rig.session.outbound():
            got.append(item)
            if isinstance(item, DataflowEvent) and item.name == "FinalResult":
                break
            await asyncio.sleep(0.005)
    assert [e.text for e in events_in(got) if e.name == "SR Milestone"] == [str(n) for n in range(30)]
    assert rig.session.closed is None


async def test_abort_wakes_a_send_waiting_on_backpressure(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.start()
    rig.stream.hold_audio()
    feeding = asyncio.create_task(rig.session.feed_audio(ms(20)))
    await until(lambda: rig.stream.buffered_bytes > 0)
    rig.session.abort()
    async with asyncio.timeout(1):
        await feeding  # returns: the session is over, nothing to raise to the client
    assert (await rig.closed()).reason == "client_disconnected"
    await rig.session.aclose()


# --- timeouts and limits ------------------------------------------------------------------------------


async def test_no_final_result_within_the_finalize_timeout(make_rig: RigFactory) -> None:
    rig = make_rig(finalize_timeout_s=0.1)
    await rig.start()
    await rig.session.finalize()
    closed = await rig.closed()
    assert (closed.reason, closed.code) == ("upstream_error", 1011)
    assert isinstance(closed.error, UpstreamTimeout)
    assert re.fullmatch(r"Data Flow sent no final result, nor anything for 0\.[1-5] s", closed.error.message)
    assert rig.stream.cancelled
    await rig.session.aclose()


async def _limit_ends_the_session(rig: Rig, reason: ErrorCode, audio_ms: float = 0.0) -> Closed:
    """A limit finalizes first (Data Flow's results still come), then closes 1008 with its reason."""
    async with asyncio.timeout(2):
        await rig.stream.input_ended.wait()
    assert rig.stream.finalized
    assert rig.session.state is SessionState.FINALIZING
    assert rig.session.closed is None
    await rig.session.feed_audio(ms(20))  # nothing said: the closing error will explain
    words = milestone("late words")
    rig.stream.push(words, final_result())
    rig.stream.end()
    closed = await rig.closed()
    assert (closed.reason, closed.code, closed.audio_ms) == (reason, 1008, audio_ms)
    assert isinstance(closed.error, LimitError)
    assert closed.error.error_code is reason
    assert words in events_in(await rig.outbound())
    assert rig.ended(reason) == 1
    return closed


async def test_idle_timeout(make_rig: RigFactory) -> None:
    rig = make_rig(idle_timeout_s=0.1)
    await rig.start()
    closed = await _limit_ends_the_session(rig, ErrorCode.IDLE_TIMEOUT)
    assert closed.error is not None and closed.error.message == "no audio or message for 0.1 s"
    await rig.session.aclose()


async def test_any_message_keeps_the_idle_timeout_away(make_rig: RigFactory) -> None:
    rig = make_rig(idle_timeout_s=0.15)
    await rig.start()
    for _ in range(6):
        await asyncio.sleep(0.05)
        rig.session.touch()
    assert rig.session.state is SessionState.STREAMING
    assert not rig.stream.finalized
    await rig.session.aclose()


async def test_max_duration(make_rig: RigFactory) -> None:
    rig = make_rig(SessionLimits(max_session_s=0.1))
    await rig.start()
    await rig.session.feed_audio(ms(20))
    closed = await _limit_ends_the_session(rig, ErrorCode.MAX_DURATION, audio_ms=20.0)
    assert closed.error is not None and closed.error.message == "maximum session duration of 0.1 s reached"
    await rig.session.aclose()


async def test_audio_faster_than_allowed_is_paced_and_all_of_it_sent(make_rig: RigFactory) -> None:
    rig = make_rig(SessionLimits(max_session_s=60.0, max_rate_x=4.0, rate_burst_ms=200.0))
    await rig.start()
    began = time.monotonic()
    await rig.session.feed_audio(ms(200))  # within the burst: at once
    assert time.monotonic() - began < 0.1
    paused: list[bool] = []
    feeding = asyncio.create_task(rig.session.feed_audio(ms(1000)))  # 1 s at 4x: held ~0.25 s
    await asyncio.sleep(0.1)
    paused.append(rig.session.flow().paused)
    await feeding
    held = time.monotonic() - began
    assert rig.stream.audio_received == ms(1200)  # nothing dropped
    assert 0.2 <= held < 0.8
    assert paused == [True] and not rig.session.flow().paused
    assert rig.session.state is SessionState.STREAMING
    await rig.session.aclose()


class Budget:
    """A caller's audio budget (relay.limits.AudioBudget) with ``seconds`` left."""

    def __init__(self, seconds: float) -> None:
        self.left = seconds
        self.charged: list[float] = []

    def spend(self, seconds: float) -> bool:
        self.charged.append(seconds)
        self.left -= seconds
        return self.left > 0

    def retry_after_s(self) -> int:
        return 7


async def test_audio_budget_spent(make_rig: RigFactory) -> None:
    budget = Budget(0.15)
    rig = make_rig(SessionLimits(max_session_s=60.0, budget=budget))
    await rig.start()
    await rig.session.feed_audio(ms(100))
    assert rig.stream.finalized is False
    await rig.session.feed_audio(ms(100))  # charged and sent; the budget is spent with it
    assert budget.charged == [pytest.approx(0.1), pytest.approx(0.1)]
    assert rig.stream.audio_received == ms(200)
    closed = await _limit_ends_the_session(rig, ErrorCode.AUDIO_BUDGET_SPENT, audio_ms=200.0)
    assert closed.error is not None and closed.error.retryable
    assert closed.error.retry_after == 7  # when the budget refills, as the client's Retry-After
    await rig.session.aclose()


async def test_an_upload_stops_at_its_audio_cap(make_rig: RigFactory) -> None:
    rig = make_rig(SessionLimits(max_session_s=60.0, max_audio_s=0.5))
    await rig.start()
    await rig.session.feed_audio(ms(400))
    await rig.session.feed_audio(ms(200))
    assert rig.stream.audio_received == ms(500)  # up to the cap, not a byte more
    closed = await _limit_ends_the_session(rig, ErrorCode.AUDIO_TOO_LONG, audio_ms=600.0)
    assert closed.error is not None and closed.error.http_status == 413
    await rig.session.aclose()


async def test_a_control_message_the_stream_refuses_is_the_clients_error(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.start()
    rig.stream.send_error = MessageTooBig("the event is larger than 65536 bytes")
    with pytest.raises(MessageTooBig):
        await rig.session.send_event({"Name": "Huge"})
    with pytest.raises(MessageTooBig):
        await rig.session.update({"Huge": "x"})
    assert rig.session.state is SessionState.STREAMING  # the session goes on
    assert rig.session.closed is None
    rig.stream.send_error = None
    await rig.session.send_event({"Name": "Small"})
    assert rig.stream.events == [{"Name": "Small"}]
    await rig.session.aclose()


# --- messages in the wrong state ----------------------------------------------------------------------


async def test_audio_before_start_is_refused(make_rig: RigFactory) -> None:
    rig = make_rig()
    with pytest.raises(InvalidState) as raised:
        await rig.session.feed_audio(ms(20))
    assert raised.value.error_code is ErrorCode.AUDIO_BEFORE_START
    assert (raised.value.http_status, raised.value.ws_close_code) == (409, 1008)
    rig.opener.hold_start = True
    starting = asyncio.create_task(rig.start())
    await _started_called(rig.opener)
    with pytest.raises(InvalidState) as raised:  # still not started while Data Flow answers
        await rig.session.feed_audio(ms(20))
    assert raised.value.error_code is ErrorCode.AUDIO_BEFORE_START
    rig.stream.release_start()
    await starting
    assert rig.stream.audio_received == b""
    assert rig.session.bytes_in == 0
    await rig.session.aclose()


async def test_audio_after_finalize_is_refused_once_then_dropped(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.start()
    await rig.session.feed_audio(ms(20))
    await rig.session.finalize()
    with pytest.raises(InvalidState) as raised:
        await rig.session.feed_audio(ms(20))
    assert raised.value.error_code is ErrorCode.SESSION_FINALIZING
    await rig.session.feed_audio(ms(20))  # said once
    assert rig.stream.audio_received == ms(20)
    assert rig.session.bytes_in == len(ms(20))
    rig.session.abort()
    await rig.session.feed_audio(ms(20))  # closed: silently dropped
    assert rig.stream.audio_received == ms(20)
    await rig.session.aclose()


CONTROL_ACTIONS = ("update", "event", "finalize", "stop")


@pytest.mark.parametrize("action", CONTROL_ACTIONS)
async def test_control_messages_need_a_streaming_session(make_rig: RigFactory, action: str) -> None:
    rig = make_rig()
    with pytest.raises(InvalidState) as raised:
        await SEND_ACTIONS[action](rig.session)
    assert raised.value.error_code is ErrorCode.INVALID_STATE
    assert raised.value.message == "not possible while the session is new"
    await rig.start()
    await rig.session.finalize()
    with pytest.raises(InvalidState) as raised:
        await SEND_ACTIONS[action](rig.session)
    assert raised.value.message == "not possible while the session is finalizing"
    rig.stream.end()
    await rig.closed()
    with pytest.raises(InvalidState) as raised:
        await SEND_ACTIONS[action](rig.session)
    assert raised.value.error_code is ErrorCode.INVALID_STATE
    assert raised.value.message == "not possible while the session is closed"
    assert (rig.stream.updates, rig.stream.events, rig.stream.stopped) == ([], [], False)
    await rig.session.aclose()


async def test_trailing_half_sample_is_reported_at_finalize(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.start()
    await rig.session.feed_audio(b"\x01\x02\x03")
    assert rig.stream.audio_received == b"\x01\x02"
    await rig.session.finalize()
    assert rig.session.state is SessionState.FINALIZING  # a notice, not an end
    rig.stream.end()
    notices = [item for item in await rig.outbound() if isinstance(item, Notice)]
    assert len(notices) == 1
    assert isinstance(notices[0].error, InvalidState)
    assert notices[0].error.error_code is ErrorCode.MISALIGNED_AUDIO
    assert notices[0].error.message == "1 trailing bytes did not form a whole sample and were dropped"
    assert rig.stream.audio_received == b"\x01\x02"
    await rig.session.aclose()


# --- the converter ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "rate", "client", "upstream"),
    [
        ("pcm", 16000, PCM16_16K, PCM16_16K),
        ("ulaw", 8000, PCM16_16K, MULAW_8K),
        ("pcm", 16000, PCM16_8K, PCM16_8K),  # telephone audio is never upsampled
        ("pcm", 16000, ALAW_8K, PCM16_8K),
        ("alaw", 16000, PCM16_16K, AudioFormat("alaw", 16000, 1)),
    ],
)
async def test_the_upstream_format_follows_the_settings(
    make_rig: RigFactory, encoding: str, rate: int, client: AudioFormat, upstream: AudioFormat
) -> None:
    rig = make_rig(upstream_encoding=encoding, upstream_sample_rate_hz=rate)
    started = await rig.start(client)
    assert (started.client_format, started.upstream_format) == (client, upstream)
    assert rig.stream.audio == upstream
    assert rig.stream.start_request is not None and rig.stream.start_request.audio == upstream
    await rig.session.feed_audio(ms(1000, client))
    await rig.session.finalize()  # flushes the resampler's tail
    assert len(rig.stream.audio_received) == upstream.ms_to_bytes(1000)
    assert rig.session.flow().audio_ms == 1000.0
    await rig.session.aclose()


async def test_passthrough_audio_arrives_unchanged(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.start()
    audio = bytes(range(256)) * 10
    for offset in range(0, len(audio), 333):  # chunks that split samples
        await rig.session.feed_audio(audio[offset : offset + 333])
    await rig.session.finalize()
    assert rig.stream.audio_received == audio
    await rig.session.aclose()


async def test_converted_silence_is_silence_upstream(make_rig: RigFactory) -> None:
    rig = make_rig(upstream_encoding="ulaw", upstream_sample_rate_hz=8000)
    await rig.start()
    await rig.session.feed_audio(ms(500))
    await rig.session.finalize()
    assert rig.stream.audio_received == b"\xff" * 4000  # mu-law silence, 500 ms at 8 kHz
    await rig.session.aclose()


# --- flow reports and backpressure --------------------------------------------------------------------


async def test_flow_reports_what_arrived_went_up_and_waits(make_rig: RigFactory) -> None:
    rig = make_rig()
    assert rig.session.flow() == Flow(0.0, 0.0, 0.0, False)
    await rig.start()
    rig.stream.hold_audio()
    feeding = asyncio.create_task(rig.session.feed_audio(ms(100)))
    await until(lambda: rig.stream.buffered_bytes > 0)
    assert rig.session.flow() == Flow(100.0, 0.0, 100.0, True)
    assert not feeding.done()  # the client waits while Data Flow is slow
    rig.stream.release_audio()
    await asyncio.wait_for(feeding, 1)
    assert rig.session.flow() == Flow(100.0, 100.0, 0.0, False)
    await asyncio.sleep(0.12)  # a couple of ticks
    rig.session.abort()
    flows = [item for item in await rig.outbound() if isinstance(item, Flow)]
    assert flows, "the ticker reports flow while streaming"
    assert flows[-1] == Flow(100.0, 100.0, 0.0, False)
    await rig.session.aclose()


async def test_flow_reports_are_in_upstream_bytes_after_conversion(make_rig: RigFactory) -> None:
    rig = make_rig(upstream_encoding="ulaw", upstream_sample_rate_hz=8000)
    await rig.start()
    await rig.session.feed_audio(ms(1000))
    await rig.session.finalize()
    flow = rig.session.flow()
    assert (flow.audio_ms, flow.sent_ms, flow.buffered_ms) == (1000.0, 1000.0, 0.0)
    await rig.session.aclose()


async def test_backpressure_pauses_are_counted_once_per_pause(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.start()
    for _ in range(2):
        rig.stream.hold_audio()
        feeding = asyncio.create_task(rig.session.feed_audio(ms(20)))
        await until(lambda: rig.stream.buffered_bytes > 0)
        rig.stream.release_audio()
        await asyncio.wait_for(feeding, 1)
        await rig.session.feed_audio(ms(20))  # not paused
    assert rig.session.stream is not None and rig.session.stream.pauses == 2
    await rig.session.finalize()
    rig.stream.end()
    await rig.closed()
    assert rig.sample("backpressure_pauses_total") == 2
    assert rig.stream.audio_bytes_sent == len(ms(80))
    await rig.session.aclose()


# --- a limit while a send waits on backpressure ------------------------------------------------------


async def test_a_limit_while_audio_waits_on_backpressure_still_ends_with_the_limit(make_rig: RigFactory) -> None:
    """The ticker's finalize closes the stream's input under a send still waiting for Data Flow; that
    send's refusal is not the session's end: the limit is, after Data Flow's last results."""
    rig = make_rig(SessionLimits(max_session_s=0.1))
    await rig.start()
    rig.stream.hold_audio()
    feeding = asyncio.create_task(rig.session.feed_audio(ms(20)))
    async with asyncio.timeout(2):
        await rig.stream.input_ended.wait()  # max duration: the ticker finalized
    assert not feeding.done()
    rig.stream.release_audio()
    await asyncio.wait_for(feeding, 1)  # nothing raised to the client
    assert rig.session.closed is None
    words = milestone("last words")
    rig.stream.push(words, final_result())
    rig.stream.end()
    closed = await rig.closed()
    assert (closed.reason, closed.code) == (ErrorCode.MAX_DURATION, 1008)
    assert isinstance(closed.error, LimitError) and closed.error.error_code is ErrorCode.MAX_DURATION
    assert words in events_in(await rig.outbound())
    await rig.session.aclose()


async def test_a_client_error_while_a_limit_finalizes_keeps_the_limit_as_the_end(make_rig: RigFactory) -> None:
    """A message that ends the session (a dialect's refusal) after a limit began to finalize it: the session
    still ends with the limit, after Data Flow's last results; it had taken the later error's code."""
    rig = make_rig(SessionLimits(max_session_s=0.1))
    await rig.start()
    async with asyncio.timeout(2):
        await rig.stream.input_ended.wait()  # max duration: the ticker finalized
    await rig.session.end_with(InvalidMessage("a media payload is not base64"))
    words = milestone("last words")
    rig.stream.push(words, final_result())
    rig.stream.end()
    closed = await rig.closed()
    assert (closed.reason, closed.code) == (ErrorCode.MAX_DURATION, 1008)
    assert words in events_in(await rig.outbound())
    await rig.session.aclose()
