"""``/v1/vonage``: Vonage Voice API WebSockets, as a pure dialect.

Vonage opens the socket, sends one text frame (``{"event": "websocket:connected", "content-type":
"audio/l16;rate=16000"}`` plus the custom headers the call's NCCO configured, as top-level keys), then
16-bit little-endian PCM in binary 20 ms frames (640 bytes at 16 kHz, 320 at 8 kHz). The socket closing
is the hang-up: the session is finalized, not cancelled, and its results delivered. Nothing but audio
goes back: results go to the result webhook, and audio Data Flow sends back (TTS) becomes L16 frames of
exactly 20 ms at the call's rate, which Vonage plays into the call. TTS audio comes in chunks of any
length: what does not fill a frame waits for the next chunk, and only the fragment's end (``End of TTS
Fragment``, or the session's) pads its last frame with silence — padding every chunk played a gap of
silence after each one.

Identity for the webhook: the ``uuid`` and ``conversation_uuid`` custom headers (what a Vonage app
usually passes), and the header named by ``GATEWAY_VONAGE_CALL_HEADER`` as ``callId``. Custom headers
``language`` and ``project`` map to Language and the project (when the URL's ``?project=`` named none).
Only those identity headers are kept for the call's life, each cut to 256 characters; the rest are not.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from gateway.adapters import commands
from gateway.adapters.call_results import identity_text, scalar_text
from gateway.adapters.dialect import ClientMessage, Command, SessionCommand
from gateway.adapters.socket import Frame
from gateway.audio.convert import AudioConverter
from gateway.audio.format import AudioFormat
from gateway.dataflow.lenient import loads_object
from gateway.dataflow.messages import DataflowEvent, StartRequest, UpstreamAudio
from gateway.errors import AudioFormatError, BadRequest, ErrorCode, GatewayError
from gateway.relay.items import Closed, OutItem, Started

log = logging.getLogger(__name__)

FRAME_MS = 20
END_OF_TTS = "End of TTS Fragment"
_CONTENT_TYPE = re.compile(r"^\s*audio/l16\s*;\s*rate\s*=\s*(8000|16000)\s*$", re.IGNORECASE)


def parse_content_type(value: Any) -> AudioFormat:
    """``audio/l16;rate=16000|8000`` as a format (Vonage streams mono)."""
    match = _CONTENT_TYPE.match(value) if isinstance(value, str) else None
    if match is None:
        raise AudioFormatError("Vonage's content-type must be audio/l16;rate=16000 or audio/l16;rate=8000")
    return AudioFormat("pcm16", int(match.group(1)), 1)


class VonageDialect:
    name: ClassVar[str] = "vonage"
    sequential: ClassVar[bool] = False
    credentials_in_band: ClassVar[bool] = False  # a header the NCCO sets, or /t/<key>/ in the URI
    refuse_full_at_once: ClassVar[bool] = True
    reports_flow: ClassVar[bool] = False

    def __init__(self, project: str = "", *, project_from_url: bool = False, call_header: str = "") -> None:
        self.project = project
        self.project_from_url = project_from_url
        self.call_header = call_header
        self.headers: dict[str, str] = {}
        self.audio: AudioFormat | None = None
        self._tts: AudioConverter | None = None
        self._frame_bytes = 0
        self._tts_held = b""  # TTS audio short of a whole frame, until the next chunk or the fragment's end

    def subprotocol(self, offered: Sequence[str]) -> str | None:
        return None

    def call_identity(self) -> dict[str, str]:
        """Who the results belong to, for the webhook."""
        identity = {key: self.headers.get(key, "") for key in ("uuid", "conversation_uuid")}
        if self.call_header:
            identity["callId"] = self.headers.get(self.call_header, "")
        return identity

    # --- client messages -----------------------------------------------------------------------------

    def waiting(self, message: ClientMessage) -> Command:
        try:
            if isinstance(message, bytes):  # no format yet; Vonage sends its connected frame first
                raise BadRequest(
                    "audio before the websocket:connected frame: Vonage sends its text frame first",
                    code=ErrorCode.INVALID_START,
                )
            obj = loads_object(message)
            if obj.get("event") != "websocket:connected":
                return None
            return commands.Begin(self._start(obj))
        except GatewayError as exc:
            return commands.Refuse(exc)

    def _start(self, obj: dict[str, Any]) -> StartRequest:
        self.audio = parse_content_type(obj.get("content-type"))
        # Kept for the call's life: only the headers its identity reads, cut short (project and language
        # go to Start alone).
        names = {"uuid", "conversation_uuid", self.call_header} - {"", "event", "content-type"}
        self.headers = {name: text for name in names if (text := identity_text(obj.get(name)))}
        project = self.project if self.project_from_url else (scalar_text(obj.get("project")) or self.project)
        if not project:
            raise BadRequest("no project: add ?project=<name> to the URI", code=ErrorCode.INVALID_START)
        call_id = self.headers.get("conversation_uuid") or self.headers.get("uuid")
        return StartRequest(
            project=project,
            audio=self.audio,
            language=scalar_text(obj.get("language")) or None,
            call_properties={"ExternalId": call_id} if call_id else None,
        )

    def streaming(self, message: ClientMessage) -> Command:
        if isinstance(message, bytes):
            return commands.Audio(message)
        return None  # websocket:dtmf and other notices: the tones are in the audio

    def fast_audio(self, message: ClientMessage) -> bytes | None:
        return message if isinstance(message, bytes) else None

    def failed(self, command: SessionCommand, error: GatewayError) -> Command:
        return None  # Vonage reads no text

    # --- session items -------------------------------------------------------------------------------

    def render(self, item: OutItem) -> Sequence[Frame]:
        if isinstance(item, Started) and self.audio is not None:
            upstream = AudioFormat("pcm16", item.upstream_format.sample_rate, 1)
            self._tts = AudioConverter(upstream, self.audio)
            self._frame_bytes = self.audio.ms_to_bytes(FRAME_MS)
        elif isinstance(item, UpstreamAudio) and self._tts is not None:
            return self._speak(self._tts.convert(item.data))
        elif isinstance(item, DataflowEvent) and item.name == END_OF_TTS:
            return self._end_of_speech()
        return ()  # results go to the webhook

    def _speak(self, audio: bytes, *, last: bool = False) -> list[Frame]:
        """``audio`` after what was held, as whole frames; the rest is held (padded with silence if ``last``)."""
        audio, size = self._tts_held + audio, self._frame_bytes
        if last and len(audio) % size:
            audio += b"\x00" * (size - len(audio) % size)  # Vonage plays whole 20 ms frames only
        whole = len(audio) - len(audio) % size
        self._tts_held = audio[whole:]
        return [audio[i : i + size] for i in range(0, whole, size)]

    def _end_of_speech(self) -> list[Frame]:
        """The fragment's end: what the resampler and the last frame still hold goes out."""
        return self._speak(self._tts.flush(), last=True) if self._tts is not None else []

    def goodbye(self, closed: Closed) -> commands.Goodbye:
        return commands.Goodbye(tuple(self._end_of_speech()))

    def refusal(self, error: GatewayError, *, start_failed: bool) -> Sequence[Frame]:
        log.info("refused a Vonage call: %s", error.error_code)
        return ()
