"""The log lines of messages read with invalid UTF-8 replaced: one per burst, not one per message.

An engine that cuts its transcripts mid-character may do it in every session at once. The first such
message is logged at once; the ones after it are counted and told in one line when the window (10 s)
ends, and while they go on, one line per window (without an event loop to time it: when the next one
comes after the window). A line says a message's kind and sizes, never its text
(a transcript is customer data).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

WINDOW_S = 10.0


class RepairLog:
    def __init__(self, log: logging.Logger, window_s: float = WINDOW_S) -> None:
        self._log = log
        self.window_s = window_s
        self._messages = 0  # repaired messages not logged yet
        self._bytes = 0  # their invalid bytes
        self._since = float("-inf")  # monotonic time the current window began (none yet)
        self._timer: asyncio.TimerHandle | None = None  # tells a window's count when it ends (in a loop)

    def repaired(self, kind: str, size: int, invalid: int) -> None:
        """A ``kind`` message of ``size`` bytes was read with ``invalid`` bytes of its text replaced."""
        now = time.monotonic()
        if now - self._since < self.window_s:
            self._messages += 1
            self._bytes += invalid
            return
        self._tell(now)  # a window no timer told (none ran: no event loop, or the loop ended)
        self._log.warning(
            "an upstream %s message of %d bytes had %d invalid UTF-8 bytes in its text: read with"
            " them replaced by U+FFFD",
            kind, size, invalid,
        )  # fmt: skip
        self._open(now)

    def _open(self, now: float) -> None:
        self._since = now
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with contextlib.suppress(RuntimeError):  # no running loop: told by the next repair after the window
            self._timer = asyncio.get_running_loop().call_later(self.window_s, self._window_over)

    def _window_over(self) -> None:
        self._timer = None
        now = time.monotonic()
        if self._messages:  # they went on: told now, and another window opens
            self._tell(now)
            self._open(now)

    def _tell(self, now: float) -> None:
        if self._messages:
            self._log.warning(
                "%d more upstream messages had invalid UTF-8 in their text in the last %.1f s (%d bytes, replaced"
                " by U+FFFD)",
                self._messages, now - self._since, self._bytes,
            )  # fmt: skip
            self._messages = self._bytes = 0
