"""When a recovering stream (:mod:`gateway.relay.recovery`) moves to a new upstream stream: its policy,
the waits between attempts, and the clock of planned rotations."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from gateway.settings import Settings

FIRST_BACKOFF_S = 0.25  # the first attempt is at once: a retired connection is no outage
MAX_BACKOFF_S = 2.0  # attempts go on at this pace to the end of the window: a restart takes seconds
BACKOFF_JITTER = 0.2  # each wait within ±20 %: the sessions of one outage do not come back in one instant
ROTATION_RETRY_S = 1.0  # after a failed rotation; doubling while they fail, at most the stream limit


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    replay_ms: float  # audio kept for a replay (0: no recovery)
    attempts: int  # reopen attempts per failure
    window_s: float  # time for all of them
    max_stream_s: float | None = None  # rotate to a new stream after this long (at a final result)
    max_settings_bytes: int = 64 * 1024  # the merged Update a new stream gets (GATEWAY_MAX_CONTROL_MESSAGE_BYTES)

    @classmethod
    def from_settings(cls, s: Settings) -> RecoveryPolicy | None:
        """The policy of ``s``; None when recovery is off."""
        if s.upstream_replay_ms <= 0 or s.upstream_recovery_attempts <= 0:
            return None
        return cls(
            s.upstream_replay_ms, s.upstream_recovery_attempts, s.upstream_recovery_window_s, s.upstream_max_stream_s,
            s.max_control_message_bytes,
        )  # fmt: skip


def backoff_s(attempt: int) -> float:
    """The wait before attempt ``attempt`` (from 0): none, then 0.25 s doubling up to 2 s, with jitter
    (the defaults, 8 attempts in 10 s, try at about 0, 0.25, 0.75, 1.75, 3.75, 5.75, 7.75 and 9.75 s)."""
    if attempt == 0:
        return 0.0
    wait_s = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2.0 ** min(attempt - 1, 8))
    return wait_s * (1 - BACKOFF_JITTER + 2 * BACKOFF_JITTER * random.random())  # noqa: S311 (not a secret)


class AttemptBudget:
    """The attempts of a recovery, bounded in count and time. A stream that fails again within the
    window after a recovery continues that recovery's budget: a Data Flow that keeps failing every
    stream ends the session, as without recovery."""

    def __init__(self, policy: RecoveryPolicy) -> None:
        self._policy = policy
        self._began, self.used, self._recovered_at = 0.0, 0, -1e9

    def begin(self, *, fresh: bool) -> None:
        now = time.monotonic()
        if fresh or now - self._recovered_at > self._policy.window_s:
            self._began, self.used = now, 0

    def next_wait(self) -> float | None:
        """The wait before the next attempt; None once the budget is spent."""
        if self.used >= self._policy.attempts:
            return None
        left_s = self._began + self._policy.window_s - time.monotonic()
        if left_s <= 0:
            return None
        self.used += 1
        return min(backoff_s(self.used - 1), left_s)  # the last attempt at the window's end, not skipped

    def recovered(self) -> None:
        self._recovered_at = time.monotonic()


class RotationClock:
    """When a planned rotation is due: ``max_stream_s`` after the stream opened or, after a rotation
    failed, after a back-off (each try pauses the client; the old stream goes on meanwhile)."""

    def __init__(self, max_stream_s: float | None) -> None:
        self._limit = max_stream_s
        self._failures = 0
        self._due_at = time.monotonic() + (max_stream_s or 0.0)

    def due(self) -> bool:
        return self._limit is not None and time.monotonic() >= self._due_at

    def opened(self) -> None:
        self._failures = 0
        self._due_at = time.monotonic() + (self._limit or 0.0)

    def failed(self) -> None:
        self._failures += 1
        retry_s = min(self._limit or 0.0, ROTATION_RETRY_S * 2 ** min(self._failures - 1, 5))
        self._due_at = time.monotonic() + retry_s
