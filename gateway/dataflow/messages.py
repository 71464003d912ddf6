"""Data Flow's JSON messages: written exactly (current dialect), read tolerantly (both dialects).

Reading matches keys without regard to case, ``-`` and ``_``, accepts numbers given as strings,
and events bare or wrapped as ``{"Event": {...}}``. No protobuf here: the legacy WebSocket adapter
and the simulator use this module as well as the upstream client.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.audio.format import DATAFLOW_ENCODINGS, AudioFormat, to_dataflow_encoding
from gateway.dataflow.lenient import as_dict, as_int, declared_int, get, norm_key
from gateway.errors import AudioFormatError, InvalidMessage, MessageTooBig

MILESTONE = "SR Milestone"
PARTIAL = "SR Partial"
FINAL_RESULT = "FinalResult"


def message_name(obj: Mapping[str, Any]) -> str:
    """Normalised message kind: 'start', 'update', 'startresponse', ... ('' when absent)."""
    name = get(obj, "MessageName", "message-name", "type")
    return norm_key(name) if isinstance(name, str) else ""


# --- client -> server -----------------------------------------------------------------------------


@dataclass(slots=True)
class StartRequest:
    """A Start in neutral form; Token and Tenant are never part of it (the gateway injects them)."""

    project: str
    audio: AudioFormat
    language: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    call_properties: dict[str, Any] | None = None
    output_encoding: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_START_KNOWN = {
    norm_key(k)
    for k in (
        "MessageName", "ProjectName", "Project", "Tenant", "TenantId", "Token", "Audio",
        "Language", "Settings", "CallProperties", "ca",
    )
}  # fmt: skip


def to_json(message: Mapping[str, Any], *, limit: int | None = None) -> str:
    """A message for Data Flow as compact JSON text, other than ASCII as UTF-8 (a Turkish letter is 2 bytes,
    not a 6-byte escape); escaped only when it holds a lone surrogate, which UTF-8 cannot carry. Python's
    parser takes ``NaN``, ``Infinity`` and ``1e999`` from a client and its encoder writes them back, which
    is no JSON: refused here, in the client's words. Over ``limit`` UTF-8 bytes: :class:`MessageTooBig`."""
    try:
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        size = utf8_size(text)
    except UnicodeEncodeError:
        text = json.dumps(message, separators=(",", ":"))
        size = len(text)
    except ValueError:
        raise InvalidMessage("the message holds NaN or Infinity, which JSON has no numbers for") from None
    if limit is not None and size > limit:
        raise MessageTooBig(f"a control message of {size} bytes is over the limit of {limit}; not sent")
    return text


def utf8_size(text: str) -> int:
    """Bytes of ``text`` as UTF-8 (raises UnicodeEncodeError for a lone surrogate)."""
    return len(text) if text.isascii() else len(text.encode())


def build_start(request: StartRequest, *, token: str, tenant: str) -> dict[str, Any]:
    audio: dict[str, Any] = {
        "Encoding": to_dataflow_encoding(request.audio.encoding),
        "SampleRate": request.audio.sample_rate,
        "ChannelCount": request.audio.channels,
    }
    if request.output_encoding:
        audio["Output"] = {"Encoding": request.output_encoding}
    message: dict[str, Any] = {"MessageName": "Start", "ProjectName": request.project}
    if tenant:
        message["Tenant"] = tenant
    message["Token"] = token
    message["Audio"] = audio
    if request.language:
        message["Language"] = request.language
    if request.settings:
        message["Settings"] = request.settings
    if request.call_properties:
        message["CallProperties"] = request.call_properties
    message.update({k: v for k, v in request.extra.items() if norm_key(k) not in _START_KNOWN})
    return message


def build_request(name: str, **fields: Any) -> dict[str, Any]:
    return {"MessageName": name, **fields}


def normalised(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` keyed by :func:`norm_key`, for a message read field by field: one pass over its keys,
    where each ``get`` of a key not spelled exactly would normalise them all again (a client's Start
    of thousands of junk keys cost a dozen passes)."""
    return {norm_key(str(k)): v for k, v in obj.items()}


def _first(keys: Mapping[str, Any], *names: str) -> Any:
    """The value of the first of ``names`` (normalised already) in ``keys``, a :func:`normalised` map."""
    return next((keys[name] for name in names if name in keys), None)


def parse_audio(obj: Mapping[str, Any], *, default: AudioFormat) -> AudioFormat:
    """Audio block of a Start; missing values fall back to ``default`` (legacy clients omit some), values
    that are no number are refused."""
    keys = normalised(obj)
    encoding_name = keys.get("encoding")
    if encoding_name is None:
        encoding = default.encoding
    elif isinstance(encoding_name, str) and norm_key(encoding_name) in DATAFLOW_ENCODINGS:
        encoding = DATAFLOW_ENCODINGS[norm_key(encoding_name)]
    else:
        raise AudioFormatError("Audio.Encoding must be pcm, ulaw or alaw")
    rate = declared_int(_first(keys, "samplerate", "rate"), default.sample_rate, name="Audio.SampleRate")
    channels = declared_int(_first(keys, "channelcount", "channels"), default.channels, name="Audio.ChannelCount")
    return AudioFormat(encoding, rate, channels).validate()


def parse_start(
    obj: Mapping[str, Any], *, default_audio: AudioFormat, project: str = ""
) -> tuple[StartRequest, str, str]:
    """Read a Start in either dialect; returns (request, client token, client tenant). Work linear in its
    keys: they are normalised once."""
    keys = normalised(obj)
    name = _first(keys, "projectname", "project")
    chosen = name if isinstance(name, str) and name else project
    audio_keys = normalised(as_dict(keys.get("audio")))
    audio = parse_audio(audio_keys, default=default_audio)
    settings = as_dict(keys.get("settings"))
    legacy_ca = as_dict(keys.get("ca"))
    call_properties = as_dict(keys.get("callproperties")) or legacy_ca or None
    language = keys.get("language")
    output = as_dict(audio_keys.get("output"))
    request = StartRequest(
        project=chosen,
        audio=audio,
        language=language if isinstance(language, str) and language else None,
        settings=settings,
        call_properties=call_properties,
        output_encoding=get(output, "Encoding"),
        extra={k: v for k, v in obj.items() if norm_key(k) not in _START_KNOWN},
    )
    token = keys.get("token")
    tenant = _first(keys, "tenant", "tenantid")
    return request, str(token) if token is not None else "", str(tenant) if tenant is not None else ""


# --- server -> client -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataflowEvent:
    name: str
    channel: int
    start_ms: int
    end_ms: int
    group_id: str | None
    tags: list[Any]
    data: dict[str, Any]
    raw: dict[str, Any]
    wire_bytes: int = 0  # the size Data Flow sent it in (what holding it for a client costs, roughly)

    @property
    def text(self) -> str | None:
        text = get(self.data, "Text")
        return text if isinstance(text, str) else None

    @property
    def final(self) -> bool:
        """True for the final text of one utterance (SR Milestone, or legacy 'recognized')."""
        if self.name == MILESTONE:
            return True
        attributes = get(self.data, "text_attributes")
        return isinstance(attributes, str) and "recognized" in attributes.lower()

    @property
    def confidence(self) -> float:
        """The score, 0-1, every dialect reports. Data Flow does not promise one: 1.0 says "no score given".
        A number past 1 is read as a percentage (engines that score 0-100); past 100, negative or junk, none."""
        value = get(self.data, "Confidence")
        if isinstance(value, bool):
            return 1.0
        try:
            score = float(value)
        except (TypeError, ValueError):
            return 1.0
        if not 0.0 <= score <= 100.0:  # NaN too
            return 1.0
        return score / 100.0 if score > 1.0 else score


#: Event names Data Flow documents. Others (custom events echoed back, new kinds) are passed through,
#: but metrics count them as ``other``: a name a client can choose never becomes a label value.
KNOWN_EVENT_NAMES: frozenset[str] = frozenset(
    {MILESTONE, PARTIAL, FINAL_RESULT, "Speech Started", "Speech Ended", "Start of TTS Fragment", "End of TTS Fragment"}
)
_CANONICAL = {
    norm_key(n).replace(" ", ""): n for n in (MILESTONE, PARTIAL, FINAL_RESULT, "Speech Started", "Speech Ended")
}


def _canonical_event_name(name: str) -> str:
    # Legacy servers may spell names in other cases; map the well-known ones to the documented form.
    return _CANONICAL.get(norm_key(name).replace(" ", ""), name)


def parse_event(obj: Mapping[str, Any], wire_bytes: int = 0) -> DataflowEvent:
    inner = get(obj, "Event")
    body: Mapping[str, Any] = inner if isinstance(inner, Mapping) else obj
    name = get(body, "Name")
    group = get(body, "GroupId", "group-id")
    tags = get(body, "Tags")
    return DataflowEvent(
        name=_canonical_event_name(name) if isinstance(name, str) else "",
        channel=as_int(get(body, "Channel"), -1),
        start_ms=as_int(get(body, "StartMsec", "start-msec", "start-ms"), -1),
        end_ms=as_int(get(body, "EndMsec", "end-msec", "end-ms"), -1),
        group_id=str(group) if group is not None else None,
        tags=list(tags) if isinstance(tags, list) else [],
        data=as_dict(get(body, "Data")),
        raw=dict(obj),
        wire_bytes=wire_bytes,
    )


@dataclass(frozen=True, slots=True)
class DataflowResponse:
    name: str  # canonical: StartResponse, UpdateResponse, FinalizeResponse, StopResponse, or as sent
    ok: bool
    error: str | None
    session_id: str | None
    raw: dict[str, Any]


_RESPONSE_NAMES = {norm_key(n): n for n in ("StartResponse", "UpdateResponse", "FinalizeResponse", "StopResponse")}


def parse_response(obj: Mapping[str, Any]) -> DataflowResponse:
    name = message_name(obj)
    result = get(obj, "operation-result", "OperationResult", "Result")
    error_text = get(obj, "ErrorMessage", "error-message", "Error")
    if result is None:
        ok = not error_text
    else:
        ok = isinstance(result, str) and result.strip().lower() == "success"
    error: str | None = None
    if not ok:
        error = str(error_text or result or "request failed")
    session = get(obj, "SessionId", "session-id", "session")
    return DataflowResponse(
        name=_RESPONSE_NAMES.get(name, name),
        ok=ok,
        error=error,
        session_id=str(session) if session is not None else None,
        raw=dict(obj),
    )


# --- audio from Data Flow --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpstreamAudio:
    """Audio sent back by Data Flow (e.g. TTS), 16-bit PCM without header."""

    data: bytes


UpstreamItem = DataflowEvent | DataflowResponse | UpstreamAudio
