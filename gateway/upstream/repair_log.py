"""Log lines of odd Data Flow messages (text not UTF-8, text not JSON, a type not known): one per burst.

An engine that cuts its transcripts mid-character, or a proxy that answers with something else, may do
it in every session at once. The first such message is logged at once; the ones after it are counted
and told in one line when the window (10 s) ends, and while they go on, one line per window (without
an event loop to time it: when the next one comes after the window). A line says a message's kind and
sizes, never its text (a transcript is customer data).
"""

from __future__ import annotations

import logging

from gateway.logs.bursts import WINDOW_S, BurstLog


class RepairLog:
    """Messages read with invalid UTF-8 replaced, and messages skipped: not JSON objects, or of unknown types."""

    def __init__(self, log: logging.Logger, window_s: float = WINDOW_S) -> None:
        self._repairs = BurstLog(
            log, "%(count)d more upstream messages had invalid UTF-8 in their text in the last %(seconds).1f s"
            " (%(amount)d bytes, replaced by U+FFFD)", window_s,
        )  # fmt: skip
        self._skips = BurstLog(
            log, "%(count)d more upstream messages that are not JSON objects were skipped in the last"
            " %(seconds).1f s", window_s,
        )  # fmt: skip
        self._unknown = BurstLog(
            log, "%(count)d more upstream messages of content types the wire contract does not name were skipped"
            " in the last %(seconds).1f s (by type: %(reasons)s)", window_s,
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

    def unknown(self, number: int, size: int) -> None:
        """A message of ``size`` bytes of content type ``number``, which the contract does not name, was skipped."""
        self._unknown.warn(
            "skipped an upstream message of %d bytes of content type %d, which the wire contract does not name",
            size, number, reason=str(number),
        )  # fmt: skip

    def close(self) -> None:
        """Tells what the open windows counted (the upstream client closes)."""
        self._repairs.close()
        self._skips.close()
        self._unknown.close()
