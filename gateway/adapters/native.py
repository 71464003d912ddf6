"""``/v1/stream``: the gateway's own WebSocket protocol (browsers and servers).

Client text frames: start, finalize, stop, update, event, ping. Binary frames: audio in the
format declared by start, any size. Server text frames: started, event, response, ack, error,
pong, closed; binary frames: audio from Data Flow. The AsyncAPI document (/asyncapi.yaml) is the
reference; close codes are listed in ``gateway/errors.py`` and the README.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.adapters.common import YIELD_EVERY, ClientSocket, gateway_of, run_session, send_loop
from gateway.audio import AudioFormat, parse_encoding
from gateway.dataflow_json import PARTIAL, DataflowEvent, DataflowResponse, StartRequest, loads_object
from gateway.errors import BadRequest, GatewayError, InvalidMessage, LimitReached
from gateway.security import chosen_subprotocol
from gateway.session import Closed, Flow, Notice, OutItem, Session, Started
from gateway.upstream.client import UpstreamAudio

log = logging.getLogger(__name__)
router = APIRouter()


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


def _invalid_start(exc: ValidationError) -> BadRequest:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'start'}: {e['msg']}" for e in exc.errors())
    return BadRequest(f"invalid start message: {problems}", code="invalid_start")


def _error_json(error: GatewayError) -> dict[str, Any]:
    return {"type": "error", **error.to_json()}


class NativeConnection:
    def __init__(self, ws: WebSocket) -> None:
        self.gateway = gateway_of(ws)
        self.settings = self.gateway.settings
        self.ws = ws
        self.socket = ClientSocket(ws, self.settings.client_send_timeout_s)
        self.interim = True
        self.raw = False

    async def run(self) -> None:
        gate = self.gateway.gate
        admitted, principal = await gate.admit_ws(self.ws, in_band=True)
        if not admitted:
            return
        await self.ws.accept(subprotocol=chosen_subprotocol(self.ws))
        try:
            self.gateway.registry.check_capacity()  # say so now rather than after the client's start
        except GatewayError as exc:
            await self._refuse(exc)
            return
        opened = await self._await_start()
        if opened is None:
            return
        request, client_format, token = opened
        try:
            if principal is None:  # a browser that could only send its token in the start message
                principal = gate.authenticate_in_band(token, self.ws.headers.get("origin"))
            lease, limits = gate.admit("native", principal, request.project)
        except GatewayError as exc:
            await self._refuse(exc)
            return
        session = Session(self.gateway.upstream, self.settings, lease, limits)
        try:
            try:
                await session.start(request, client_format)
            except GatewayError as exc:
                await self._refuse(exc, "start_failed")
                return
            await run_session(
                session, self._receive(session), send_loop(session, self.socket, self._render, self._goodbye)
            )
        finally:
            await session.aclose()
            lease.release()

    async def _refuse(self, error: GatewayError, reason: str | None = None) -> None:
        await self.socket.send_json(_error_json(error))
        await self.socket.send_json({"type": "closed", "reason": reason or error.error_code, "audioMs": 0})
        await self.socket.close(error.ws_close_code, error.error_code)

    # --- before start ------------------------------------------------------------------------------

    async def _await_start(self) -> tuple[StartRequest, AudioFormat, str | None] | None:
        """Read until a valid start message; None if the connection ended or timed out."""
        try:
            async with asyncio.timeout(self.settings.start_timeout_s):
                while True:
                    message = await self.ws.receive()
                    if message["type"] == "websocket.disconnect":
                        return None
                    if message.get("bytes") is not None:
                        await self.socket.send_json(_error_json(
                            InvalidMessage("send a start message before audio; this audio was dropped",
                                           code="audio_before_start")))  # fmt: skip
                        continue
                    try:
                        obj = loads_object(message.get("text") or "")
                        kind = obj.get("type")
                        if kind == "ping":
                            await self.socket.send_json({"type": "pong", "id": obj.get("id")})
                            continue
                        if kind != "start":
                            raise InvalidMessage(f"expected a start message, got {kind!r}", code="not_started")
                        return self._parse_start(obj)
                    except GatewayError as exc:
                        await self.socket.send_json(_error_json(exc))
        except TimeoutError:
            limit = LimitReached(f"no start message within {self.settings.start_timeout_s:g} s", code="start_timeout")
            await self._refuse(limit)
            return None

    def _parse_start(self, obj: dict[str, Any]) -> tuple[StartRequest, AudioFormat, str | None]:
        try:
            start = StartMessage.model_validate(obj)
        except ValidationError as exc:
            raise _invalid_start(exc) from None
        client_format = AudioFormat(
            parse_encoding(start.audio.encoding), start.audio.sample_rate, start.audio.channels
        ).validate()
        project = start.project or self.settings.default_project
        if not project:
            raise BadRequest("start.project is required (no default project is configured)", code="invalid_start")
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
        return request, client_format, start.token

    # --- streaming ---------------------------------------------------------------------------------

    async def _receive(self, session: Session) -> None:
        handled = 0
        while session.closed is None:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            handled += 1
            if not handled % YIELD_EVERY:
                await asyncio.sleep(0)  # a flood of frames must not hold the loop (answers, other sessions)
            data = message.get("bytes")
            try:
                if data is not None:
                    await session.feed_audio(data)
                else:
                    await self._control(session, loads_object(message.get("text") or ""))
            except GatewayError as exc:
                session.notify(exc)

    async def _control(self, session: Session, obj: dict[str, Any]) -> None:
        kind = obj.get("type")
        if kind == "finalize":
            await session.finalize()
        elif kind == "stop":
            await session.stop()
        elif kind == "update":
            settings = obj.get("settings")
            if not isinstance(settings, dict):
                raise BadRequest("update.settings must be an object", code="invalid_update")
            await session.update(settings)
        elif kind == "event":
            event = obj.get("event")
            if not isinstance(event, dict):
                raise BadRequest("event.event must be an object", code="invalid_event")
            await session.send_event(event)
        elif kind == "ping":
            session.touch()
            session.reply({"type": "pong", "id": obj.get("id")})
        elif kind == "start":
            raise InvalidMessage("the session has already been started", code="already_started")
        else:
            raise InvalidMessage(f"unknown message type {kind!r}", code="unknown_message_type")

    async def _render(self, item: OutItem) -> None:
        socket = self.socket
        if isinstance(item, DataflowEvent):
            if item.name == PARTIAL and not self.interim:
                return
            await socket.send_json(render_event(item, raw=self.raw))
        elif isinstance(item, UpstreamAudio):
            await socket.send_bytes(item.data)
        elif isinstance(item, Flow):
            await socket.send_json({"type": "ack", "audioMs": item.audio_ms, "sentMs": item.sent_ms,
                                    "bufferedMs": item.buffered_ms, "paused": item.paused})  # fmt: skip
        elif isinstance(item, DataflowResponse):
            await socket.send_json({"type": "response", "name": item.name, "ok": item.ok, "error": item.error})
        elif isinstance(item, Notice):
            await socket.send_json(_error_json(item.error))
        elif isinstance(item, Started):
            await socket.send_json(render_started(item))
        elif isinstance(item, dict):
            await socket.send_json(item)

    async def _goodbye(self, closed: Closed) -> None:
        if closed.error is not None:
            await self.socket.send_json(_error_json(closed.error))
        await self.socket.send_json({"type": "closed", "reason": closed.reason, "audioMs": closed.audio_ms})


def _format_json(fmt: AudioFormat) -> dict[str, Any]:
    return {"encoding": fmt.encoding, "sampleRate": fmt.sample_rate, "channels": fmt.channels}


def render_started(item: Started) -> dict[str, Any]:
    return {
        "type": "started",
        "sessionId": item.session_id,
        "dataflowSessionId": item.dataflow_session_id,
        "audio": _format_json(item.client_format),
        "upstreamAudio": _format_json(item.upstream_format),
    }


def render_event(event: DataflowEvent, *, raw: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "event",
        "name": event.name,
        "channel": event.channel,
        "startMs": event.start_ms,
        "endMs": event.end_ms,
        "groupId": event.group_id,
        "final": event.final,
        "text": event.text,
        "data": event.data,
    }
    if raw:
        body["raw"] = event.raw
    return body


@router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    await NativeConnection(ws).run()
