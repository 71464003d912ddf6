"""``/v1/stream``: the gateway's own WebSocket protocol (browsers and servers), as a pure dialect.

Client text frames: start, finalize, stop, update, event, ping. Binary frames: audio in the
format declared by start, any size. Server text frames: started, event, response, ack, error,
pong, upstream_recovered, closed; binary frames: audio from Data Flow. The AsyncAPI document (/asyncapi.yaml) is the
reference; close codes are listed in the README.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.adapters import commands, messages
from gateway.adapters.dialect import MAX_START_BYTES, ClientMessage, Command, SessionCommand
from gateway.adapters.socket import Frame
from gateway.audio.format import AudioFormat, parse_encoding
from gateway.dataflow.lenient import loads_object, longer_than
from gateway.dataflow.messages import PARTIAL, DataflowEvent, DataflowResponse, StartRequest, UpstreamAudio
from gateway.errors import BadRequest, ErrorCode, GatewayError, InvalidMessage, InvalidState, MessageTooBig
from gateway.relay.items import Closed, Flow, Notice, OutItem, Recovered, Started
from gateway.security import SUBPROTOCOL


class AudioSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    encoding: str = "pcm16"
    sample_rate: int = Field(16000, alias="sampleRate")
    channels: int = 1


class StartMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: Literal["start"]
    project: str | None = None
    audio: AudioSpec = Field(default_factory=lambda: AudioSpec())
    language: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    channel_tags: list[str] | None = Field(None, alias="channelTags")
    call_properties: dict[str, Any] | None = Field(None, alias="callProperties")
    interim: bool = True
    raw: bool = False
    token: str | None = None


#: Longest string a pong echoes as its id: a pong is queued for the client, and must stay small.
MAX_PING_ID_CHARS = 128

#: Problems of an invalid start listed in its error (each extra key is one: a client can send thousands).
MAX_START_PROBLEMS = 5


def _invalid_start(exc: ValidationError) -> BadRequest:
    errors = exc.errors()
    listed = [f"{messages.clip('.'.join(str(p) for p in e['loc'])) or 'start'}: {e['msg']}"
              for e in errors[:MAX_START_PROBLEMS]]  # fmt: skip
    more = f" (and {len(errors) - MAX_START_PROBLEMS} more)" if len(errors) > MAX_START_PROBLEMS else ""
    return BadRequest(f"invalid start message: {'; '.join(listed)}{more}", code=ErrorCode.INVALID_START)


def echoable_ping_id(ping_id: Any) -> bool:
    """A short scalar: what a pong may echo (anything else would let a client fill its outbox)."""
    if ping_id is None or isinstance(ping_id, bool):
        return True
    if isinstance(ping_id, str):
        return len(ping_id) <= MAX_PING_ID_CHARS
    if isinstance(ping_id, int):
        return len(str(ping_id)) <= MAX_PING_ID_CHARS  # JSON caps an integer's digits (4300), so this is cheap
    return isinstance(ping_id, float) and math.isfinite(ping_id)  # NaN is not JSON


def _pong(obj: dict[str, Any]) -> Command:
    ping_id = obj.get("id")
    if not echoable_ping_id(ping_id):
        return _say(InvalidMessage(
            f"ping.id must be a string of at most {MAX_PING_ID_CHARS} characters, a number, a boolean or null; "
            "this ping is not answered"
        ))  # fmt: skip
    return commands.Reply((messages.pong(ping_id),))


def _say(error: GatewayError) -> commands.Reply:
    return commands.Reply((messages.error(error),))


class NativeDialect:
    name: ClassVar[str] = "native"
    sequential: ClassVar[bool] = False
    credentials_in_band: ClassVar[bool] = True
    refuse_full_at_once: ClassVar[bool] = True  # say so at once rather than after the client's start
    reports_flow: ClassVar[bool] = True

    def __init__(self, default_project: str = "", *, max_start_bytes: int = MAX_START_BYTES) -> None:
        self.default_project = default_project
        self.max_start_bytes = max_start_bytes  # GATEWAY_MAX_CONTROL_MESSAGE_BYTES
        self.interim = True
        self.raw = False

    def subprotocol(self, offered: Sequence[str]) -> str | None:
        # Browsers fail the handshake unless one offered subprotocol is echoed back.
        return SUBPROTOCOL if SUBPROTOCOL in offered else None

    # --- client messages -----------------------------------------------------------------------------

    def waiting(self, message: ClientMessage) -> Command:
        if isinstance(message, bytes):
            return _say(InvalidState("send a start message before audio; this audio was dropped",
                                     code=ErrorCode.AUDIO_BEFORE_START))  # fmt: skip
        try:
            if longer_than(message, self.max_start_bytes):  # refused unread: parsed, it stayed for the session
                raise MessageTooBig(f"a message before the start may be at most {self.max_start_bytes} bytes")
            obj = loads_object(message)
            kind = obj.get("type")
            if kind == "ping":
                return _pong(obj)
            if kind != "start":
                raise InvalidState(f"expected a start message, got {messages.quote(kind)}", code=ErrorCode.NOT_STARTED)
            return self.parse_start(obj)
        except GatewayError as exc:
            return _say(exc)

    def parse_start(self, obj: dict[str, Any]) -> commands.Begin:
        try:
            start = StartMessage.model_validate(obj)
        except ValidationError as exc:
            raise _invalid_start(exc) from None
        client_format = AudioFormat(  # a name longer than any spelling is unknown: quoted cut short
            parse_encoding(messages.clip(start.audio.encoding)), start.audio.sample_rate, start.audio.channels
        ).validate()
        project = start.project or self.default_project
        if not project:
            raise BadRequest(
                "start.project is required (no default project is configured)", code=ErrorCode.INVALID_START
            )
        settings = dict(start.settings)
        if start.channel_tags:
            settings["ChannelTags"] = start.channel_tags
        self.interim, self.raw = start.interim, start.raw
        request = StartRequest(
            project=project,
            audio=client_format,
            language=start.language,
            settings=settings,
            call_properties=start.call_properties,
        )
        return commands.Begin(request, start.token)

    def streaming(self, message: ClientMessage) -> Command:
        if isinstance(message, bytes):
            return commands.Audio(message)
        try:
            return self._control(loads_object(message))
        except GatewayError as exc:
            return _say(exc)

    @staticmethod
    def _control(obj: dict[str, Any]) -> Command:
        kind = obj.get("type")
        if kind == "finalize":
            return commands.Finalize()
        if kind == "stop":
            return commands.Stop()
        if kind == "update":
            settings = obj.get("settings")
            if not isinstance(settings, dict):
                raise BadRequest("update.settings must be an object", code=ErrorCode.INVALID_UPDATE)
            return commands.Update(settings)
        if kind == "event":
            event = obj.get("event")
            if not isinstance(event, dict):
                raise BadRequest("event.event must be an object", code=ErrorCode.INVALID_EVENT)
            return commands.SendEvent(event)
        if kind == "ping":
            return _pong(obj)
        if kind == "start":
            raise InvalidState("the session has already been started", code=ErrorCode.ALREADY_STARTED)
        raise BadRequest(f"unknown message type {messages.quote(kind)}", code=ErrorCode.UNKNOWN_MESSAGE_TYPE)

    def fast_audio(self, message: ClientMessage) -> bytes | None:
        return message if isinstance(message, bytes) else None

    def failed(self, command: SessionCommand, error: GatewayError) -> Command:
        return _say(error)

    # --- session items -------------------------------------------------------------------------------

    def render(self, item: OutItem) -> Sequence[Frame]:
        if isinstance(item, DataflowEvent):
            if item.name == PARTIAL and not self.interim:
                return ()
            return (messages.event(item, raw=self.raw),)
        if isinstance(item, UpstreamAudio):
            return (item.data,)
        if isinstance(item, Flow):
            return (messages.ack(item),)
        if isinstance(item, DataflowResponse):
            return (messages.response(item),)
        if isinstance(item, Notice):
            return (messages.error(item.error),)
        if isinstance(item, Started):
            return (messages.started(item),)
        if isinstance(item, Recovered):
            return (messages.recovered(item),)
        if isinstance(item, dict):
            return (item,)
        return ()

    def goodbye(self, closed: Closed) -> commands.Goodbye:
        frames: tuple[Frame, ...] = () if closed.error is None else (messages.error(closed.error),)
        return commands.Goodbye((*frames, messages.closed(closed.reason, closed.audio_ms)))

    def refusal(self, error: GatewayError, *, start_failed: bool) -> Sequence[Frame]:
        reason = "start_failed" if start_failed else error.error_code.value
        return (messages.error(error), messages.closed(reason, 0))
