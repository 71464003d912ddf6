"""WARNINGs that come in bursts, logged a burst at a time: the first at once in its own words, the rest
counted and told in one line per window.

A receiver that is down makes every webhook fail, and an engine that cuts its transcripts mid-character
may do it in every session at once: one line each was a flood (~17 webhook drops a second). The first
occurrence is logged at once; the ones in the window (10 s) after it are counted, by reason and with an
amount (bytes, say), and told in one line when the window ends; while they go on, one line per window.
Without a running event loop no timer tells a window: the next occurrence after it does. ``close()``
tells what is still counted (at shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter

WINDOW_S = 10.0


class BurstLog:
    """One kind of WARNING (or of line at ``level``). ``more`` is the window's line, a %-format of ``count``
    (occurrences not logged yet), ``amount`` (what they add up to), ``seconds`` (the window's length) and
    ``reasons`` ("reason: n, …", the most frequent first)."""

    def __init__(
        self, log: logging.Logger, more: str, window_s: float = WINDOW_S, *, level: int = logging.WARNING
    ) -> None:
        self._log, self._level = log, level
        self._more = more
        self.window_s = window_s
        self._reasons: Counter[str] = Counter()  # occurrences not logged yet
        self._amount = 0
        self._since = float("-inf")  # monotonic time the current window began (none yet)
        self._timer: asyncio.TimerHandle | None = None  # tells a window's count when it ends (in a loop)

    def warn(self, message: str, *args: object, reason: str = "", amount: int = 0) -> None:
        """Logs ``message % args`` when no window is open (and opens one), else counts it."""
        now = time.monotonic()
        # In a loop the window lasts until its timer tells it (however late a busy loop runs it).
        if self._timer is not None or now - self._since < self.window_s:
            self._reasons[reason] += 1
            self._amount += amount
            return
        self._tell(now)  # a window no timer told (none ran: no event loop, or the loop ended)
        self._log.log(self._level, message, *args)
        self._open(now)

    def close(self) -> None:
        """Tells what the open window counted so far; the next occurrence is logged at once."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._tell(time.monotonic())
        self._since = float("-inf")

    def _open(self, now: float) -> None:
        self._since = now
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with contextlib.suppress(RuntimeError):  # no running loop: told by the next one after the window
            self._timer = asyncio.get_running_loop().call_later(self.window_s, self._window_over)

    def _window_over(self) -> None:
        self._timer = None
        now = time.monotonic()
        if self._reasons:  # they went on: told now, and another window opens
            self._tell(now)
            self._open(now)

    def _tell(self, now: float) -> None:
        if not self._reasons:
            return
        reasons = ", ".join(f"{reason}: {count}" for reason, count in self._reasons.most_common())
        count, seconds = self._reasons.total(), now - self._since
        told = {"count": count, "amount": self._amount, "seconds": seconds, "reasons": reasons}
        self._log.log(self._level, self._more, told)
        self._reasons.clear()
        self._amount = 0
