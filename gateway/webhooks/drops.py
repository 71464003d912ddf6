"""The log lines of dropped webhooks: one per burst, not one per webhook.

A receiver that is down makes every webhook fail: one WARNING each was up to ~17 lines a second (1000
pending, a 60 s retry window), and as many when the pending queue stays full. The first drop is logged
at once, in its own words; the drops after it are counted by reason and told in one line when the window
(10 s) ends, and while they go on, one line per window. The metric counts each drop (the caller does);
these lines only say so. A line names the gateway's own webhook ids and numbers, never a URL (it may
hold a token) or anything a client sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

WINDOW_S = 10.0


class DropLog:
    def __init__(self, log: logging.Logger, window_s: float = WINDOW_S) -> None:
        self._log = log
        self.window_s = window_s
        self._counts: Counter[str] = Counter()  # drops not logged yet, by reason
        self._since = 0.0  # loop time the current window began
        self._timer: asyncio.TimerHandle | None = None  # set while a window is open

    def dropped(self, reason: str, message: str, *args: object) -> None:
        """One webhook dropped for ``reason`` (a fixed phrase): logged as ``message % args`` when no window is
        open (and one opens), else counted for the window's line."""
        if self._timer is None:
            self._log.warning(message, *args)
            self._open()
        else:
            self._counts[reason] += 1

    def close(self) -> None:
        """Tell what the open window counted so far (at shutdown); the next drop is logged at once."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._counts:
            self._tell()

    def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self._since = loop.time()
        self._timer = loop.call_later(self.window_s, self._window_over)

    def _window_over(self) -> None:
        self._timer = None
        if self._counts:  # drops went on: told now, and the next line waits for the end of another window
            self._tell()
            self._open()

    def _tell(self) -> None:
        took = asyncio.get_running_loop().time() - self._since
        reasons = ", ".join(f"{reason}: {count}" for reason, count in self._counts.most_common())
        self._log.warning("%d more webhooks dropped in the last %.1f s (%s); the metric counts each",
                          self._counts.total(), took, reasons)  # fmt: skip
        self._counts.clear()
