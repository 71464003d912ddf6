"""``/v1/audiocodes``: the AudioCodes VoiceAI Connect speech-to-text WebSocket API.

VoiceAI Connect keeps one socket per conversation and runs recognition sessions on it one after
another: ``start`` -> ``started``, binary LINEAR16 audio, ``hypothesis`` (SR Partial) and
``recognition`` (SR Milestone) results, ``stop`` -> Finalize -> ``end``. Each recognition is its
own Session (and session slot). Failures answer ``error`` and close the socket, as the API asks.
Start mapping: language -> Language, conversationId -> CallProperties.ExternalId; sttContextId and
sttSpeechContexts have no Data Flow counterpart and are dropped. The project is the ``project``
query parameter or the default project.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import APIRouter, WebSocket

from gateway.adapters.common import ClientGone, ClientSocket, gateway_of
from gateway.adapters.inbox import ClientInbox, Message
from gateway.audio import AudioFormat
from gateway.auth import ANONYMOUS
from gateway.dataflow_json import MILESTONE, PARTIAL, DataflowEvent, StartRequest, as_int, get, loads_object
from gateway.errors import AudioFormatError, BadRequest, ClientTooSlow, GatewayError, InvalidMessage
from gateway.session import Closed, OutItem, Session, Started

log = logging.getLogger(__name__)
router = APIRouter()

# Why a recognition ended, in words for VoiceAI Connect (Session reasons are the keys).
_END_REASONS = {"finalized": "stop requested", "stopped": "stop requested", "completed": "recognition complete"}
_WAV_HEADER_LIMIT = 64 * 1024  # a streamed WAV header (RIFF, fmt, LIST ...) is far smaller


class WavHeaderSkipper:
    """Drops the RIFF/WAVE header in front of ``format: wav`` audio, across frames; raw audio passes."""

    def __init__(self) -> None:
        self._head = b""
        self._done = False

    def feed(self, data: bytes) -> bytes:
        if self._done:
            return data
        head = self._head + data
        if len(head) < 12:
            self._head = head
            return b""
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            self._done = True  # no header after all: it was raw audio
            return head
        offset = 12
        while offset + 8 <= len(head):
            size = int.from_bytes(head[offset + 4 : offset + 8], "little")
            if head[offset : offset + 4] == b"data":
                self._done, self._head = True, b""
                return head[offset + 8 :]
            offset += 8 + size + (size & 1)  # chunks are word-aligned
        if len(head) > _WAV_HEADER_LIMIT:
            raise AudioFormatError("no WAV data chunk in the first 64 KiB of audio")
        self._head = head
        return b""


def parse_start(obj: dict[str, Any], *, project: str) -> tuple[StartRequest, WavHeaderSkipper | None]:
    """A VoiceAI Connect start as a neutral StartRequest (and a header skipper for ``format: wav``)."""
    encoding = obj.get("encoding", "LINEAR16")
    if str(encoding).upper() != "LINEAR16":
        raise AudioFormatError(f"encoding {encoding!r} is not supported; use LINEAR16")
    audio_format = obj.get("format", "raw")
    if audio_format not in ("raw", "wav"):
        raise AudioFormatError(f"format {audio_format!r} is not supported; use raw or wav")
    audio = AudioFormat("pcm16", as_int(obj.get("sampleRateHz"), 16000), 1).validate()
    if not project:
        raise BadRequest("no project: add ?project=<name> to the URL", code="invalid_start")
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
        return {"type": "recognition", "alternatives": [{"text": item.text, "confidence": _confidence(item.data)}]}
    return None


def _confidence(data: dict[str, Any]) -> float:
    # Data Flow does not promise a confidence; 1.0 says "final, no score given".
    value = get(data, "Confidence")
    if isinstance(value, bool):
        return 1.0
    try:
        return float(value)
    except (TypeError, ValueError):
        return 1.0


class AudioCodesConnection:
    def __init__(self, ws: WebSocket) -> None:
        self.gateway = gateway_of(ws)
        self.settings = self.gateway.settings
        self.ws = ws
        self.project = ws.query_params.get("project") or self.settings.default_project
        self.socket = ClientSocket(ws, self.settings.client_send_timeout_s)
        self.inbox = ClientInbox(ws)
        self.session: Session | None = None
        self.renderer: asyncio.Task[None] | None = None
        self.wav: WavHeaderSkipper | None = None
        self.principal = ANONYMOUS

    async def run(self) -> None:
        # Credentials come with the handshake (header, or /t/<secret>/ in the URL).
        admitted, principal = await self.gateway.gate.admit_ws(self.ws)
        if not admitted or principal is None:
            return
        self.principal = principal
        await self.ws.accept()
        try:
            while await self._handle(await self.inbox.receive()):
                pass
        finally:
            self.inbox.close()
            if self.session is not None:
                self.session.abort()  # the client went away mid-recognition: cancel upstream now
            await self._reap()

    async def _handle(self, message: Message) -> bool:
        """Act on one client message; False when the connection is over."""
        if message["type"] == "websocket.disconnect":
            return False
        data = message.get("bytes")
        if data is not None:
            await self._audio(data)
            return True
        try:
            obj = loads_object(message.get("text") or "")
        except GatewayError as exc:
            return await self._fail(exc)
        kind = obj.get("type")
        if kind == "start":
            return await self._start(obj)
        if kind == "stop":
            return await self._stop()
        log.debug("ignored an AudioCodes %r message", kind)
        return True

    async def _start(self, obj: dict[str, Any]) -> bool:
        if self.session is not None and self.session.closed is None:
            return await self._fail(InvalidMessage("a recognition is already running", code="already_started"))
        await self._reap()
        gate = self.gateway.gate
        try:
            request, self.wav = parse_start(obj, project=self.project)
            lease, limits = gate.admit("audiocodes", self.principal, request.project)
        except GatewayError as exc:
            return await self._fail(exc)
        session = Session(self.gateway.upstream, self.settings, lease, limits)
        result = await self.inbox.start(session, request, request.audio, self.settings.pre_start_audio_ms)
        if isinstance(result, GatewayError):
            lease.release()
            return False if self.inbox.disconnected else await self._fail(result)
        self.session = session
        self.renderer = asyncio.create_task(self._render_all(session), name=f"audiocodes-{session.id}")
        return True

    async def _stop(self) -> bool:
        session = self.session
        if session is None or session.closed is not None:
            await self._reap()  # the last recognition's own ``end`` goes first
            await self._send({"type": "end", "reason": "no recognition running"})
            return True
        with contextlib.suppress(InvalidMessage):  # a second stop while the first one flushes
            await session.finalize()
        return True

    async def _audio(self, data: bytes) -> None:
        session = self.session
        if session is None or session.closed is not None:
            return  # between recognitions VoiceAI Connect may still stream: nobody listens
        if self.wav is not None:
            try:
                data = self.wav.feed(data)
            except GatewayError as exc:
                session.abort("invalid_audio", exc)
                return
        with contextlib.suppress(InvalidMessage):  # audio after stop is dropped
            await session.feed_audio(data)

    async def _render_all(self, session: Session) -> None:
        """Send one recognition's results; on its end say ``end`` (or ``error`` and close)."""
        async for item in session.outbound():
            try:
                if isinstance(item, Closed):
                    await self._closed(item)
                    return
                message = render(item)
                if message is not None:
                    await self.socket.send_json(message)
            except ClientTooSlow as exc:
                session.abort("client_too_slow", exc)
            except ClientGone:
                session.abort()

    async def _closed(self, closed: Closed) -> None:
        if closed.error is None:
            await self._send({"type": "end", "reason": _END_REASONS.get(closed.reason, closed.reason)})
        else:
            await self._report(closed.error)

    async def _fail(self, error: GatewayError) -> bool:
        """End the connection over ``error`` (from the receive loop); always False."""
        session = self.session
        if session is not None and session.closed is None:
            session.abort("client_error", error)  # its renderer reports the error and closes
            return False
        await self._reap()
        await self._report(error)
        return False

    async def _report(self, error: GatewayError) -> None:
        """Say ``error`` and close: the API wants the socket closed when the server cannot go on."""
        await self._send({"type": "error", "reason": str(error)})
        await self.socket.close(error.ws_close_code, error.error_code)

    async def _send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(ClientGone, GatewayError):
            await self.socket.send_json(message)

    async def _reap(self) -> None:
        """Wait for the previous recognition to be fully over (its ``end`` sent, its tasks gone)."""
        if self.renderer is not None and self.renderer is not asyncio.current_task():
            await self.renderer
        self.renderer = None
        if self.session is not None:
            await self.session.aclose()
            self.session = None


@router.websocket("/v1/audiocodes")
async def audiocodes(ws: WebSocket) -> None:
    await AudioCodesConnection(ws).run()
