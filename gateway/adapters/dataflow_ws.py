"""``/project-runner`` and ``/project-runner/{project}``: Data Flow's own WebSocket protocol.

Existing Data Flow clients change only the URL. Text frames carry Start/Update/Finalize/Stop and
``{"Event": {...}}`` JSON in either dialect (read with ``gateway.dataflow_json``); binary frames
carry audio in the format Start declares. The client's Token and Tenant are read and dropped: the
upstream Start carries the gateway's. Responses and events go back exactly as Data Flow sent them,
minus any token. Messages the gateway makes itself (a refused start, an error) are written in the
client's dialect. Close codes: 1000 after FinalResult, 1011 when Data Flow fails, the rest as in
``gateway/errors.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket

from gateway.adapters.common import ClientGone, ClientSocket, gateway_of, run_session, send_loop
from gateway.adapters.inbox import ClientInbox
from gateway.audio import AudioFormat
from gateway.auth import Principal
from gateway.dataflow_json import (
    DataflowEvent,
    DataflowResponse,
    StartRequest,
    get,
    loads_object,
    message_name,
    norm_key,
    parse_start,
)
from gateway.errors import BadRequest, GatewayError, InvalidMessage, LimitReached, UpstreamRejected
from gateway.session import Closed, Notice, OutItem, Session, Started
from gateway.upstream.client import UpstreamAudio

log = logging.getLogger(__name__)
router = APIRouter()

# What a Start declares when it leaves (part of) Audio out: Data Flow's own default input.
DEFAULT_AUDIO = AudioFormat("pcm16", 16000, 1)

_RESPONSE_NAMES = {
    "start": "StartResponse",
    "update": "UpdateResponse",
    "finalize": "FinalizeResponse",
    "stop": "StopResponse",
}


@dataclass(frozen=True, slots=True)
class Dialect:
    """The JSON spelling of the client, for the messages the gateway writes itself."""

    legacy: bool

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Dialect:
        # Current clients write "MessageName"; legacy ones "message-name" (lower case, kebab).
        key = next((k for k in obj if norm_key(k) == "messagename"), "MessageName")
        return cls(legacy=key == key.lower())

    def response(self, name: str, error: GatewayError, text: str | None = None) -> dict[str, Any]:
        """A failed ``name`` response carrying the error text and the gateway's error code."""
        result = text or error.message
        if self.legacy:
            return {"message-name": _kebab(name), "operation-result": result, "error-code": error.error_code}
        return {"MessageName": name, "OperationResult": result, "ErrorCode": error.error_code}


def _kebab(name: str) -> str:
    return "".join(f"-{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def scrub(value: Any) -> Any:
    """``value`` without any key that reads as a token, at any depth (Data Flow's JSON goes to clients)."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if norm_key(str(k)) != "token"}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


class DataflowConnection:
    def __init__(self, ws: WebSocket, path_project: str) -> None:
        self.gateway = gateway_of(ws)
        self.settings = self.gateway.settings
        self.ws = ws
        self.path_project = path_project
        self.socket = ClientSocket(ws, self.settings.client_send_timeout_s)
        self.inbox = ClientInbox(ws)
        self.dialect = Dialect(legacy=False)

    async def run(self) -> None:
        # Credentials come with the handshake (header, or /t/<secret>/ in the URL), never in Start.
        admitted, principal = await self.gateway.gate.admit_ws(self.ws)
        if not admitted or principal is None:
            return
        await self.ws.accept()
        try:
            request = await self._read_start()
            if request is not None:
                await self._serve(request, principal)
        finally:
            self.inbox.close()

    async def _serve(self, request: StartRequest, principal: Principal) -> None:
        # The slot is taken once Start is read, so a refusal can answer in the client's dialect.
        gate = self.gateway.gate
        try:
            lease, limits = gate.admit("dataflow_ws", principal, request.project)
        except GatewayError as exc:
            await self._refuse(exc)
            return
        session = Session(self.gateway.upstream, self.settings, lease, limits)
        try:
            client_format = request.audio
            result = await self.inbox.start(session, request, client_format, self.settings.pre_start_audio_ms)
            if isinstance(result, GatewayError):
                if not self.inbox.disconnected:
                    await self._refuse(result)
                return
            sending = send_loop(session, self.socket, self._render, self._goodbye)
            await run_session(session, self._receive(session), sending)
        finally:
            session.abort()
            lease.release()

    async def _refuse(self, error: GatewayError) -> None:
        """Answer a failed start the way Data Flow does (a StartResponse with the error), then close."""
        # Data Flow's own words when it refused; the gateway's otherwise.
        text = error.dataflow_message if isinstance(error, UpstreamRejected) else None
        with contextlib.suppress(ClientGone, GatewayError):
            await self.socket.send_json(self.dialect.response("StartResponse", error, text))
        await self.socket.close(error.ws_close_code, error.error_code)

    # --- before start ------------------------------------------------------------------------------

    async def _read_start(self) -> StartRequest | None:
        """The client's Start (Token and Tenant dropped), or None once the connection was refused."""
        try:
            async with asyncio.timeout(self.settings.start_timeout_s):
                message = await self.inbox.receive()
        except TimeoutError:
            timeout = self.settings.start_timeout_s
            await self._refuse(LimitReached(f"no Start within {timeout:g} s", code="start_timeout"))
            return None
        if message["type"] == "websocket.disconnect":
            return None
        try:
            if message.get("bytes") is not None:
                raise BadRequest("the first message must be a Start request, not audio", code="not_started")
            obj = loads_object(message.get("text") or "")
            self.dialect = Dialect.of(obj)
            if message_name(obj) != "start":
                raise BadRequest("the first message must be a Start request", code="not_started")
            # The client's token and tenant are discarded unread: the gateway injects its own.
            request, _token, _tenant = parse_start(obj, default_audio=DEFAULT_AUDIO, project=self.path_project)
            request.project = request.project or self.settings.default_project
            if not request.project:
                raise BadRequest("ProjectName is required (no default project is configured)", code="invalid_start")
        except GatewayError as exc:
            await self._refuse(exc)
            return None
        return request

    # --- streaming ---------------------------------------------------------------------------------

    async def _receive(self, session: Session) -> None:
        while session.closed is None:
            message = await self.inbox.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                await self._control(session, message.get("text") or "")
                continue
            # Audio after Finalize/Stop is dropped without a word, as Data Flow ignores it too.
            with contextlib.suppress(InvalidMessage):
                await session.feed_audio(data)

    async def _control(self, session: Session, text: str) -> None:
        name = "ErrorResponse"
        try:
            obj = loads_object(text)
            event = get(obj, "Event")
            if isinstance(event, dict):
                await session.send_event(event)
                return
            kind = message_name(obj)
            name = _RESPONSE_NAMES.get(kind, name)
            if kind == "finalize":
                await session.finalize()
            elif kind == "stop":
                await session.stop()
            elif kind == "update":
                settings = get(obj, "Settings")
                if not isinstance(settings, dict):
                    raise BadRequest("Update needs a Settings object", code="invalid_update")
                await session.update(settings)
            elif kind == "start":
                raise InvalidMessage("the session has already been started", code="already_started")
            else:
                raise InvalidMessage(f"unknown message {kind or '(no MessageName)'}", code="unknown_message_type")
        except GatewayError as exc:
            session.reply(self.dialect.response(name, exc))

    async def _render(self, item: OutItem) -> None:
        socket = self.socket
        if isinstance(item, DataflowEvent | DataflowResponse):
            await socket.send_json(scrub(item.raw))
        elif isinstance(item, UpstreamAudio):
            await socket.send_bytes(item.data)
        elif isinstance(item, Started):
            await socket.send_json(scrub(item.response.raw))
        elif isinstance(item, Notice):
            await socket.send_json(self.dialect.response("ErrorResponse", item.error))
        elif isinstance(item, dict):
            await socket.send_json(item)
        # Flow reports have no counterpart in Data Flow's protocol: not sent.

    async def _goodbye(self, closed: Closed) -> None:
        if closed.error is not None:
            await self.socket.send_json(self.dialect.response("ErrorResponse", closed.error))


@router.websocket("/project-runner")
async def project_runner(ws: WebSocket) -> None:
    await DataflowConnection(ws, "").run()


@router.websocket("/project-runner/{project}")
async def project_runner_for(ws: WebSocket, project: str) -> None:
    await DataflowConnection(ws, project).run()
