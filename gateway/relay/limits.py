"""The limits one session runs under and the policy that checks them.

:class:`SessionLimits` is what a caller's credential allows (length, audio rate against real time,
audio budget); :class:`LimitWatch` applies them, with the idle timeout, to one session's clock and
byte count. Audio ahead of the rate limit is held (paced), never refused. The other audio limits are
checked as audio is accepted — the budget is charged there, never by a timer — so no chunk goes
upstream past a limit. The watch decides *which* limit is reached (as the error the client will
see); the session decides what that does (finalize so results are still delivered, then close).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

from gateway.audio.format import AudioFormat
from gateway.errors import AudioTooLong, BudgetSpent, ErrorCode, LimitError, LimitReached


class AudioBudget(Protocol):
    """A caller's audio budget (see :class:`gateway.relay.audio_budgets.AudioBudgets`)."""

    def spend(self, seconds: float) -> bool:
        """Charge ``seconds``; False once the budget is spent."""
        ...

    def retry_after_s(self) -> int: ...


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Per-session limits beyond the settings' defaults (from the caller's credential)."""

    max_session_s: float
    max_rate_x: float | None = None  # live streams: audio is paced to at most this multiple of real time
    rate_burst_ms: float = 0.0
    budget: AudioBudget | None = None
    max_audio_s: float | None = None  # uploads: the most audio (as decoded) that goes to Data Flow


class LimitWatch:
    def __init__(self, limits: SessionLimits, idle_timeout_s: float, opened_at: float) -> None:
        self.limits = limits
        self.idle_timeout_s = idle_timeout_s
        self.opened_at = opened_at
        self._format: AudioFormat | None = None
        # The rate limit's account, a token bucket the size of the burst: the allowance runs from (_since,
        # _base_bytes) at rate x real time plus the burst, moved forward whenever more than the burst is unused.
        self._since = 0.0
        self._base_bytes = 0
        self._seen_bytes = 0  # the highest total asked about: what the stream has sent (or is sending)
        self._burst_bytes = 0.0
        self._cap_bytes: int | None = None
        self._unlimited = limits.budget is None and limits.max_audio_s is None  # nothing to check per chunk
        self._bytes_per_s = 0
        self.pacing = False  # a message is being held right now (flow reports say paused)
        self.holding_audio = False  # ... and it is audio for the session
        self.paced_s = 0.0  # how long audio was held in all

    def streaming(self, client_format: AudioFormat, since: float) -> None:
        self._format, self._since = client_format, since
        self._bytes_per_s = client_format.bytes_per_second
        self._burst_bytes = self.limits.rate_burst_ms / 1000 * self._bytes_per_s
        if self.limits.max_audio_s is not None:
            self._cap_bytes = client_format.ms_to_bytes(self.limits.max_audio_s * 1000)

    def pace_s(self, bytes_total: int, now: float) -> float:
        """How long to hold audio that brings the stream to ``bytes_total`` bytes so it does not outrun
        real time by more than the rate limit allows (0: send it now). Live audio is paced, never
        refused: a client that sends a file as fast as it can is slowed to the limit."""
        rate_x = self.limits.max_rate_x
        if self._format is None or rate_x is None:
            return 0.0
        ahead = bytes_total - self._allowed_bytes(bytes_total, now, rate_x)
        return ahead / self._bytes_per_s / rate_x if ahead > 0 else 0.0

    def free_for(self, bytes_total: int, now: float) -> bool:
        """Can the stream reach ``bytes_total`` now with no hold and no limit to check (no cap, no budget)?
        :meth:`pace_s` == 0, in a few operations: it is asked for every frame on the fast path."""
        rate_x = self.limits.max_rate_x
        if not self._unlimited or rate_x is None:
            return self._unlimited
        return bytes_total <= self._allowed_bytes(bytes_total, now, rate_x)

    def _allowed_bytes(self, bytes_total: int, now: float, rate_x: float) -> float:
        """The most the stream may have sent by ``now``: ``rate_x`` x real time plus the burst, where an
        allowance left unused beyond the burst is forgotten. It had built up: a client sending in real time
        for an hour could then send two hours of audio at once (3x), or millions of answered pings."""
        allowed = self._base_bytes + ((now - self._since) * rate_x * self._bytes_per_s) + self._burst_bytes
        if allowed - self._seen_bytes > self._burst_bytes:
            self._since, self._base_bytes = now, self._seen_bytes
            allowed = self._seen_bytes + self._burst_bytes
        self._seen_bytes = max(self._seen_bytes, bytes_total)
        return allowed

    async def pace(self, bytes_total: int, *, audio: bool = False) -> None:
        """Hold the caller (and so the reading of its socket) until ``bytes_total`` is within the rate."""
        delay = self.pace_s(bytes_total, time.monotonic())
        if delay <= 0:
            return
        self.pacing, self.holding_audio, self.paced_s = True, audio, self.paced_s + delay
        try:
            await asyncio.sleep(delay)
        finally:
            self.pacing = self.holding_audio = False

    def accept(self, bytes_before: int, length: int) -> tuple[int, LimitError | None]:
        """Of ``length`` new bytes after ``bytes_before``, how many may go upstream, and the limit this
        chunk reaches (None: none). What is accepted is charged to the caller's budget."""
        fmt, limits = self._format, self.limits
        if fmt is None:
            return length, None
        allowed = length
        hit: LimitError | None = None
        if self._cap_bytes is not None and bytes_before + length > self._cap_bytes:
            allowed = max(0, self._cap_bytes - bytes_before)  # the cap is whole frames: so is where it stops
            hit = AudioTooLong(f"the audio is longer than the limit of {limits.max_audio_s:g} s; the rest was not sent")
        if limits.budget is not None and allowed and not limits.budget.spend(allowed / fmt.bytes_per_second):
            retry = limits.budget.retry_after_s()
            hit = hit or BudgetSpent("the caller's audio budget for the last minute is spent", retry_after_s=retry)
        return allowed, hit

    def periodic(self, now: float, last_activity: float) -> LimitError | None:
        """The maximum duration and the idle timeout, checked on the session's ticker. While the gateway holds
        the client's audio (:meth:`pace`) the client is not idle: it may not send, and the held audio is its
        last activity once fed (a frame of 38 s of audio had met a 30 s idle timeout and was dropped). A held
        message that feeds nothing (AudioHook's paused audio) is no activity, held or not."""
        max_s = self.limits.max_session_s
        if now - self.opened_at >= max_s:
            return LimitReached(f"maximum session duration of {max_s:g} s reached", code=ErrorCode.MAX_DURATION)
        if now - last_activity >= self.idle_timeout_s and not self.holding_audio:
            return LimitReached(f"no audio or message for {self.idle_timeout_s:g} s", code=ErrorCode.IDLE_TIMEOUT)
        return None


def connection_deadline(
    opened_at: float, last_activity: float | None, *, start_s: float, idle_s: float, max_s: float
) -> tuple[LimitError, float]:
    """When a connection with no session running is ended, and why: the start timeout until its first
    session, then the idle timeout since the last activity; never past its maximum duration."""
    if last_activity is None:
        error = LimitReached(f"no start message within {start_s:g} s", code=ErrorCode.START_TIMEOUT)
        deadline = opened_at + start_s
    else:
        error = LimitReached(f"no audio or message for {idle_s:g} s", code=ErrorCode.IDLE_TIMEOUT)
        deadline = last_activity + idle_s
    if opened_at + max_s < deadline:
        error = LimitReached(f"maximum connection duration of {max_s:g} s reached", code=ErrorCode.MAX_DURATION)
        deadline = opened_at + max_s
    return error, deadline
