"""``/v1/twilio``: Twilio Media Streams, as a pure dialect.

Twilio sends text frames only: ``connected``, then ``start`` (streamSid, callSid, tracks,
customParameters, mediaFormat ``audio/x-mulaw`` 8 kHz mono), ``media`` (base64 μ-law payloads), ``dtmf``
and ``mark`` (bidirectional streams), and ``stop`` when the call or stream ends. The socket carries
nothing back but ``media``, ``mark`` and ``clear`` (anything else is an error on Twilio's side), so
results go to the result webhook (:mod:`gateway.adapters.call_results`) and this dialect renders only
audio that Data Flow sends back (TTS): as ``media`` frames followed by a ``mark``, on bidirectional
streams. A stream that declares the ``outbound`` track is a unidirectional ``<Start><Stream>`` (a
bidirectional one carries only ``inbound``): audio back is dropped there.

A stream of both tracks (``<Start><Stream track="both_tracks">``) is transcribed as a stereo call,
channel 0 the caller (``inbound``) and channel 1 what the call plays (``outbound``), the tracks aligned
by their timestamps (:mod:`gateway.adapters.twilio_tracks`); a stream of ``outbound`` alone
(``track="outbound_track"``) is transcribed as that one track; otherwise only ``inbound`` is. ``stop``
(or the hang-up) finalizes the session once what one track still held has gone in, the other padded
with silence; the results go to the webhook. Start mapping: customParameters ``language`` -> Language,
``project`` -> the project (when the URL named none), callSid -> CallProperties.ExternalId. Nothing
else of customParameters is kept; the ids (streamSid, callSid, accountSid) are kept cut to 256
characters.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from gateway.adapters import commands
from gateway.adapters.call_results import identity_text, scalar_text
from gateway.adapters.dialect import ClientMessage, Command, SessionCommand
from gateway.adapters.socket import Frame
from gateway.adapters.twilio_tracks import TwoTracks
from gateway.audio.convert import AudioConverter
from gateway.audio.format import AudioFormat, parse_encoding
from gateway.dataflow.lenient import declared_int, loads_object
from gateway.dataflow.messages import StartRequest, UpstreamAudio
from gateway.errors import AudioFormatError, BadRequest, ErrorCode, GatewayError, InvalidMessage, InvalidState
from gateway.relay.items import Closed, OutItem, Started

log = logging.getLogger(__name__)

#: What Twilio streams and plays: G.711 μ-law, 8 kHz, mono (per track).
TWILIO_AUDIO = AudioFormat("mulaw", 8000, 1)
STEREO = AudioFormat("mulaw", 8000, 2)
#: Audio back is sent in pieces of at most this many bytes (1 s of μ-law): Twilio plays them in order.
MEDIA_CHUNK_BYTES = 8000


class TwilioDialect:
    name: ClassVar[str] = "twilio"
    sequential: ClassVar[bool] = False
    credentials_in_band: ClassVar[bool] = False  # X-API-Key header, or /t/<key>/ (Twilio forbids query strings)
    refuse_full_at_once: ClassVar[bool] = True
    reports_flow: ClassVar[bool] = False

    def __init__(self, project: str = "", *, project_from_url: bool = False) -> None:
        self.project = project
        self.project_from_url = project_from_url
        self.stream_sid = ""
        self.call_sid = ""
        self.account_sid = ""
        self.bidirectional = True
        self.marks = 0
        self.tracks: TwoTracks | None = None  # both tracks: a stereo stream (0 inbound, 1 outbound)
        self.track = "inbound"  # the one track transcribed when the stream is not stereo
        self._tts: AudioConverter | None = None

    def subprotocol(self, offered: Sequence[str]) -> str | None:
        return None

    def call_identity(self) -> dict[str, str]:
        """Who the results belong to, for the webhook."""
        return {"callSid": self.call_sid, "streamSid": self.stream_sid, "accountSid": self.account_sid}

    # --- client messages -----------------------------------------------------------------------------

    def waiting(self, message: ClientMessage) -> Command:
        if isinstance(message, bytes):
            return None  # Twilio sends text only
        try:
            obj = loads_object(message)
            if obj.get("event") == "start":
                return commands.Begin(self._start(obj))
        except GatewayError as exc:
            return commands.Refuse(exc)
        return None  # connected; media, dtmf or stop before start: nothing to do

    def _start(self, obj: dict[str, Any]) -> StartRequest:
        start = obj.get("start")
        if not isinstance(start, dict):
            raise BadRequest("a start message needs its start object", code=ErrorCode.INVALID_START)
        media = start.get("mediaFormat")
        media = media if isinstance(media, dict) else {}
        fmt = AudioFormat(
            parse_encoding(str(media.get("encoding", "audio/x-mulaw"))),
            declared_int(media.get("sampleRate"), 8000, name="mediaFormat.sampleRate"),
            declared_int(media.get("channels"), 1, name="mediaFormat.channels"),
        )
        if fmt != TWILIO_AUDIO:
            raise AudioFormatError("Twilio Media Streams carry audio/x-mulaw at 8000 Hz, one channel")
        # Kept for the call's life: only the ids, cut short; of customParameters only what Start needs.
        self.stream_sid = identity_text(start.get("streamSid") or obj.get("streamSid"))
        self.call_sid = identity_text(start.get("callSid"))
        self.account_sid = identity_text(start.get("accountSid"))
        custom = start.get("customParameters")
        custom = custom if isinstance(custom, dict) else {}
        tracks = {str(t) for t in start["tracks"]} if isinstance(start.get("tracks"), list) else set()
        self.bidirectional = "outbound" not in tracks  # only a one-way <Start><Stream> streams what is played
        self.tracks = TwoTracks() if {"inbound", "outbound"} <= tracks else None
        self.track = "outbound" if tracks == {"outbound"} else "inbound"  # <Start><Stream track="outbound_track">
        project = self.project if self.project_from_url else (scalar_text(custom.get("project")) or self.project)
        if not project:
            raise BadRequest("no project: add a 'project' custom parameter", code=ErrorCode.INVALID_START)
        return StartRequest(
            project=project,
            audio=TWILIO_AUDIO if self.tracks is None else STEREO,
            language=scalar_text(custom.get("language")) or None,
            call_properties={"ExternalId": self.call_sid} if self.call_sid else None,
        )

    def streaming(self, message: ClientMessage) -> Command:
        # Fifty media messages a second per call: parsed with json.loads alone (a deep message fails with
        # RecursionError; nothing below walks it), not the general depth-checked parser, which costs 4x.
        if isinstance(message, bytes):
            return None
        try:
            obj = json.loads(message)
        except (ValueError, RecursionError):
            return commands.Refuse(InvalidMessage("message is not valid JSON"))
        if not isinstance(obj, dict):
            return commands.Refuse(InvalidMessage("message must be a JSON object"))
        event = obj.get("event")
        if event == "media":
            return self._media(obj.get("media"))
        if event == "stop":
            return commands.Finalize()  # the call (or the stream) ended: deliver what was said
        if event == "start":
            return commands.Refuse(InvalidState("the stream has already started", code=ErrorCode.ALREADY_STARTED))
        return None  # dtmf (the tones are in the audio), mark (our audio was played), unknown events

    def _media(self, media: Any) -> Command:
        if not isinstance(media, dict):
            return None
        track = media.get("track", self.track)
        if track not in ("inbound", "outbound") or (self.tracks is None and track != self.track):
            return None
        try:
            audio = binascii.a2b_base64(media.get("payload") or "", strict_mode=True)
        except (binascii.Error, ValueError, TypeError):
            return commands.Refuse(InvalidMessage("a media payload is not base64"))  # closes 1007, as documented
        if self.tracks is None:
            return commands.Audio(audio)
        timestamp = media.get("timestamp")
        at = int(timestamp) if isinstance(timestamp, str) and timestamp.isdigit() and len(timestamp) < 12 else None
        stereo = self.tracks.feed(0 if track == "inbound" else 1, at, audio)
        return commands.Audio(stereo) if stereo else None

    def fast_audio(self, message: ClientMessage) -> bytes | None:
        """A media message's audio (b"": a track not relayed, or buffered for the stereo mix); None for
        anything else, or a payload that is not base64 (streaming() then says so)."""
        if not isinstance(message, str):
            return None
        try:
            obj = json.loads(message)
        except (ValueError, RecursionError):
            return None
        if not isinstance(obj, dict) or obj.get("event") != "media":
            return None
        command = self._media(obj.get("media"))
        if isinstance(command, commands.Audio):
            return command.data
        return b"" if command is None else None

    def flush(self) -> bytes:
        """Both tracks: what the track ahead still holds, the other padded with silence (the input ends)."""
        return self.tracks.flush() if self.tracks is not None else b""

    def failed(self, command: SessionCommand, error: GatewayError) -> Command:
        return None  # media after stop: Twilio gets nothing back but audio

    # --- session items -------------------------------------------------------------------------------

    def render(self, item: OutItem) -> Sequence[Frame]:
        if isinstance(item, Started):
            upstream = item.upstream_format
            self._tts = AudioConverter(AudioFormat("pcm16", upstream.sample_rate, 1), TWILIO_AUDIO)
        elif isinstance(item, UpstreamAudio) and self.bidirectional and self._tts is not None:
            return self._speak(item.data)
        return ()  # results go to the webhook: Twilio's socket takes audio and marks only

    def _speak(self, pcm: bytes) -> Sequence[Frame]:
        assert self._tts is not None
        audio = self._tts.convert(pcm)
        if not audio:
            return ()
        frames: list[Frame] = [
            {"event": "media", "streamSid": self.stream_sid,
             "media": {"payload": base64.b64encode(audio[i : i + MEDIA_CHUNK_BYTES]).decode("ascii")}}
            for i in range(0, len(audio), MEDIA_CHUNK_BYTES)
        ]  # fmt: skip
        self.marks += 1
        frames.append({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": f"tts-{self.marks}"}})
        return frames

    def goodbye(self, closed: Closed) -> commands.Goodbye:
        return commands.Goodbye(())  # no text for Twilio: the close code (and the webhook's summary) say it

    def refusal(self, error: GatewayError, *, start_failed: bool) -> Sequence[Frame]:
        log.info("refused a Twilio stream: %s", error.error_code)
        return ()
