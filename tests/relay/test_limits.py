"""gateway.relay.limits on an explicit clock: pacing (the rate with its burst), the upload audio cap and
the audio budget as audio is accepted; the maximum duration and the idle timeout on the ticker; and
the deadlines of a connection with no session running."""

from __future__ import annotations

import time

import pytest

from gateway.audio.format import AudioFormat
from gateway.errors import AudioTooLong, BudgetSpent, ErrorCode, LimitReached
from gateway.relay.limits import LimitWatch, SessionLimits, connection_deadline

PCM16_16K = AudioFormat("pcm16", 16000, 1)  # 32 bytes per ms
MULAW_8K = AudioFormat("mulaw", 8000, 1)  # 8 bytes per ms
T0 = 1000.0  # the session opened (monotonic seconds)


def ms(n: float, fmt: AudioFormat = PCM16_16K) -> int:
    return fmt.ms_to_bytes(n)


class Budget:
    """An audio budget with ``seconds`` left (relay.limits.AudioBudget)."""

    def __init__(self, seconds: float, retry_after_s: int = 12) -> None:
        self.left = seconds
        self.charged: list[float] = []
        self._retry_after_s = retry_after_s

    def spend(self, seconds: float) -> bool:
        self.charged.append(seconds)
        self.left -= seconds
        return self.left > 0

    def retry_after_s(self) -> int:
        return self._retry_after_s


def watch(limits: SessionLimits, *, idle_s: float = 30.0, fmt: AudioFormat | None = PCM16_16K) -> LimitWatch:
    w = LimitWatch(limits, idle_s, T0)
    if fmt is not None:
        w.streaming(fmt, T0 + 0.5)  # Data Flow answered Start half a second after the session opened
    return w


# --- pacing: audio faster than the rate is held, never refused --------------------------------------


STREAMING_AT = T0 + 0.5  # when watch() says Data Flow answered Start


def stream(w: LimitWatch, seconds: float, *, rate_x: float = 1.0, frame_ms: int = 20) -> float:
    """A client sending ``seconds`` of audio in 20 ms frames at ``rate_x`` x real time from the start of
    streaming, none of it held; the time it is done."""
    for frame in range(1, round(seconds * 1000 / frame_ms) + 1):
        now = STREAMING_AT + frame * frame_ms / 1000 / rate_x
        assert w.pace_s(ms(frame * frame_ms), now) == pytest.approx(0.0, abs=1e-9), frame  # (float rounding)
    return STREAMING_AT + seconds / rate_x


def test_audio_may_run_ahead_of_real_time_by_the_rate_and_the_burst() -> None:
    w = watch(SessionLimits(60.0, max_rate_x=1.0, rate_burst_ms=100.0))
    now = stream(w, 1.0) + 0.02  # 1 s in real time; a frame's time later (the last frame took 20 ms of it)
    assert w.pace_s(ms(1100), now) == pytest.approx(0.0, abs=1e-9)  # exactly 100 ms ahead: sent at once
    assert w.pace_s(ms(1101), now) == pytest.approx(0.001)  # 1 ms too far ahead: held 1 ms
    assert w.pace_s(ms(2100), now) == pytest.approx(1.0)


def test_a_higher_rate_holds_for_less() -> None:
    w = watch(SessionLimits(60.0, max_rate_x=2.5, rate_burst_ms=20.0))
    now = stream(w, 5.0, rate_x=2.5) + 0.008  # 5 s of audio in 2 s, at the rate, never held
    assert w.pace_s(ms(5020), now) == pytest.approx(0.0, abs=1e-9)
    assert w.pace_s(ms(7520), now) == pytest.approx(1.0)  # 2.5 s of audio more at 2.5x: 1 s


def test_time_before_the_first_audio_earns_nothing_beyond_the_burst() -> None:
    w = watch(SessionLimits(60.0, max_rate_x=1.0, rate_burst_ms=100.0))
    assert w.pace_s(ms(100), T0 + 1.0) == 0.0  # 1 s after the open, 0.5 s since streaming began: the burst
    assert w.pace_s(ms(600), T0 + 1.0) == pytest.approx(0.5)


def test_with_no_burst_a_message_waits_for_its_own_time_at_the_rate() -> None:
    w = watch(SessionLimits(60.0, max_rate_x=2.0, rate_burst_ms=0.0))
    assert w.pace_s(ms(20), STREAMING_AT + 5.0) == pytest.approx(0.01)  # 20 ms of audio at 2x


@pytest.mark.parametrize("pause_s", [0.0, 30.0])
def test_an_allowance_left_unused_beyond_the_burst_is_not_kept(pause_s: float) -> None:
    """30 s sent in real time at 3x with a 10 s burst: 60 s more is held (60 - 10) / 3 s, as after a
    silent pause; the unused allowance had built up, and 60 s of audio went through in 0.2 s."""
    w = watch(SessionLimits(14_400.0, max_rate_x=3.0, rate_burst_ms=10_000.0))
    now = stream(w, 30.0) + 0.02 + pause_s
    assert w.pace_s(ms(30_000 + 10_000), now) == pytest.approx(0.0, abs=1e-9)  # the burst is there
    assert w.pace_s(ms(30_000 + 60_000), now) == pytest.approx(50 / 3)


def test_a_client_behind_real_time_catches_up_at_the_rate() -> None:
    """A client that fell behind (a stall on its network) sends its backlog: the burst at once, the rest
    at the rate, never refused."""
    w = watch(SessionLimits(14_400.0, max_rate_x=3.0, rate_burst_ms=10_000.0))
    now = stream(w, 10.0) + 20.0  # 20 s of nothing, then the 20 s it holds
    assert w.pace_s(ms(10_000 + 10_000), now) == 0.0
    assert w.pace_s(ms(10_000 + 20_000), now) == pytest.approx(10 / 3)


async def test_pace_holds_the_caller_for_the_time_it_is_ahead() -> None:
    w = LimitWatch(SessionLimits(60.0, max_rate_x=10.0, rate_burst_ms=0.0), 30.0, time.monotonic())
    w.streaming(PCM16_16K, time.monotonic())
    began = time.monotonic()
    await w.pace(ms(2000))  # 2 s of audio at 10x: 0.2 s
    held = time.monotonic() - began
    assert 0.15 <= held < 0.6
    assert w.paced_s == pytest.approx(0.2, abs=0.02) and not w.pacing


@pytest.mark.parametrize("rate_x", [None, 1.0, 2.5, 3.0])
@pytest.mark.parametrize("burst_ms", [0.0, 100.0, 2000.0])
def test_free_for_is_exactly_no_hold(rate_x: float | None, burst_ms: float) -> None:
    """The fast path's check (free_for) agrees with pace_s == 0 on both sides of every boundary."""
    w = watch(SessionLimits(60.0, max_rate_x=rate_x, rate_burst_ms=burst_ms))
    for streaming_s in (0.0, 0.013, 0.5, 1.0, 7.77, 59.0):
        now = T0 + 0.5 + streaming_s
        edge = ms(streaming_s * 1000 * (rate_x or 1.0) + burst_ms)
        for total in (0, 2, edge - 2, edge, edge + 2, edge + ms(20), ms(600_000)):
            assert w.free_for(max(total, 0), now) == (w.pace_s(max(total, 0), now) == 0.0), (streaming_s, total)


@pytest.mark.parametrize(("budget", "cap_s"), [(Budget(100.0), None), (None, 100.0)])
def test_a_budget_or_a_cap_is_never_free(budget: Budget | None, cap_s: float | None) -> None:
    """A chunk may spend a budget or cross a cap: that needs the session's own task (the queued path)."""
    w = watch(SessionLimits(60.0, max_rate_x=None, budget=budget, max_audio_s=cap_s))
    assert not w.free_for(2, T0 + 10.0)
    assert budget is None or budget.charged == []


def test_the_rate_never_refuses_audio() -> None:
    w = watch(SessionLimits(60.0, max_rate_x=1.0, rate_burst_ms=0.0))
    assert w.accept(0, ms(60_000)) == (ms(60_000), None)  # pacing, not accept, applies the rate


def test_without_a_rate_audio_may_come_as_fast_as_it_can() -> None:
    w = watch(SessionLimits(60.0, max_rate_x=None, rate_burst_ms=0.0))
    assert w.accept(0, ms(3_600_000)) == (ms(3_600_000), None)


def test_nothing_is_limited_before_streaming() -> None:
    budget = Budget(0.0)
    w = watch(SessionLimits(60.0, max_rate_x=1.0, budget=budget, max_audio_s=1.0), fmt=None)
    assert w.accept(0, ms(10_000)) == (ms(10_000), None)
    assert budget.charged == []


# --- the upload cap -----------------------------------------------------------------------------------


def test_the_cap_lets_through_what_fits_and_nothing_after() -> None:
    w = watch(SessionLimits(60.0, max_audio_s=1.0))
    assert w.accept(0, ms(900)) == (ms(900), None)
    assert w.accept(ms(900), ms(100)) == (ms(100), None)  # exactly at the cap
    allowed, limit = w.accept(ms(1000), ms(20))
    assert allowed == 0
    assert isinstance(limit, AudioTooLong)
    assert limit.error_code is ErrorCode.AUDIO_TOO_LONG and limit.http_status == 413
    assert limit.message == "the audio is longer than the limit of 1 s; the rest was not sent"


def test_a_chunk_across_the_cap_is_cut_at_the_cap() -> None:
    w = watch(SessionLimits(60.0, max_audio_s=1.0))
    allowed, limit = w.accept(ms(950), ms(100))
    assert allowed == ms(50)
    assert isinstance(limit, AudioTooLong)


def test_the_cap_cuts_at_a_sample_boundary_even_after_a_split_sample() -> None:
    w = watch(SessionLimits(60.0, max_audio_s=1.0))  # 32000 bytes
    allowed, limit = w.accept(ms(1000) - 1, 10)  # the byte that completes the last sample fits
    assert (allowed, isinstance(limit, AudioTooLong)) == (1, True)


def test_the_cap_in_a_one_byte_format() -> None:
    w = watch(SessionLimits(60.0, max_audio_s=0.5), fmt=MULAW_8K)
    assert w.accept(ms(499, MULAW_8K), 100)[0] == ms(1, MULAW_8K)


# --- the audio budget ---------------------------------------------------------------------------------


def test_accepted_audio_is_charged_to_the_budget() -> None:
    budget = Budget(10.0)
    w = watch(SessionLimits(60.0, budget=budget))
    assert w.accept(0, ms(250)) == (ms(250), None)
    assert w.accept(ms(250), ms(500)) == (ms(500), None)
    assert budget.charged == [pytest.approx(0.25), pytest.approx(0.5)]


def test_the_chunk_that_spends_the_budget_goes_and_ends_the_session() -> None:
    budget = Budget(0.3, retry_after_s=42)
    w = watch(SessionLimits(60.0, budget=budget))
    assert w.accept(0, ms(200)) == (ms(200), None)
    allowed, limit = w.accept(ms(200), ms(200))
    assert allowed == ms(200)  # charged, so sent
    assert isinstance(limit, BudgetSpent)
    assert limit.error_code is ErrorCode.AUDIO_BUDGET_SPENT
    assert (limit.http_status, limit.retryable, limit.retry_after) == (429, True, 42)


def test_audio_refused_for_another_limit_is_not_charged() -> None:
    budget = Budget(10.0)
    capped = watch(SessionLimits(60.0, budget=budget, max_audio_s=1.0))
    assert capped.accept(ms(1000), ms(100))[0] == 0
    assert budget.charged == []
    allowed, limit = capped.accept(ms(900), ms(300))  # only what passes the cap is charged
    assert allowed == ms(100) and isinstance(limit, AudioTooLong)  # the cap is the reason given
    assert budget.charged == [pytest.approx(0.1)]


# --- on the ticker: maximum duration and idle ---------------------------------------------------------


def test_max_duration_counts_from_the_open() -> None:
    w = watch(SessionLimits(10.0), idle_s=1000.0)
    assert w.periodic(T0 + 9.99, T0 + 9.9) is None
    limit = w.periodic(T0 + 10.0, T0 + 9.9)
    assert isinstance(limit, LimitReached)
    assert limit.error_code is ErrorCode.MAX_DURATION
    assert limit.message == "maximum session duration of 10 s reached"
    assert (limit.ws_close_code, limit.http_status) == (1008, 408)


def test_idle_counts_from_the_last_activity() -> None:
    w = watch(SessionLimits(3600.0), idle_s=5.0)
    assert w.periodic(T0 + 104.9, T0 + 100.0) is None
    limit = w.periodic(T0 + 105.0, T0 + 100.0)
    assert limit is not None and limit.error_code is ErrorCode.IDLE_TIMEOUT
    assert limit.message == "no audio or message for 5 s"


def test_max_duration_is_named_before_idle() -> None:
    w = watch(SessionLimits(10.0), idle_s=5.0)
    limit = w.periodic(T0 + 20.0, T0)
    assert limit is not None and limit.error_code is ErrorCode.MAX_DURATION


def test_the_ticker_applies_before_streaming_too() -> None:
    w = watch(SessionLimits(10.0), idle_s=5.0, fmt=None)
    limit = w.periodic(T0 + 6.0, T0)
    assert limit is not None and limit.error_code is ErrorCode.IDLE_TIMEOUT


# --- a connection with no session ---------------------------------------------------------------------


def test_a_connection_has_until_the_start_timeout_for_its_first_session() -> None:
    limit, deadline = connection_deadline(T0, None, start_s=10.0, idle_s=30.0, max_s=3600.0)
    assert deadline == T0 + 10.0
    assert limit.error_code is ErrorCode.START_TIMEOUT
    assert limit.message == "no start message within 10 s"


def test_between_sessions_the_idle_timeout_counts_from_the_last_activity() -> None:
    limit, deadline = connection_deadline(T0, T0 + 100.0, start_s=10.0, idle_s=30.0, max_s=3600.0)
    assert deadline == T0 + 130.0
    assert limit.error_code is ErrorCode.IDLE_TIMEOUT


def test_a_connection_never_outlives_its_maximum_duration() -> None:
    limit, deadline = connection_deadline(T0, T0 + 3590.0, start_s=10.0, idle_s=30.0, max_s=3600.0)
    assert deadline == T0 + 3600.0
    assert limit.error_code is ErrorCode.MAX_DURATION
    assert limit.message == "maximum connection duration of 3600 s reached"
    first, at = connection_deadline(T0, None, start_s=10.0, idle_s=30.0, max_s=5.0)
    assert (first.error_code, at) == (ErrorCode.MAX_DURATION, T0 + 5.0)
