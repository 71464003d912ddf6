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


_EXAMPLE_EVENTS: list[Any] = [
    {"type": "event", "name": "SR Milestone", "channel": 0, "startMs": 0, "endMs": 1000,
     "groupId": "0-1", "final": True, "text": "123", "data": {"Text": "123"}},
    {"type": "event", "name": "SR Milestone", "channel": 0, "startMs": 1380, "endMs": 2380,
     "groupId": "0-2", "final": True, "text": "456", "data": {"Text": "456"}},
]  # fmt: skip


class RecognizeResult(BaseModel):
    sessionId: str = Field(description="The gateway's session id (in its logs and metrics).")
    dataflowSessionId: str | None = Field(description="Data Flow's session id.")
    audioMs: float = Field(description="Duration of the uploaded audio in milliseconds.")
    transcript: dict[str, str] = Field(description="Per channel ('0', '1'): the final texts joined by spaces.")
    events: list[UploadEvent] = Field(
        description="Every event in order (interim ones only with ?interim=true), while their JSON fits in "
        "GATEWAY_CLIENT_OUTBOX_BYTES; the later ones are left out and counted in eventsDropped. Events without "
        'text (Speech Started, Speech Ended, FinalResult) carry `"text": null`.'
    )
    eventsDropped: int = Field(
        0, description="Events left out of `events` past that bound (the transcript is not cut)."
    )
    transcriptTruncated: bool | None = Field(
        None,
        description="Present (true) only when the transcript passed GATEWAY_MAX_TRANSCRIPT_BYTES (UTF-8, all "
        "channels): the text after that point is left out of `transcript`; `events` still carry every result.",
    )
    transcriptDroppedBytes: int | None = Field(None, description="With transcriptTruncated: the UTF-8 bytes left out.")
    warnings: list[ErrorDetail] = Field(
        description="Non-fatal problems, e.g. misaligned_audio, header_size_mismatch, undecodable_audio_skipped."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "sessionId": "3f2a9c0d7e1b4c55a0d6b1f2e3c4d5e6",
                "dataflowSessionId": "sim-6b1f2e3c",
                "audioMs": 3060.0,
                "transcript": {"0": "123 456"},
                "events": _EXAMPLE_EVENTS,
                "warnings": [],
                "eventsDropped": 0,
            }
        }
    )


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


def _example(code: str, message: str, retryable: bool = False, **result: object) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "retryable": retryable}, **result}


def _header(description: str, required: bool = False, kind: str = "string") -> dict[str, Any]:
    return {"description": description, "required": required, "schema": {"type": kind}}


_RETRY_AFTER = "Seconds to wait before retrying."


def _error(
    description: str, examples: dict[str, dict[str, Any]], *, headers: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A documented error status: the error envelope (an open object: an error that keeps the result so far
    adds the fields of RecognizeResult to it), one named example per code, and the header fields sent."""
    content = {"application/json": {"examples": {code: {"value": value} for code, value in examples.items()}}}
    response: dict[str, Any] = {"model": ErrorBody, "description": description, "content": content}
    if headers:
        response["headers"] = headers
    return response


_PARTIAL: dict[str, Any] = {
    "sessionId": "ffad7f79cd7044c4bda3f632c0538102",
    "dataflowSessionId": "sim-8fec48b0",
    "transcript": {"0": "123 456"},
    "events": _EXAMPLE_EVENTS,
    "warnings": [],
    "eventsDropped": 0,
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _error("No credential (`missing_credential`), or one the gateway does not know (`invalid_credential`), or a "
                "browser token that expired (`token_expired`) or was already used (`token_reused`), when "
                "authentication is on (GATEWAY_AUTH=required).",
                {"missing_credential": _example("missing_credential",
                                                "a credential is required (API key or browser token)"),
                 "invalid_credential": _example("invalid_credential", "unknown API key")}),
    403: _error("The credential may not run this project (`project_not_allowed`), or the origin is not allowed "
                "(`origin_not_allowed`, `origin_mismatch`).",
                {"project_not_allowed": _example("project_not_allowed",
                                                 "this credential may not run project 'other'")}),
    405: _error("Any method but POST on this path; `Allow: POST` names the one it takes.",
                {"method_not_allowed": _example("method_not_allowed", "this path does not take that method")},
                headers={"Allow": _header("The methods the path takes: `POST`.", required=True)}),
    408: _error("The audio header, or a multipart body's Audio part, did not arrive within GATEWAY_START_TIMEOUT_S "
                "(`start_timeout`), or an Audio part held for its Parameters got no byte for GATEWAY_IDLE_TIMEOUT_S "
                "(`idle_timeout`). A session limit reached after Data Flow's session started also carries the result "
                "so far, as 413 `audio_too_long` does.",
                {"start_timeout": _example("start_timeout", "the audio header did not arrive within 10 s")}),
    413: _error("The body is over GATEWAY_MAX_UPLOAD_BYTES (`upload_too_large`; found from Content-Length at once, "
                "or while streaming: Data Flow is cancelled), or its decoded audio is longer than "
                "GATEWAY_MAX_SESSION_S or the key's max_session_s (`audio_too_long`: the audio up to the limit was "
                "recognised, and the body is `error` plus that result, the fields of RecognizeResult: sessionId, "
                "dataflowSessionId, audioMs, transcript, events, eventsDropped, warnings).",
                {"upload_too_large": _example("upload_too_large",
                                              "the upload is larger than the limit of 1073741824 bytes"),
                 "audio_too_long": _example("audio_too_long",
                                            "the audio is longer than the limit of 3 s; the rest was not sent",
                                            audioMs=3000.0, **_PARTIAL)}),
    415: _error("Unknown or undecodable audio format (`unsupported_audio_format`), or a Content-Encoding other "
                "than gzip or deflate (`unsupported_content_encoding`, with `Accept-Encoding: gzip, deflate`).",
                {"unsupported_audio_format": _example(
                    "unsupported_audio_format",
                    "unrecognised audio format: send WAV, AU, FLAC, Ogg (Opus/Vorbis), MP3, WebM or AIFF, ..."),
                 "unsupported_content_encoding": _example(
                    "unsupported_content_encoding",
                    "unsupported Content-Encoding 'br': send the body uncoded, or coded once with gzip or deflate")},
                headers={"Accept-Encoding": _header("The codings the upload takes, `gzip, deflate` (with "
                                                    "`unsupported_content_encoding` only).")}),
    422: _error("Bad parameters (query, headers, Parameters part, multipart body), a gzip or deflate body that "
                "does not inflate (`invalid_content_encoding`), or audio costing more CPU to "
                "decode than GATEWAY_UPLOAD_DECODE_CPU_SHARE allows (`audio_too_costly`, with the result so far).",
                {"invalid_parameters": _example("invalid_parameters",
                                                "sampleRate is required for headerless pcm16 audio")}),
    429: _error("A key's or an address's quota (retryable, see Retry-After): the key is at its concurrent-session "
                "limit, or too many single-use tokens are in use on this replica (`rate_limited`, Retry-After: 60), or "
                "past its session start rate (`rate_limited`, Retry-After: the seconds until a start waits at most "
                "2 s); "
                "the key's audio budget for the last minute is spent (`audio_budget_spent`, Retry-After: the seconds "
                "until it refills; spent during the upload, the body also carries the result so far); too many "
                "failed credentials from this address (`auth_throttled`, Retry-After: the seconds left).",
                {"rate_limited": _example("rate_limited",
                                          "this API key already has its maximum of 2 concurrent sessions", True),
                 "audio_budget_spent": _example("audio_budget_spent",
                                                "this key's audio budget for the last minute is spent; retry in 41 s",
                                                True),
                 "auth_throttled": _example("auth_throttled",
                                            "too many failed credentials from this address; retry in 60 s", True)},
                headers={"Retry-After": _header(_RETRY_AFTER, required=True, kind="integer")}),
    502: _error("Data Flow rejected the session (`upstream_rejected`, with its message; not retryable) or refused "
                "the gateway's own credential (`upstream_auth_failed`, retryable: Retry-After: 1), or failed "
                "otherwise (`upstream_error`, `upstream_protocol_error`).",
                {"upstream_rejected": _example("upstream_rejected",
                                               "Data Flow rejected the session: unknown project"),
                 "upstream_auth_failed": _example(
                    "upstream_auth_failed",
                    "Data Flow refused the gateway's credential (gRPC UNAUTHENTICATED: token expired)", True)},
                headers={"Retry-After": _header(_RETRY_AFTER + " Sent when the error is retryable "
                                                "(`upstream_auth_failed`).", kind="integer")}),
    503: _error("Data Flow is unavailable (`upstream_unavailable`), or this replica is full (`capacity_exceeded`) "
                "or draining (`going_away`); retryable, see Retry-After.",
                {"capacity_exceeded": _example("capacity_exceeded",
                                               "the gateway is at its capacity of 500 sessions; retry later", True)},
                headers={"Retry-After": _header(_RETRY_AFTER, required=True, kind="integer")}),
    504: _error("Data Flow did not answer in time (`upstream_timeout`); retryable, see Retry-After.",
                {"upstream_timeout": _example("upstream_timeout", "Data Flow did not answer Start within 10 s", True)},
                headers={"Retry-After": _header(_RETRY_AFTER, required=True, kind="integer")}),
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
