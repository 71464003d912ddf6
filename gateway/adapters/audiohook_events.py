"""AudioHook ``event`` messages: Data Flow's transcripts as Transcription Connector ``transcript`` entities,
within the rate Genesys takes them at (:class:`SendRate`)."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

from gateway.adapters.audiohook_media import Timeline, duration
from gateway.connections.pace import Pace
from gateway.dataflow.messages import MILESTONE, PARTIAL, DataflowEvent

#: What Genesys takes from an AudioHook server: 5 messages a second, in bursts of up to 25 (as the
#: connectors built for it configure it); past it the client answers ``error`` 429 with ``retryAfter``.
SEND_PER_S: Final = 5.0
SEND_BURST: Final = 25
#: How long partials pause after a 429 without a usable ``retryAfter``, and the longest one honoured.
DEFAULT_BACKOFF_S: Final = 1.0
MAX_BACKOFF_S: Final = 60.0


class SendRate:
    """Partial transcripts within Genesys's rate. A partial that would exceed it, or that comes while the
    client has asked the server to back off (429), is skipped: each partial is the utterance's whole
    hypothesis so far, and the next one or the final replaces it in place (same id). Finals and pongs
    always go, and count."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pace = Pace(SEND_BURST / SEND_PER_S)
        self._held_until = -math.inf
        self.skipped = 0

    def take(self, *, droppable: bool) -> bool:
        """Whether a message may go now (counted if so); only a ``droppable`` one is ever refused."""
        now, cost = self._clock(), 1 / SEND_PER_S
        over = max(self._pace.ahead_s(now), -SEND_BURST / SEND_PER_S) + cost > 1e-9  # (sums of fifths)
        if droppable and (over or now < self._held_until):
            self.skipped += 1
            return False
        self._pace.charge(cost, now)
        return True

    def back_off(self, seconds: float | None) -> None:
        """The client answered 429: no partials for ``retryAfter`` (bounded)."""
        wait = DEFAULT_BACKOFF_S if seconds is None else min(seconds, MAX_BACKOFF_S)
        self._held_until = max(self._held_until, self._clock() + wait)


def transcript_entity(
    item: DataflowEvent, *, timeline: Timeline, channels: int, language: str | None, session_id: str
) -> dict[str, Any] | None:
    """The entity of a partial or final transcript on one of the call's ``channels``; None for any other event."""
    final = item.name == MILESTONE or item.final
    if not item.text or not (final or item.name == PARTIAL) or not 0 <= item.channel < channels:
        return None
    start = timeline.stream_seconds(item.start_ms)
    end = timeline.stream_seconds(max(item.end_ms, item.start_ms))
    alternative: dict[str, Any] = {"confidence": item.confidence}
    if language:
        alternative["languages"] = [language]
    alternative["interpretations"] = [{"type": "display", "transcript": item.text}]
    # Partials and the final of one utterance share its id, so the client replaces them in place.
    utterance = uuid.uuid5(uuid.NAMESPACE_URL, f"audiohook:{session_id}:{item.channel}:{item.group_id}")
    data = {
        "id": str(utterance), "channelId": item.channel, "isFinal": final,
        "offset": duration(start), "duration": duration(end - start), "alternatives": [alternative],
    }  # fmt: skip
    return {"type": "transcript", "data": data}
