"""``/v1/audiohook``: Genesys Cloud AudioHook (protocol version 2), as a pure dialect.

Every text frame is ``{version: "2", id, type, seq, parameters}``; the client adds ``serverseq``
(the last server seq it saw) and ``position``, the server ``clientseq`` (the last client seq it
handled). Each side's ``seq`` counts its own messages from 1: a client message out of sequence, or
one claiming a server seq not yet sent, is a protocol error (``disconnect`` with reason ``error``).

``open`` -> ``opened`` at once (Genesys gives up after about 5 s; Data Flow starts meanwhile; with
``supportedLanguages: true`` it lists the languages offered: ``customConfig.supportedLanguages``), then
binary frames of interleaved audio (:mod:`audiohook_media`). ``ping`` -> ``pong``; ``paused`` /
``resumed`` / ``discarded`` are the client's notices (audio while paused is not forwarded; the
position counts it; past ``MAX_GAPS`` such gaps the session ends, ``limit_reached``); ``update``
changes the language; ``close`` finalizes the session, so every result is sent before ``closed``.
Results are ``event`` messages with Transcription Connector ``transcript`` entities, per channel.
Server messages get their ``seq`` as they are rendered, in the order they are sent; ``pong`` keeps the
``clientseq`` of its ``ping``.

The handshake (API key, HTTP message signature) is checked before this dialect sees anything.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from gateway.adapters import commands
from gateway.adapters.audiohook_events import SendRate, transcript_entity
from gateway.adapters.audiohook_media import (
    CHANNEL_TAGS,
    SampleAligner,
    Timeline,
    call_properties,
    choose_media,
    parse_duration,
    supported_languages,
)
from gateway.adapters.dialect import ClientMessage, Command, SessionCommand
from gateway.adapters.messages import MAX_LANGUAGE_CHARS, language_tag
from gateway.adapters.socket import Frame
from gateway.dataflow.lenient import get, loads_object
from gateway.dataflow.messages import DataflowEvent, StartRequest
from gateway.errors import (
    AudioFormatError,
    ErrorCode,
    Forbidden,
    GatewayError,
    InvalidMessage,
    InvalidState,
    Unauthorized,
)
from gateway.relay.items import Closed, OutItem

log = logging.getLogger(__name__)

VERSION = "2"
#: The conversation id of Genesys's connection probe (the integration's test): answered, nothing started.
PROBE_CONVERSATION = "00000000-0000-0000-0000-000000000000"
#: A ping is ~200 characters; a longer text message is not parsed twice while Data Flow starts.
MAX_PING_CHARS = 4096


class AudioHookDialect:
    name: ClassVar[str] = "audiohook"
    sequential: ClassVar[bool] = False
    credentials_in_band: ClassVar[bool] = False  # X-API-KEY and the signature, at the handshake
    refuse_full_at_once: ClassVar[bool] = True
    reports_flow: ClassVar[bool] = False

    def __init__(
        self, project: str, *, session_id: str = "", organization_id: str = "", languages: Sequence[str] = ()
    ) -> None:
        self.project = project
        self.languages = tuple(languages)  # listed in opened when the integration's customConfig names none
        self.session_id = session_id  # Audiohook-Session-Id; the open message's id must match it
        self.organization_id = organization_id  # Audiohook-Organization-Id, checked against open's
        self.seq = 0  # the last server seq sent
        self.clientseq = 0  # the last client seq handled
        self.language: str | None = None
        self.timeline = Timeline()
        self.aligner: SampleAligner | None = None
        self.channels = 0
        self.paused = False
        self.closing = False  # the client sent close: the goodbye is ``closed``
        self.probe = False  # a connection probe: opened without a Data Flow session
        self.error_logged = False  # the client's first error message is logged, not each of thousands
        self.sends = SendRate()  # partials within the rate Genesys takes

    def subprotocol(self, offered: Sequence[str]) -> str | None:
        return None

    # --- client messages -----------------------------------------------------------------------------

    def waiting(self, message: ClientMessage) -> Command:
        if isinstance(message, bytes):
            if self.probe:
                return None  # a probe may stream a little; nobody listens
            return commands.Refuse(InvalidState("audio before open", code=ErrorCode.AUDIO_BEFORE_START))
        try:
            obj = self._checked(message)
            kind = obj["type"]
            if kind == "open":
                return self._open(obj)
        except GatewayError as exc:
            return commands.Refuse(exc)
        if kind in ("ping", "close"):
            return commands.Reply(self._answer(kind))
        log.debug("ignored an AudioHook %r message before open", kind)
        return None

    def after_goodbye(self, message: ClientMessage) -> Sequence[Frame]:
        """The client still ends the session after ``disconnect``: ``close`` gets ``closed`` (then it
        closes the socket); audio in flight, other messages or one out of sequence get nothing."""
        try:
            return self._answer(self._checked(message)["type"]) if isinstance(message, str) else ()
        except GatewayError:
            return ()

    def while_starting(self, message: ClientMessage) -> Sequence[Frame] | None:
        """A ``ping`` next in sequence is answered while Data Flow starts: Genesys gives up on a ping left
        unanswered for 5 s, and a start may take longer (a capped upstream, a slow Data Flow). Anything
        else, a ping behind a held message included, waits in order (and is checked then)."""
        if not isinstance(message, str) or len(message) > MAX_PING_CHARS:
            return None
        try:
            if loads_object(message).get("type") != "ping":
                return None
            self._checked(message)
        except GatewayError:
            return None
        return self._answer("ping")

    def _answer(self, kind: str) -> tuple[Frame, ...]:
        """``ping`` -> ``pong`` and ``close`` -> ``closed`` while no session runs."""
        self.closing = self.closing or kind == "close"
        reply = {"ping": "pong", "close": "closed"}.get(kind)
        return (self._stamp(self._message(reply, {})),) if reply else ()

    def streaming(self, message: ClientMessage) -> Command:
        if isinstance(message, bytes):
            return self._audio(message)
        try:
            obj = self._checked(message)
        except GatewayError as exc:
            return commands.Refuse(exc)
        kind, parameters = obj["type"], obj["parameters"]
        if kind == "ping":
            return commands.Reply((self._message("pong", {}),))  # seq at render, clientseq of this ping
        if kind == "close":
            self.closing = True
            return commands.Finalize()
        if kind == "paused":
            return self._gap(None, paused=True)
        if kind == "resumed":
            return self._gap(parameters.get("discarded"), paused=False)
        if kind == "discarded":
            return self._gap(parameters.get("discarded"), paused=self.paused)
        if kind == "update":
            language = parameters.get("language")  # longer than a tag can be: not one, ignored (as an empty one)
            if isinstance(language, str) and 0 < len(language) <= MAX_LANGUAGE_CHARS:
                self.language = language
                return commands.Update({"Language": language})
        elif kind == "error":
            self._client_error(parameters)
        elif kind == "open":
            return commands.Refuse(InvalidState("the session is already open", code=ErrorCode.ALREADY_STARTED))
        return None

    def _client_error(self, parameters: dict[str, Any]) -> None:
        if str(parameters.get("code")) == "429":  # Genesys's rate limiter: partials pause
            self.sends.back_off(parse_duration(parameters.get("retryAfter")))
        if not self.error_logged:  # the first is logged, not each of thousands
            self.error_logged = True
            log.info("AudioHook client error %s", str(parameters.get("code"))[:8])  # its text may hold call data

    def fast_audio(self, message: ClientMessage) -> bytes | None:
        if not isinstance(message, bytes):
            return None
        command = self._audio(message)
        return command.data if isinstance(command, commands.Audio) else b""  # paused, or not a whole sample yet

    def failed(self, command: SessionCommand, error: GatewayError) -> Command:
        return None  # audio after close, an update while closing: the protocol has nothing to say

    def _checked(self, text: str) -> dict[str, Any]:
        """A well-formed client message in sequence (its seq becomes ``clientseq``), or raise."""
        obj = loads_object(text)
        seq, serverseq, kind = obj.get("seq"), obj.get("serverseq"), obj.get("type")
        if obj.get("version") != VERSION or not isinstance(kind, str) or not isinstance(obj.get("parameters"), dict):
            raise InvalidMessage("not an AudioHook version 2 client message")
        if type(seq) is not int or seq != self.clientseq + 1:
            raise InvalidMessage(f"seq must be {self.clientseq + 1}", code=ErrorCode.INVALID_MESSAGE)
        if type(serverseq) is not int or not 0 <= serverseq <= self.seq:
            raise InvalidMessage(f"serverseq must be 0..{self.seq}", code=ErrorCode.INVALID_MESSAGE)
        message_id = str(obj.get("id", ""))
        if not self.session_id:
            self.session_id = message_id
        elif message_id != self.session_id:
            raise InvalidMessage("the message id is not this session's id")
        self.clientseq = seq
        return obj

    def _open(self, obj: dict[str, Any]) -> Command:
        parameters = obj["parameters"]
        organization = parameters.get("organizationId")
        if self.organization_id and organization != self.organization_id:
            raise Forbidden("organizationId differs from the Audiohook-Organization-Id header")
        media = choose_media(parameters.get("media"))
        if media is None:
            raise AudioFormatError("no offered media is audio PCMU or L16 at 8000 Hz on external/internal channels")
        self.language = language_tag(parameters.get("language"))  # repeated in every transcript: bounded
        self.channels = len(media.channels)
        self.aligner = SampleAligner(media.audio.frame_bytes)
        config = parameters.get("customConfig")
        project = get(config, "project") if isinstance(config, dict) else None
        request = StartRequest(
            project=project if isinstance(project, str) and project else self.project,
            audio=media.audio,
            language=self.language,
            settings={"ChannelTags": [CHANNEL_TAGS[c] for c in media.channels]},
            call_properties=call_properties(parameters),
        )
        opened_parameters: dict[str, Any] = {"media": [media.offer], "startPaused": False}
        if parameters.get("supportedLanguages") is True:  # the Transcription Connector asks: the list must be there
            opened_parameters["supportedLanguages"] = supported_languages(config, self.languages)
        opened = self._message("opened", opened_parameters)
        if parameters.get("conversationId") == PROBE_CONVERSATION:
            self.probe = True
            return commands.Reply((self._stamp(opened),))
        return commands.Begin(request, reply=(self._stamp(opened),))

    def _audio(self, data: bytes) -> Command:
        if self.aligner is None:
            return None
        whole = self.aligner.feed(data)
        samples = len(whole) // self.aligner.frame_bytes
        if self.paused:  # not for Data Flow; the stream's position still moves on
            self.timeline.skipped(samples)
            return None
        self.timeline.heard(samples)
        return commands.Audio(whole) if whole else None

    def _gap(self, discarded: Any, *, paused: bool) -> Command:
        """Paused, resumed or discarded: the position moves on, Data Flow hears nothing. Past the
        timeline's cap on gaps the session ends (``disconnect``, ``error``), as on a protocol error."""
        try:
            if paused:
                self.timeline.paused()  # while paused already, this joins the pause's entry
            self._skip_seconds(discarded)
        except GatewayError as exc:
            return commands.Refuse(exc)
        self.paused = paused
        return None

    def _skip_seconds(self, value: Any) -> None:
        seconds = parse_duration(value)
        if seconds is not None:
            self.timeline.skipped(round(seconds * self.timeline.rate))

    # --- server messages -----------------------------------------------------------------------------

    def _message(self, kind: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """A server message without its seq yet (given when it is sent: :meth:`_stamp`)."""
        return {"version": VERSION, "id": self.session_id, "type": kind, "clientseq": self.clientseq,
                "parameters": parameters}  # fmt: skip

    def _stamp(self, message: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        return {**message, "seq": self.seq}

    def render(self, item: OutItem) -> Sequence[Frame]:
        if isinstance(item, dict):  # a pong queued in order with the results
            self.sends.take(droppable=False)
            return (self._stamp(item) if "seq" not in item else item,)
        if isinstance(item, DataflowEvent):
            entity = transcript_entity(item, timeline=self.timeline, channels=self.channels, language=self.language,
                                       session_id=self.session_id)  # fmt: skip
            if entity is not None and self.sends.take(droppable=not entity["data"]["isFinal"]):
                return (self._stamp(self._message("event", {"entities": [entity]})),)
        return ()  # Started (opened went out at once), flow reports, notices, VAD: no counterpart

    def goodbye(self, closed: Closed) -> commands.Goodbye:
        if closed.error is None and self.closing:
            # The client closes the socket once it has ``closed`` (it always ends the session).
            return commands.Goodbye((self._stamp(self._message("closed", {})),))
        if closed.error is None:
            return commands.Goodbye((self._disconnect("completed", closed.reason),))
        return commands.Goodbye((self._disconnect(_reason(closed.error), str(closed.error)),))

    def refusal(self, error: GatewayError, *, start_failed: bool) -> Sequence[Frame]:
        return (self._disconnect(_reason(error), str(error)),)

    def _disconnect(self, reason: str, info: str) -> dict[str, Any]:
        return self._stamp(self._message("disconnect", {"reason": reason, "info": info}))


def _reason(error: GatewayError) -> str:
    return "unauthorized" if isinstance(error, Unauthorized | Forbidden) else "error"
