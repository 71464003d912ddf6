"""The session's own timeline over a series of upstream streams (:mod:`gateway.relay.recovery`): a later
stream's event times shifted by where its audio began, and results the client already had left out."""

from __future__ import annotations

import dataclasses

from gateway.dataflow.messages import DataflowEvent


class Timeline:
    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.base_ms = 0.0  # where the current stream's time 0 is on the session's timeline
        self._finished_ms: dict[int, float] = {}  # per channel: the end of the last final result

    def finished_at(self) -> float:
        """Where the audio is recognised up to on the session's timeline: the end of the last final
        result, on the channel that is furthest behind."""
        return min((self._finished_ms.get(c, 0.0) for c in range(self.channels)), default=0.0)

    def placed(self, item: DataflowEvent, *, recovered: bool) -> DataflowEvent | None:
        """``item`` on the session's timeline; None when the client already had it."""
        if item.end_ms < 0:
            return item
        if self.base_ms:
            start = item.start_ms + round(self.base_ms) if item.start_ms >= 0 else item.start_ms
            item = dataclasses.replace(item, start_ms=start, end_ms=item.end_ms + round(self.base_ms))
        finished = self._finished_ms.get(item.channel)
        if recovered and finished is not None and item.end_ms <= finished:
            return None  # recognised before the recovery: the replay began a little earlier on another channel
        if item.final:
            self._finished_ms[item.channel] = max(finished or 0.0, float(item.end_ms))
        return item
