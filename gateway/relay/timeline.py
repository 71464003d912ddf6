"""The session's own timeline over a series of upstream streams (:mod:`gateway.relay.recovery`): a later
stream's event times shifted by where its audio began, and results the client already had left out."""

from __future__ import annotations

import dataclasses

from gateway.dataflow.messages import DataflowEvent

#: Event names whose last time is kept per channel (Data Flow's names and, echoed back, a client's own:
#: bounded so a client's names cannot grow it; past it, later names are not held back after a recovery).
MAX_NAMES = 64


class Timeline:
    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.base_ms = 0.0  # where the current stream's time 0 is on the session's timeline
        self._finished_ms: dict[int, float] = {}  # per channel: the end of the last final result
        self._sent_ms: dict[tuple[int, str], int] = {}  # per channel and name: the time of the last one placed

    def finished_at(self) -> float:
        """Where the audio is recognised up to on the session's timeline: the end of the last final
        result, on the channel that is furthest behind."""
        return min((self._finished_ms.get(c, 0.0) for c in range(self.channels)), default=0.0)

    def placed(self, item: DataflowEvent, *, recovered: bool) -> DataflowEvent | None:
        """``item`` on the session's timeline; None when the client already had it. An event's time is
        its end, or its start when it has no end (``Speech Started``: EndMsec -1)."""
        if item.start_ms < 0 and item.end_ms < 0:
            return item
        if shift := round(self.base_ms):
            start = item.start_ms + shift if item.start_ms >= 0 else item.start_ms
            end = item.end_ms + shift if item.end_ms >= 0 else item.end_ms
            item = dataclasses.replace(item, start_ms=start, end_ms=end)
        at = item.end_ms if item.end_ms >= 0 else item.start_ms
        finished = self._finished_ms.get(item.channel)
        if recovered and finished is not None and at <= finished:
            return None  # recognised before the recovery: the replay began a little earlier on another channel
        key = (item.channel, item.name)
        last = self._sent_ms.get(key)
        if recovered and not item.final and last is not None and at <= last:
            return None  # the replay's partials and speech starts the client had before the failure
        if last is not None or len(self._sent_ms) < MAX_NAMES:
            self._sent_ms[key] = max(at, last or 0)
        if item.final:
            self._finished_ms[item.channel] = max(finished or 0.0, float(item.end_ms))
        return item
