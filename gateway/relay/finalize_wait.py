"""How long a finalizing session waits for Data Flow's final result.

The wait is ``GATEWAY_FINALIZE_TIMEOUT_S`` after the client's end of input, and again after each
message from Data Flow (an engine behind real time still works through audio its HTTP/2 window took
long before). Silence in that backlog sends nothing, though: an upload whose last ~2 minutes an engine
at real time still had to work through, with 40 s of hold in them, was given up on in the silence and
every result after it lost. So the first wait also covers the audio Data Flow may not have reached:
what was sent past the last time an event reported on, and past what real time since the stream began
would have let it work through (so a live call, sent in real time, gets none), at most
:data:`BACKLOG_TIMEOUTS` timeouts (a full 4 MB window of 16 kHz audio is 131 s).

However much Data Flow keeps sending, the wait as a whole ends after the audio it may not have reached
at half real time and a timeout, and never before :data:`WHOLE_WAIT_TIMEOUTS` timeouts (330 s by
default): a Data Flow sending partial results or analytics for ever, and never its final result, held
the session, its slot and its client until the stream's deadline (``GATEWAY_MAX_SESSION_S`` later). (A
window of 8 kHz mu-law audio is 524 s: such a backlog is not cut at the 131 s of 16 kHz audio.)
"""

from __future__ import annotations

import math
import time

from gateway.dataflow.messages import DataflowEvent
from gateway.relay.items import Flow

#: The backlog's allowance is at most this many finalize timeouts (150 s at the default 30 s).
BACKLOG_TIMEOUTS = 5
#: The whole wait, however often Data Flow's messages start it again, in finalize timeouts (330 s by default),
#: unless the audio Data Flow may not have reached, at half real time, takes longer.
WHOLE_WAIT_TIMEOUTS = 2 * BACKLOG_TIMEOUTS + 1


class FinalizeWait:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.heard_ms = 0.0  # the latest audio time an event of Data Flow reported on
        self.deadline = 0.0
        self._last_heard = 0.0  # when Data Flow last sent anything (or the input ended)
        self._ended_at, self._latest = 0.0, math.inf  # when the input ended; the wait's end however much comes

    def begin(self, flow: Flow, streamed_s: float, now: float | None = None) -> None:
        """The client's input ended after ``streamed_s`` seconds of streaming, with ``flow`` sent and
        on its way to Data Flow (gRPC may not have taken all of it yet)."""
        now = time.monotonic() if now is None else now
        sent_ms = flow.sent_ms + flow.buffered_ms
        behind_ms = min(sent_ms - self.heard_ms, sent_ms - streamed_s * 1000)
        behind_s = max(0.0, behind_ms) / 1000
        backlog_s = min(behind_s, BACKLOG_TIMEOUTS * self.timeout_s)
        self._last_heard, self.deadline = now, now + self.timeout_s + backlog_s
        whole_s = max(WHOLE_WAIT_TIMEOUTS * self.timeout_s, 2 * behind_s + self.timeout_s)  # at half real time
        self._ended_at, self._latest = now, now + whole_s

    def heard(self, item: object, *, finalizing: bool, now: float | None = None) -> None:
        """Anything from Data Flow: its time noted, and while finalizing the wait starts again."""
        if isinstance(item, DataflowEvent):
            self.heard_ms = max(self.heard_ms, float(max(item.end_ms, item.start_ms)))
        if finalizing:
            now = time.monotonic() if now is None else now
            self._last_heard, self.deadline = now, min(self._latest, max(self.deadline, now + self.timeout_s))

    def silence(self, now: float) -> str:
        """Why the wait was given up on: how long Data Flow has sent nothing (since the input ended, at most),
        or that the whole wait is over while it still sends."""
        if now - self._last_heard < self.timeout_s:
            waited_s = now - self._ended_at
            return f"Data Flow sent no final result within {waited_s:.1f} s of the end of input, though it kept sending"
        return f"Data Flow sent no final result, nor anything for {now - self._last_heard:.1f} s"
