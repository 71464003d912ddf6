"""The limits one session runs under and the policy that checks them.

:class:`SessionLimits` is what a caller's credential allows (length, audio rate against real time,
audio budget); :class:`LimitWatch` applies them, with the idle timeout, to one session's clock and
byte count. It decides *which* limit is reached; the session decides what that does (finalize so
results are still delivered, then close 1008).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.audio.format import AudioFormat
from gateway.errors import ErrorCode


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Per-session limits beyond the settings' defaults (from the caller's credential)."""

    max_session_s: float
    max_rate_x: float | None = None  # live streams: audio may not outrun real time by more than this
    rate_burst_ms: float = 0.0
    spend_audio: Callable[[float], bool] | None = None  # False once the caller's audio budget is spent


@dataclass(frozen=True, slots=True)
class LimitHit:
    """A limit that ends the session: the close reason (also the error code) and the client's words."""

    reason: ErrorCode
    message: str


class LimitWatch:
    def __init__(self, limits: SessionLimits, idle_timeout_s: float, opened_at: float) -> None:
        self.limits = limits
        self.idle_timeout_s = idle_timeout_s
        self.opened_at = opened_at
        self._format: AudioFormat | None = None
        self._streaming_since = 0.0
        self._bytes_budgeted = 0

    def streaming(self, client_format: AudioFormat, since: float) -> None:
        self._format, self._streaming_since = client_format, since

    def too_fast(self, bytes_in: int, now: float) -> LimitHit | None:
        """Live audio may run ahead of real time by ``max_rate_x`` plus a burst, no more."""
        rate_x, fmt = self.limits.max_rate_x, self._format
        if rate_x is None or fmt is None:
            return None
        ahead_ms = fmt.bytes_to_ms(bytes_in) - (now - self._streaming_since) * 1000 * rate_x
        if ahead_ms > self.limits.rate_burst_ms:
            return LimitHit(ErrorCode.AUDIO_TOO_FAST, f"audio arrives faster than {rate_x:g}x real time")
        return None

    def periodic(self, bytes_in: int, now: float, last_activity: float) -> LimitHit | None:
        """The budget, the maximum duration and the idle timeout, checked on the session's ticker."""
        if not self._spend(bytes_in):
            return LimitHit(ErrorCode.AUDIO_BUDGET_SPENT, "the caller's audio budget for the last minute is spent")
        max_s = self.limits.max_session_s
        if now - self.opened_at >= max_s:
            return LimitHit(ErrorCode.MAX_DURATION, f"maximum session duration of {max_s:g} s reached")
        if now - last_activity >= self.idle_timeout_s:
            return LimitHit(ErrorCode.IDLE_TIMEOUT, f"no audio or message for {self.idle_timeout_s:g} s")
        return None

    def _spend(self, bytes_in: int) -> bool:
        spend, fmt = self.limits.spend_audio, self._format
        if spend is None or fmt is None:
            return True
        new_bytes, self._bytes_budgeted = bytes_in - self._bytes_budgeted, bytes_in
        return spend(new_bytes / fmt.bytes_per_second)


def connection_deadline(
    opened_at: float, last_activity: float | None, *, start_s: float, idle_s: float, max_s: float
) -> tuple[LimitHit, float]:
    """When a connection with no session running is ended, and why: the start timeout until its first
    session, then the idle timeout since the last activity; never past its maximum duration."""
    if last_activity is None:
        hit = LimitHit(ErrorCode.START_TIMEOUT, f"no start message within {start_s:g} s")
        deadline = opened_at + start_s
    else:
        hit = LimitHit(ErrorCode.IDLE_TIMEOUT, f"no audio or message for {idle_s:g} s")
        deadline = last_activity + idle_s
    if opened_at + max_s < deadline:
        hit = LimitHit(ErrorCode.MAX_DURATION, f"maximum connection duration of {max_s:g} s reached")
        deadline = opened_at + max_s
    return hit, deadline
