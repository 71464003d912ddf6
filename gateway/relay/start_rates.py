"""Session starts per API key per second, per replica: a start past its key's rate waits its turn, briefly.

Each start is a Data Flow stream. ``max_sessions`` bounds how many of a key's sessions run at once, not
how fast they begin: short sessions, one after another on many connections (or uploads of a few
milliseconds of audio), could open streams as fast as the replica runs. A key given a
``session_start_rate`` (its GATEWAY_API_KEYS entry) may start that many a second after a burst of its
``max_sessions`` (the replica's when it has none: a fleet's calls that come back at once after a restart
all start). A start past it waits for its turn, at most :data:`START_WAIT_S`; one whose turn is further
off is refused (RateLimited, with the whole seconds after which a retry waits no longer than that).
"""

from __future__ import annotations

import math

from gateway.errors import RateLimited

#: Longest a start waits for its key's turn before it is refused.
START_WAIT_S = 2.0


class StartRates:
    """The keys' start rates and the time to which each key's starts are paid for (a leaky bucket)."""

    def __init__(self, rates: dict[str, tuple[float, int]]) -> None:
        """``rates``: per key name, (starts a second, burst)."""
        self._rates = {key: (per_s, burst) for key, (per_s, burst) in rates.items() if per_s > 0}
        self._paid_to: dict[str, float] = {}  # only keys with a rate: configured, so bounded

    def turn_in(self, key: str | None, now: float) -> float:
        """Seconds until a start of ``key`` may go (0: now), its turn now taken; raises RateLimited when
        the turn is more than :data:`START_WAIT_S` away (the turn is then not taken)."""
        if key is None or (rate := self._rates.get(key)) is None:
            return 0.0
        per_s, burst = rate
        paid_to = max(self._paid_to.get(key, -math.inf), now - burst / per_s) + 1 / per_s
        wait_s = paid_to - now
        if wait_s > START_WAIT_S:
            retry_s = max(1, math.ceil(wait_s - START_WAIT_S))
            raise RateLimited(f"this API key starts sessions faster than its {per_s:g} a second; retry in {retry_s} s",
                              retry_after_s=retry_s)  # fmt: skip
        self._paid_to[key] = paid_to
        return max(0.0, wait_s)
