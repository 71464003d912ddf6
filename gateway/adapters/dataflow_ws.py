"""``/project-runner`` and ``/project-runner/{project}``: Data Flow's own WebSocket protocol, as a
pure dialect.

Existing Data Flow clients change only the URL. Text frames carry Start/Update/Finalize/Stop and
``{"Event": {...}}`` JSON in either JSON spelling (read with :mod:`gateway.dataflow.messages`);
binary frames carry audio in the format Start declares. The client's Token and Tenant are read and
dropped: the upstream Start carries the gateway's. Responses and events go back exactly as Data
Flow sent them, minus any token. Messages the gateway makes itself (a refused start, an error) are
written in the client's spelling. Close codes: 1000 after FinalResult, 1011 when Data Flow fails, 1009
for a Start over the control-message bound (refused unread: its keys are matched tolerantly, so a Start
of many junk keys is work).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from gateway.adapters import commands
from gateway.adapters.dialect import MAX_START_BYTES, ClientMessage, Command, SessionCommand
from gateway.adapters.messages import clip
from gateway.adapters.socket import Frame
from gateway.audio.format import AudioFormat
from gateway.dataflow.lenient import get, loads_object, longer_than, norm_key
from gateway.dataflow.messages import DataflowEvent, DataflowResponse, UpstreamAudio, message_name, parse_start
from gateway.errors import BadRequest, ErrorCode, GatewayError, InvalidState, MessageTooBig, UpstreamRejected
from gateway.relay.items import Closed, Notice, OutItem, Started

# What a Start declares when it leaves (part of) Audio out: Data Flow's own default input.
DEFAULT_AUDIO = AudioFormat("pcm16", 16000, 1)
_LEGACY_NAMES = ('"message-name"', '"message_name"', '"messagename"')

_RESPONSE_NAMES: dict[type[Any], str] = {
    commands.Finalize: "FinalizeResponse",
    commands.Stop: "StopResponse",
    commands.Update: "UpdateResponse",
}


def _kebab(name: str) -> str:
    return "".join(f"-{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def scrub(value: Any) -> Any:
    """``value`` without any key that reads as a token, at any depth (Data Flow's JSON goes to clients)."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if norm_key(str(k)) != "token"}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


class DataflowDialect:
    name: ClassVar[str] = "dataflow_ws"
    sequential: ClassVar[bool] = False
    credentials_in_band: ClassVar[bool] = False  # header, or /t/<secret>/ in the URL; never in Start
    refuse_full_at_once: ClassVar[bool] = False  # the refusal is a StartResponse in the client's spelling
    reports_flow: ClassVar[bool] = False

    def __init__(
        self, path_project: str = "", default_project: str = "", *, max_start_bytes: int = MAX_START_BYTES
    ) -> None:
        self.path_project = path_project
        self.default_project = default_project
        self.max_start_bytes = max_start_bytes
        self.legacy = False  # current clients write "MessageName"; legacy ones "message-name"

    def subprotocol(self, offered: Sequence[str]) -> str | None:
        return None

    def response(self, name: str, error: GatewayError, text: str | None = None) -> dict[str, Any]:
        """A failed ``name`` response carrying the error text and the gateway's error code."""
        result = text or error.message
        if self.legacy:
            return {"message-name": _kebab(name), "operation-result": result, "error-code": error.error_code.value}
        return {"MessageName": name, "OperationResult": result, "ErrorCode": error.error_code.value}

    # --- client messages -----------------------------------------------------------------------------

    def waiting(self, message: ClientMessage) -> Command:
        """The first message must be Start."""
        try:
            if isinstance(message, bytes):
                raise InvalidState("the first message must be a Start request, not audio", code=ErrorCode.NOT_STARTED)
            if longer_than(message, self.max_start_bytes):
                self.legacy = any(name in message for name in _LEGACY_NAMES)  # refused unread, in its spelling
                raise MessageTooBig(f"the Start message is over {self.max_start_bytes} bytes")
            obj = loads_object(message)
            key = next((k for k in obj if norm_key(k) == "messagename"), None)
            self.legacy = key is not None and key == key.lower()
            kind = obj[key] if key is not None else get(obj, "type")
            if not isinstance(kind, str) or norm_key(kind) != "start":
                raise InvalidState("the first message must be a Start request", code=ErrorCode.NOT_STARTED)
            # The client's token and tenant are discarded unread: the gateway injects its own.
            request, _token, _tenant = parse_start(obj, default_audio=DEFAULT_AUDIO, project=self.path_project)
            request.project = request.project or self.default_project
            if not request.project:
                raise BadRequest(
                    "ProjectName is required (no default project is configured)", code=ErrorCode.INVALID_START
                )
        except GatewayError as exc:
            return commands.Refuse(exc)
        return commands.Begin(request)

    def streaming(self, message: ClientMessage) -> Command:
        if isinstance(message, bytes):
            return commands.Audio(message)
        try:
            obj = loads_object(message)
        except GatewayError as exc:
            return commands.Reply((self.response("ErrorResponse", exc),))
        event = get(obj, "Event")
        if isinstance(event, dict):
            return commands.SendEvent(event)
        kind = message_name(obj)
        if kind == "finalize":
            return commands.Finalize()
        if kind == "stop":
            return commands.Stop()
        if kind == "update":
            settings = get(obj, "Settings")
            if not isinstance(settings, dict):
                error = BadRequest("Update needs a Settings object", code=ErrorCode.INVALID_UPDATE)
                return commands.Reply((self.response("UpdateResponse", error),))
            return commands.Update(settings)
        if kind == "start":
            error = InvalidState("the session has already been started", code=ErrorCode.ALREADY_STARTED)
            return commands.Reply((self.response("StartResponse", error),))
        unknown = BadRequest(f"unknown message {clip(kind) or '(no MessageName)'}", code=ErrorCode.UNKNOWN_MESSAGE_TYPE)
        return commands.Reply((self.response("ErrorResponse", unknown),))

    def fast_audio(self, message: ClientMessage) -> bytes | None:
        return message if isinstance(message, bytes) else None

    def failed(self, command: SessionCommand, error: GatewayError) -> Command:
        if isinstance(command, commands.Audio):
            return None  # audio after Finalize/Stop is dropped without a word, as Data Flow ignores it too
        return commands.Reply((self.response(_RESPONSE_NAMES.get(type(command), "ErrorResponse"), error),))

    # --- session items -------------------------------------------------------------------------------

    def render(self, item: OutItem) -> Sequence[Frame]:
        if isinstance(item, DataflowEvent | DataflowResponse):
            return (scrub(item.raw),)
        if isinstance(item, UpstreamAudio):
            return (item.data,)
        if isinstance(item, Started):
            return (scrub(item.response.raw),)
        if isinstance(item, Notice):
            return (self.response("ErrorResponse", item.error),)
        if isinstance(item, dict):
            return (item,)
        return ()  # flow reports have no counterpart in Data Flow's protocol

    def goodbye(self, closed: Closed) -> commands.Goodbye:
        if closed.error is None:
            return commands.Goodbye(())
        return commands.Goodbye((self.response("ErrorResponse", closed.error),))

    def refusal(self, error: GatewayError, *, start_failed: bool) -> Sequence[Frame]:
        """A failed start the way Data Flow answers it: a StartResponse with the error."""
        text = error.dataflow_message if isinstance(error, UpstreamRejected) else None  # Data Flow's own words
        return (self.response("StartResponse", error, text),)
