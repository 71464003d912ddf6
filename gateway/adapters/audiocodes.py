"""``/v1/audiocodes``: the AudioCodes VoiceAI Connect speech-to-text WebSocket API, as a pure dialect.

VoiceAI Connect keeps one socket per conversation and runs recognition sessions on it one after
another: ``start`` -> ``started``, binary LINEAR16 audio, ``hypothesis`` (SR Partial) and
``recognition`` (SR Milestone) results, ``stop`` -> Finalize -> ``end``. Each recognition is its
own Session; the socket holds one slot for its whole life. Failures answer ``error`` and close the
socket, as the API asks. Start mapping: language -> Language, conversationId -> CallProperties.
ExternalId; sttContextId and sttSpeechContexts have no Data Flow counterpart and are dropped. The
project is the ``project`` query parameter or the default project.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from gateway.adapters import commands
from gateway.adapters.dialect import ClientMessage, Command, SessionCommand
from gateway.adapters.messages import quote
from gateway.adapters.socket import Frame
from gateway.audio.format import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioFormat
from gateway.dataflow.lenient import declared_int, loads_object
from gateway.dataflow.messages import MILESTONE, PARTIAL, DataflowEvent, StartRequest
from gateway.errors import AudioFormatError, BadRequest, ErrorCode, GatewayError, InvalidState
from gateway.relay.items import Closed, OutItem, Started

log = logging.getLogger(__name__)

# Why a recognition ended, in words for VoiceAI Connect (Session reasons are the keys).
_CLIENT_ENDED = "ended by client"
_END_REASONS = {"finalized": "stop requested", "stopped": "stop requested", "completed": "recognition complete"}
_WAV_HEADER_LIMIT = 64 * 1024  # a streamed WAV header (RIFF, fmt, LIST ...) is far smaller


class WavHeaderSkipper:
    """Drops the RIFF/WAVE header in front of ``format: wav`` audio, across frames; raw audio passes.

    Parsed as it arrives: the walk resumes where the last frame stopped, skipped chunks are counted off
    (never held) and only an incomplete RIFF preamble or chunk header is kept, so a header costs work
    linear in its size however it is cut. The limit bounds every header byte, skipped ones included.
    """

    def __init__(self) -> None:
        self._part = b""  # a RIFF preamble (12 bytes) or chunk header (8) not yet complete
        self._riff = False  # the preamble said RIFF/WAVE: chunks follow
        self._skip = 0  # bytes of the chunk being skipped (and its pad byte) still to come
        self._taken = 0  # header bytes taken so far
        self._done = False

    def feed(self, data: bytes) -> bytes:
        if self._done:
            return data
        if not self._riff:
            head = self._part + data  # under 12 bytes held: the copy is bounded
            if len(head) < 12:
                self._part = head
                return b""
            self._part = b""
            if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                self._done = True  # no header after all: it was raw audio
                return head
            self._riff, self._taken, data = True, 12, head[12:]
        room = _WAV_HEADER_LIMIT - self._taken
        start = self._walk(data, min(len(data), room))
        if start is None:
            self._taken += min(len(data), room)
            if len(data) > room:
                raise AudioFormatError("no WAV data chunk in the first 64 KiB of audio")
            return b""
        self._done = True
        return data[start:]

    def _walk(self, data: bytes, end: int) -> int | None:
        """Take ``data[:end]`` as header; where the audio starts in ``data``, or None: all header."""
        pos = 0
        while True:
            step = min(self._skip, end - pos)
            self._skip -= step
            pos += step
            if self._skip:
                return None
            if self._part:  # a chunk header cut by the last frame: complete it
                take = min(8 - len(self._part), end - pos)
                header, pos = self._part + data[pos : pos + take], pos + take
            elif pos + 8 <= end:
                header, pos = data[pos : pos + 8], pos + 8
            else:
                header, pos = data[pos:end], end
            if len(header) < 8:
                self._part = header
                return None
            self._part = b""
            if header[:4] == b"data":
                return pos
            size = int.from_bytes(header[4:8], "little")
            self._skip = size + (size & 1)  # chunks are word-aligned


def parse_start(obj: dict[str, Any], *, project: str) -> tuple[StartRequest, WavHeaderSkipper | None]:
    """A VoiceAI Connect start as a neutral StartRequest (and a header skipper for ``format: wav``)."""
    # Client text in an error is quoted cut short: the reply must not echo a client's megabyte.
    encoding = obj.get("encoding", "LINEAR16")
    if not isinstance(encoding, str) or encoding.upper() != "LINEAR16":  # str() of a client's array is unbounded
        raise AudioFormatError(f"encoding {quote(encoding)} is not supported; use LINEAR16")
    audio_format = obj.get("format", "raw")
    if audio_format not in ("raw", "wav"):
        raise AudioFormatError(f"format {quote(audio_format)} is not supported; use raw or wav")
    rate = declared_int(obj.get("sampleRateHz"), 16000, name="sampleRateHz")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:  # checked here too: a rate may have 4300 digits
        raise AudioFormatError(f"sample rate must be {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz, got {quote(rate)}")
    audio = AudioFormat("pcm16", rate, 1).validate()
    if not project:
        raise BadRequest("no project: add ?project=<name> to the URL", code=ErrorCode.INVALID_START)
    language = obj.get("language")
    conversation = obj.get("conversationId")
    request = StartRequest(
        project=project,
        audio=audio,
        language=language if isinstance(language, str) and language else None,
        call_properties={"ExternalId": str(conversation)} if conversation else None,
    )
    return request, WavHeaderSkipper() if audio_format == "wav" else None


def render(item: OutItem) -> dict[str, Any] | None:
    """The VoiceAI Connect message for one session item (None: nothing to send)."""
    if isinstance(item, Started):
        return {"type": "started"}
    if not isinstance(item, DataflowEvent) or not item.text:
        return None  # VAD, FinalResult, responses, flow reports and notices have no counterpart
    if item.name == PARTIAL:
        return {"type": "hypothesis", "alternatives": [{"text": item.text}]}
    if item.name == MILESTONE or item.final:
        return {"type": "recognition", "alternatives": [{"text": item.text, "confidence": item.confidence}]}
    return None


def _error(error: GatewayError) -> dict[str, Any]:
    return {"type": "error", "reason": str(error)}


class AudioCodesDialect:
    name: ClassVar[str] = "audiocodes"
    sequential: ClassVar[bool] = True
    credentials_in_band: ClassVar[bool] = False  # header, or /t/<secret>/ in the URL
    refuse_full_at_once: ClassVar[bool] = True
    reports_flow: ClassVar[bool] = False

    def __init__(self, project: str = "") -> None:
        self.project = project
        self.wav: WavHeaderSkipper | None = None
        self._ending: str | None = None  # the recognition was asked to end ("stop", or the client's "end")

    def subprotocol(self, offered: Sequence[str]) -> str | None:
        return None

    # --- client messages -----------------------------------------------------------------------------

    def waiting(self, message: ClientMessage) -> Command:
        if isinstance(message, bytes):
            return None  # between recognitions VoiceAI Connect may still stream: nobody listens
        try:
            obj = loads_object(message)
            kind = obj.get("type")
            if kind == "start":
                request, self.wav = parse_start(obj, project=self.project)
                self._ending = None
                return commands.Begin(request)
        except GatewayError as exc:
            return commands.Refuse(exc)
        if kind == "stop":
            return commands.Reply(({"type": "end", "reason": "no recognition running"},))
        if kind == "end":  # the conversation is over (AudioCodes' sample server answers end, then closes)
            return commands.Reply(({"type": "end", "reason": _CLIENT_ENDED},))
        log.debug("ignored an AudioCodes %s message", quote(kind))
        return None

    def streaming(self, message: ClientMessage) -> Command:
        if isinstance(message, bytes):
            if self.wav is None:
                return commands.Audio(message)
            try:
                return commands.Audio(self.wav.feed(message))
            except GatewayError as exc:
                return commands.Refuse(exc)
        try:
            obj = loads_object(message)
        except GatewayError as exc:
            return commands.Refuse(exc)
        kind = obj.get("type")
        if kind == "start":
            if self._ending is not None:  # the next recognition, sent before this one's end went out
                return commands.AfterSession(message)
            return commands.Refuse(InvalidState("a recognition is already running", code=ErrorCode.ALREADY_STARTED))
        if kind in ("stop", "end") and self._ending is None:
            self._ending = kind
            return commands.Finalize()  # the open utterance is flushed: its results still go out, then end
        log.debug("ignored an AudioCodes %s message", quote(kind))
        return None

    def fast_audio(self, message: ClientMessage) -> bytes | None:
        return message if isinstance(message, bytes) and self.wav is None else None  # a WAV header: the normal path

    def failed(self, command: SessionCommand, error: GatewayError) -> Command:
        return None  # audio after stop, a second stop while the first one flushes: nothing to say

    # --- session items -------------------------------------------------------------------------------

    def render(self, item: OutItem) -> Sequence[Frame]:
        message = render(item)
        return () if message is None else (message,)

    def goodbye(self, closed: Closed) -> commands.Goodbye:
        if closed.error is None:
            reason = _CLIENT_ENDED if self._ending == "end" else _END_REASONS.get(closed.reason, closed.reason)
            return commands.Goodbye(({"type": "end", "reason": reason},), close=False)
        return commands.Goodbye((_error(closed.error),))  # the API wants the socket closed when the server cannot go on

    def refusal(self, error: GatewayError, *, start_failed: bool) -> Sequence[Frame]:
        return (_error(error),)
