"""Log lines of odd Data Flow messages (text that is not UTF-8, text that is not JSON): one per burst.

An engine that cuts its transcripts mid-character, or a proxy that answers with something else, may do
it in every session at once. The first such message is logged at once; the ones after it are counted
and told in one line when the window (10 s) ends, and while they go on, one line per window (without
an event loop to time it: when the next one comes after the window). A line says a message's kind and
sizes, never its text (a transcript is customer data).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

WINDOW_S = 10.0


class BurstLog:
    """One kind of WARNING: the first of a burst in its own words, the rest summed once per window with
    ``more`` (``%(count)d`` messages, ``%(amount)d`` summed, ``%(seconds).1f`` the window's length)."""

    def __init__(self, log: logging.Logger, more: str, window_s: float = WINDOW_S) -> None:
        self._log = log
        self._more = more
        self.window_s = window_s
        self._count = 0  # messages not logged yet
        self._amount = 0  # what they add up to (bytes, for instance)
        self._since = float("-inf")  # monotonic time the current window began (none yet)
        self._timer: asyncio.TimerHandle | None = None  # tells a window's count when it ends (in a loop)

    def warn(self, message: str, *args: object, amount: int = 0) -> None:
        now = time.monotonic()
        if now - self._since < self.window_s:
            self._count += 1
            self._amount += amount
            return
        self._tell(now)  # a window no timer told (none ran: no event loop, or the loop ended)
        self._log.warning(message, *args)
        self._open(now)

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
        if self._count:  # they went on: told now, and another window opens
            self._tell(now)
            self._open(now)

    def _tell(self, now: float) -> None:
        if self._count:
            self._log.warning(self._more, {"count": self._count, "amount": self._amount, "seconds": now - self._since})
            self._count = self._amount = 0


class RepairLog:
    """Messages read with invalid UTF-8 replaced, and messages skipped as not JSON objects."""

    def __init__(self, log: logging.Logger, window_s: float = WINDOW_S) -> None:
        self._repairs = BurstLog(
            log, "%(count)d more upstream messages had invalid UTF-8 in their text in the last %(seconds).1f s"
            " (%(amount)d bytes, replaced by U+FFFD)", window_s,
        )  # fmt: skip
        self._skips = BurstLog(
            log, "%(count)d more upstream messages that are not JSON objects were skipped in the last"
            " %(seconds).1f s", window_s,
        )  # fmt: skip

    def repaired(self, kind: str, size: int, invalid: int) -> None:
        """A ``kind`` message of ``size`` bytes was read with ``invalid`` bytes of its text replaced."""
        self._repairs.warn(
            "an upstream %s message of %d bytes had %d invalid UTF-8 bytes in its text: read with them"
            " replaced by U+FFFD", kind, size, invalid, amount=invalid,
        )  # fmt: skip

    def skipped(self, kind: str) -> None:
        """A ``kind`` message whose text is not a JSON object was skipped."""
        self._skips.warn("skipped an upstream %s message that is not a JSON object", kind)
