"""AudioHook ``event`` messages: Data Flow's transcripts as Transcription Connector ``transcript`` entities."""

from __future__ import annotations

import uuid
from typing import Any

from gateway.adapters.audiohook_media import Timeline, duration
from gateway.dataflow.lenient import get
from gateway.dataflow.messages import MILESTONE, PARTIAL, DataflowEvent


def transcript_entity(
    item: DataflowEvent, *, timeline: Timeline, channels: int, language: str | None, session_id: str
) -> dict[str, Any] | None:
    """The entity of a partial or final transcript on one of the call's ``channels``; None for any other event."""
    final = item.name == MILESTONE or item.final
    if not item.text or not (final or item.name == PARTIAL) or not 0 <= item.channel < channels:
        return None
    start = timeline.stream_seconds(item.start_ms)
    end = timeline.stream_seconds(max(item.end_ms, item.start_ms))
    alternative: dict[str, Any] = {"confidence": _confidence(item.data)}
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


def _confidence(data: dict[str, Any]) -> float:
    # Data Flow does not promise a confidence; 1.0 says "final, no score given".
    value = get(data, "Confidence")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 1.0
    return min(max(float(value), 0.0), 1.0)
