"""When a remembered key (a spent token's ``jti``, a used nonce) may be forgotten: once its signature can no
longer verify, by the wall clock that verifies it, and not before that much time has really passed.

Signatures expire on the wall clock (epoch seconds), which steps: NTP, a resumed VM. Forgetting on it alone
let a step forward drop a spent single-use token whose ``exp`` was still ahead once the clock stepped back,
and the token started a second session. So each key also gets a monotonic deadline, taken when it is added:
it is forgotten when both have passed (a wall clock that went back re-arms the deadline).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator


class Expiries:
    def __init__(self) -> None:
        self._heap: list[tuple[float, float, str]] = []  # (monotonic deadline, epoch until, key)

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, key: str, until: float, now: float, mono: float | None = None) -> None:
        """``key`` may be forgotten from ``until`` (epoch seconds; ``now`` is the wall clock's reading)."""
        mono = time.monotonic() if mono is None else mono
        heapq.heappush(self._heap, (mono + max(until - now, 0.0), until, key))

    def due(self, now: float, mono: float | None = None) -> Iterator[tuple[str, float]]:
        """(key, until) of every key both clocks say may be forgotten; its owner checks ``until`` is the
        key's current one (a key added again has a later entry)."""
        mono = time.monotonic() if mono is None else mono
        while self._heap and self._heap[0][0] <= mono:
            _, until, key = self._heap[0]
            if now < until:  # the wall clock went back: the signature verifies again for this long
                heapq.heapreplace(self._heap, (mono + until - now, until, key))
                continue
            heapq.heappop(self._heap)
            yield key, until
