"""Audio seconds per API key per minute, per replica: the budgets sessions charge as their audio is accepted."""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque


class AudioBudgets:
    """Audio seconds per key per minute (sliding window, per replica), charged as audio is accepted.

    Each key keeps its charges and their running total, so a charge and a check cost O(1) (amortised):
    they happen for every chunk of audio a session accepts.
    """

    WINDOW_S = 60.0

    def __init__(self) -> None:
        self._spent: dict[str, deque[tuple[float, float]]] = defaultdict(deque)
        self._totals: dict[str, float] = defaultdict(float)

    def _expire(self, key: str, now: float) -> None:
        window = self._spent.get(key)
        while window and window[0][0] < now - self.WINDOW_S:
            self._totals[key] -= window.popleft()[1]
        if window is not None and not window:  # no empty entries left behind per key ever seen
            del self._spent[key]
            self._totals.pop(key, None)

    def remaining(self, key: str, per_minute: float) -> float:
        self._expire(key, time.monotonic())
        return per_minute - self._totals.get(key, 0.0)

    def spend(self, key: str, seconds: float) -> None:
        now = time.monotonic()
        self._expire(key, now)
        self._spent[key].append((now, seconds))
        self._totals[key] += seconds

    def retry_after_s(self, key: str, per_minute: float) -> int:
        """Whole seconds until some of the budget is back (at least 1)."""
        now = time.monotonic()
        self._expire(key, now)
        excess = self._totals.get(key, 0.0) - per_minute
        for at, seconds in self._spent.get(key, ()):
            excess -= seconds
            if excess < 0:
                return max(1, math.ceil(at + self.WINDOW_S - now))
        return 1


class KeyBudget:
    """One key's audio budget, as a session charges it (``relay.limits.AudioBudget``)."""

    def __init__(self, budgets: AudioBudgets, key: str, per_minute: float) -> None:
        self._budgets, self._key, self._per_minute = budgets, key, per_minute

    def spend(self, seconds: float) -> bool:
        self._budgets.spend(self._key, seconds)
        return self._budgets.remaining(self._key, self._per_minute) > 0

    def retry_after_s(self) -> int:
        return self._budgets.retry_after_s(self._key, self._per_minute)
