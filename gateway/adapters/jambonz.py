"""``/v1/jambonz``: jambonz's custom speech (STT) vendor API, as a pure dialect.

jambonz connects with ``Authorization: Bearer <api key>`` (the key entered for the custom vendor),
sends ``start`` {language, format "raw", encoding "LINEAR16", sampleRateHz, interimResults, options},
binary LINEAR16 audio, and ``stop``. The gateway answers only ``transcription`` {is_final, alternatives
[{transcript, confidence}], channel, language} and ``error`` {error}; after ``stop`` it sends the final
result(s) and closes, as the vendor API asks. One recognition per connection, as jambonz's own client
runs it. Channels are numbered from 1 (Data Flow's channel 0 is channel 1). The project is the URL's
``?project=`` or the default project. A ``language`` over 64 characters is refused (invalid_start): it
would be held for the connection's life and sent back in every transcription.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from gateway.adapters import commands
from gateway.adapters.dialect import ClientMessage, Command, SessionCommand
from gateway.adapters.messages import language_tag, quote
from gateway.adapters.socket import Frame
from gateway.audio.format import AudioFormat
from gateway.dataflow.lenient import declared_int, loads_object
from gateway.dataflow.messages import PARTIAL, DataflowEvent, StartRequest
from gateway.errors import AudioFormatError, BadRequest, ErrorCode, GatewayError, InvalidState
from gateway.relay.items import Closed, OutItem

log = logging.getLogger(__name__)

#: The longest ``language`` a start may name (a BCP 47 tag is a handful of characters): it is held for
#: the connection's life and sent back in every transcription.


def parse_start(obj: dict[str, Any], *, project: str) -> tuple[StartRequest, bool]:
    """A jambonz start as a StartRequest, and whether interim results are wanted."""
    encoding = str(obj.get("encoding", "LINEAR16")).upper()
    if encoding != "LINEAR16" or obj.get("format", "raw") != "raw":
        raise AudioFormatError("jambonz audio must be format raw, encoding LINEAR16")
    rate = declared_int(obj.get("sampleRateHz"), 8000, name="sampleRateHz")
    audio = AudioFormat("pcm16", rate, 1).validate()
    if not project:
        raise BadRequest("no project: add ?project=<name> to the vendor's URL", code=ErrorCode.INVALID_START)
    request = StartRequest(project=project, audio=audio, language=language_tag(obj.get("language")))
    return request, obj.get("interimResults") is True


class JambonzDialect:
    name: ClassVar[str] = "jambonz"
    sequential: ClassVar[bool] = False
    credentials_in_band: ClassVar[bool] = False  # Authorization: Bearer
    refuse_full_at_once: ClassVar[bool] = True
    reports_flow: ClassVar[bool] = False

    def __init__(self, project: str = "") -> None:
        self.project = project
        self.language = ""
        self.interim = False

    def subprotocol(self, offered: Sequence[str]) -> str | None:
        return None

    # --- client messages -----------------------------------------------------------------------------

    def waiting(self, message: ClientMessage) -> Command:
        try:
            if isinstance(message, bytes):  # jambonz sends start first: audio before it would be lost
                raise InvalidState("audio before start: send start before anything else", code=ErrorCode.NOT_STARTED)
            obj = loads_object(message)
            if obj.get("type") != "start":
                raise InvalidState("send start before anything else", code=ErrorCode.NOT_STARTED)
            request, self.interim = parse_start(obj, project=self.project)
        except GatewayError as exc:
            return commands.Refuse(exc)
        self.language = request.language or ""
        return commands.Begin(request)

    def streaming(self, message: ClientMessage) -> Command:
        if isinstance(message, bytes):
            return commands.Audio(message)
        try:
            kind = loads_object(message).get("type")
        except GatewayError as exc:
            return commands.Refuse(exc)
        if kind == "stop":
            return commands.Finalize()
        if kind == "start":
            return commands.Refuse(InvalidState("one recognition per connection", code=ErrorCode.ALREADY_STARTED))
        log.debug("ignored a jambonz %s message", quote(kind))  # the client's text: cut short
        return None

    def fast_audio(self, message: ClientMessage) -> bytes | None:
        return message if isinstance(message, bytes) else None

    def failed(self, command: SessionCommand, error: GatewayError) -> Command:
        return None  # audio after stop: the final results are on their way

    # --- session items -------------------------------------------------------------------------------

    def render(self, item: OutItem) -> Sequence[Frame]:
        if not isinstance(item, DataflowEvent) or not item.text:
            return ()
        if item.name == PARTIAL and self.interim:
            return (self._transcription(item, final=False),)
        if item.final:
            return (self._transcription(item, final=True),)
        return ()

    def _transcription(self, item: DataflowEvent, *, final: bool) -> dict[str, Any]:
        alternative: dict[str, Any] = {"transcript": item.text}
        if final:
            alternative["confidence"] = item.confidence
        return {
            "type": "transcription", "is_final": final, "alternatives": [alternative],
            "channel": item.channel + 1, "language": self.language,
        }  # fmt: skip

    def goodbye(self, closed: Closed) -> commands.Goodbye:
        return commands.Goodbye(() if closed.error is None else (_error(closed.error),))

    def refusal(self, error: GatewayError, *, start_failed: bool) -> Sequence[Frame]:
        return (_error(error),)


def _error(error: GatewayError) -> dict[str, Any]:
    return {"type": "error", "error": str(error)}
