"""A pace: work charged in seconds of a budget that comes back in real time, a burst of it in hand."""

from __future__ import annotations

import math


class Pace:
    """What a client's work has cost so far, as the time by which it is paid for. A client may be
    ``burst_s`` ahead of real time; past that it is :meth:`ahead_s` seconds too early and waits (the
    caller stops reading it: the client is slowed by TCP, nothing it sent is lost)."""

    __slots__ = ("_burst_s", "_paid_to")

    def __init__(self, burst_s: float) -> None:
        self._burst_s = burst_s
        self._paid_to = -math.inf

    def charge(self, seconds: float, now: float) -> float:
        """Count ``seconds`` of work done at ``now``; :meth:`ahead_s` after it."""
        self._paid_to = max(self._paid_to, now - self._burst_s) + seconds
        return self._paid_to - now

    def ahead_s(self, now: float) -> float:
        """How long the client must wait before more of its work is done (≤ 0: none)."""
        return self._paid_to - now
