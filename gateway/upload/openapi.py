"""OpenAPI description of ``POST /v1/recognize``: response models, request body, examples.

The endpoint reads its body itself (streamed), so FastAPI cannot infer the request body: it is
described here by hand. The models document the answers; the endpoint does not validate through them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.routes.openapi import ErrorBody, ErrorDetail

_AUDIO = {"schema": {"type": "string", "format": "binary"}}


class UploadEvent(BaseModel):
    """A Data Flow event, normalised (the same shape as `event` on `/v1/stream`)."""

    model_config = ConfigDict(extra="allow")
    type: str = "event"
    name: str = Field(description="Data Flow's event name: Speech Started, SR Milestone, FinalResult, ...")
    channel: int = Field(description="Audio channel from 0; -1 invalid, -2 all channels.")
    startMs: int
    endMs: int
    groupId: str | None = Field(description="Groups the events of one utterance.")
    final: bool = Field(description="True for the final text of one utterance (SR Milestone).")
    text: str | None
    data: dict[str, Any]
    raw: dict[str, Any] | None = Field(None, description="Data Flow's own event JSON (with ?raw=true).")


class RecognizeResult(BaseModel):
    sessionId: str = Field(description="The gateway's session id (in its logs and metrics).")
    dataflowSessionId: str | None = Field(description="Data Flow's session id.")
    audioMs: float = Field(description="Duration of the uploaded audio in milliseconds.")
    transcript: dict[str, str] = Field(description="Per channel ('0', '1'): the final texts joined by spaces.")
    events: list[UploadEvent] = Field(
        description="Every event in order (interim ones only with ?interim=true), while their JSON fits in "
        "GATEWAY_CLIENT_OUTBOX_BYTES; the later ones are left out and counted in eventsDropped."
    )
    eventsDropped: int = Field(0, description="Events left out of `events` past that bound (the transcript is whole).")
    warnings: list[ErrorDetail] = Field(description="Non-fatal problems, e.g. misaligned_audio.")

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "sessionId": "3f2a9c0d7e1b4c55a0d6b1f2e3c4d5e6",
                "dataflowSessionId": "sim-6b1f2e3c",
                "audioMs": 4260.0,
                "transcript": {"0": "123 456"},
                "events": [
                    {"type": "event", "name": "Speech Started", "channel": 0, "startMs": 0, "endMs": -1,
                     "groupId": "0-1", "final": False, "text": None, "data": {}},
                    {"type": "event", "name": "SR Milestone", "channel": 0, "startMs": 0, "endMs": 1160,
                     "groupId": "0-1", "final": True, "text": "123", "data": {"Text": "123"}},
                ],
                "warnings": [],
                "eventsDropped": 0,
            }
        }
    )  # fmt: skip


STREAM_EXAMPLE: dict[str, Any] = {
    "application/x-ndjson": {
        "schema": {"type": "string"},
        "example": '{"type":"started","sessionId":"3f2a…","dataflowSessionId":"sim-6b1f…","audio":{…},'
        '"upstreamAudio":{…}}\n'
        '{"type":"event","name":"SR Milestone","channel":0,"text":"123","final":true,…}\n'
        '{"type":"progress","bytes":65536,"audioMs":4096.0,"sentMs":3900.0}\n'
        '{"type":"result","sessionId":"3f2a…","audioMs":4260.0,"transcript":{"0":"123 456"},"warnings":[]}\n',
    },
    "text/event-stream": {
        "schema": {"type": "string"},
        "example": 'event: started\ndata: {"type":"started",…}\n\nevent: result\ndata: {"type":"result",…}\n\n',
    },
}


def _error(description: str, code: str, message: str, retryable: bool = False) -> dict[str, Any]:
    example = {"error": {"code": code, "message": message, "retryable": retryable}}
    return {"model": ErrorBody, "description": description, "content": {"application/json": {"example": example}}}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _error("No valid API key or token (when authentication is on).", "unauthorized", "unknown API key"),
    403: _error("The key may not use this project, or the origin is not allowed.", "forbidden",
                "this key may not use project 'other'"),
    408: _error("The audio header did not arrive in time, or a session limit was reached.", "start_timeout",
                "the audio header did not arrive within 10 s"),
    413: _error("The body is over GATEWAY_MAX_UPLOAD_BYTES (found while streaming; Data Flow is cancelled).",
                "upload_too_large", "the upload is larger than the limit of 1073741824 bytes"),
    415: _error("Unknown or undecodable audio format (unsupported_audio_format), or a Content-Encoding other "
                "than gzip or deflate (unsupported_content_encoding, with Accept-Encoding).",
                "unsupported_audio_format",
                "unrecognised audio format: send WAV, AU, FLAC, Ogg (Opus/Vorbis), MP3, WebM or AIFF, ..."),
    422: _error("Bad parameters (query, headers, Parameters part, multipart body), a gzip or deflate body that "
                "does not inflate (invalid_content_encoding), or audio costing more CPU to "
                "decode than GATEWAY_UPLOAD_DECODE_CPU_SHARE allows (audio_too_costly, with the result so far).",
                "invalid_parameters",
                "sampleRate is required for headerless pcm16 audio"),
    429: _error("This API key is at its session limit.", "rate_limited", "retry later", True),
    502: _error("Data Flow rejected the session (its message is included) or failed.", "upstream_rejected",
                "Data Flow rejected the session: unknown project", False),
    503: _error("Data Flow is unavailable, or this replica is full or draining (see Retry-After).",
                "capacity_exceeded", "the gateway is at its capacity of 500 sessions; retry later", True),
    504: _error("Data Flow did not answer in time.", "upstream_timeout", "Data Flow did not answer Start within 10 s",
                True),
}  # fmt: skip

REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "description": "The recording, streamed. The container is recognised from its first bytes (the Content-Type "
    "is not trusted): WAV (PCM16, float, mu-law, A-law, ADPCM ...), AU, FLAC, Ogg Opus/Vorbis, MP3, AAC, WebM, AIFF. "
    "Headerless audio needs ?encoding= and ?sampleRate= or `audio/L16;rate=8000` (big-endian) or `audio/basic` "
    "(8 kHz mu-law). Or Data Flow's HTTP batch multipart: `Parameters` (Start JSON) then `Audio` (the file). "
    "Either may be sent with `Content-Encoding: gzip` or `deflate`: it is inflated as it streams, within the size cap.",
    "content": {
        **{media: _AUDIO for media in ("audio/wav", "audio/x-wav", "audio/basic", "audio/L16", "audio/flac",
                                       "audio/ogg", "audio/mpeg", "audio/webm", "application/octet-stream")},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["Audio"],
                "properties": {
                    "Parameters": {"type": "string", "description": "Start JSON without MessageName/Token/Tenant",
                                   "example": '{"Language":"en-US","Settings":{"ChannelTags":["customer","agent"]}}'},
                    "Audio": {"type": "string", "format": "binary", "description": "The recording (e.g. a WAV file)"},
                },
            },
            "encoding": {"Parameters": {"contentType": "application/json"}, "Audio": {"contentType": "audio/*"}},
        },
    },
}  # fmt: skip
