"""The gateway's own message vocabulary (``/v1/stream``, and uploads' NDJSON/SSE/JSON answers).

One place for the shape of ``started``, ``event``, ``ack``, ``response``, ``error``, ``pong``,
``upstream_recovered`` and ``closed``; the AsyncAPI document (``gateway/asyncapi.yaml``) describes the same shapes.
"""

from __future__ import annotations

from typing import Any

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import DataflowEvent, DataflowResponse
from gateway.errors import BadRequest, ErrorCode, GatewayError
from gateway.errors.quoting import clip as clip  # re-exported: the dialects quote through here
from gateway.errors.quoting import quote as quote
from gateway.relay.items import Flow, Recovered, Started

#: A client's language tag is held for the session and repeated in each result some dialects send
#: (jambonz's transcription, AudioHook's transcript entities): BCP 47 tags are far shorter.
MAX_LANGUAGE_CHARS = 64


def language_tag(value: Any) -> str | None:
    """A client's ``language``: a non-empty string of at most MAX_LANGUAGE_CHARS, else None; longer is refused
    (a 30 000-character one made each AudioHook transcript 180 KB)."""
    if not isinstance(value, str) or not value:
        return None
    if len(value) > MAX_LANGUAGE_CHARS:
        message = f"language must be a language tag of at most {MAX_LANGUAGE_CHARS} characters, not {quote(value)}"
        raise BadRequest(message, code=ErrorCode.INVALID_START)
    return value


def audio_format(fmt: AudioFormat) -> dict[str, Any]:
    return {"encoding": fmt.encoding, "sampleRate": fmt.sample_rate, "channels": fmt.channels}


def started(item: Started) -> dict[str, Any]:
    return {
        "type": "started",
        "sessionId": item.session_id,
        "dataflowSessionId": item.dataflow_session_id,
        "audio": audio_format(item.client_format),
        "upstreamAudio": audio_format(item.upstream_format),
    }


def event(item: DataflowEvent, *, raw: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "event",
        "name": item.name,
        "channel": item.channel,
        "startMs": item.start_ms,
        "endMs": item.end_ms,
        "groupId": item.group_id,
        "final": item.final,
        "text": item.text,
        "data": item.data,
    }
    if raw:
        body["raw"] = item.raw
    return body


def ack(flow: Flow) -> dict[str, Any]:
    return {
        "type": "ack",
        "audioMs": flow.audio_ms,
        "sentMs": flow.sent_ms,
        "bufferedMs": flow.buffered_ms,
        "paused": flow.paused,
    }


def response(item: DataflowResponse) -> dict[str, Any]:
    return {"type": "response", "name": item.name, "ok": item.ok, "error": item.error}


def error(err: GatewayError) -> dict[str, Any]:
    return {"type": "error", **err.to_json()}


def pong(ping_id: Any) -> dict[str, Any]:
    return {"type": "pong", "id": ping_id}


def closed(reason: str, audio_ms: float) -> dict[str, Any]:
    return {"type": "closed", "reason": reason, "audioMs": audio_ms}


def recovered(item: Recovered) -> dict[str, Any]:
    """The upstream stream was replaced under the session; the session goes on (events continue on
    the same timeline, nothing recognised is repeated)."""
    return {
        "type": "upstream_recovered", "reason": item.reason, "gapMs": item.gap_ms, "replayedMs": item.replayed_ms,
        "lostMs": item.lost_ms, "attempts": item.attempts,
    }  # fmt: skip
