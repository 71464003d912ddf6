"""A client's WebSocket with every send bounded in time: a client that does not read cannot hold a
session (or a drain) forever."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterable
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from gateway.errors import ClientGone, ClientTooSlow, GatewayError
from gateway.relay.client_json import client_json
from gateway.ws_protocol import ABORT, WRITABLE

#: A frame for the client: a JSON object (sent as a text frame) or bytes (a binary frame).
Frame = dict[str, Any] | bytes


class ClientSocket:
    def __init__(self, ws: WebSocket, send_timeout_s: float) -> None:
        self.ws = ws
        self.send_timeout_s = send_timeout_s
        # Set while uvicorn's transport takes a send at once (gateway.ws_protocol): no timer needed then.
        self._writable: asyncio.Event | None = (ws.scope.get("extensions") or {}).get(WRITABLE)

    async def send(self, frame: Frame) -> None:
        """Raises ClientTooSlow when the client does not take it in time, ClientGone when it left."""
        if isinstance(frame, bytes):
            await self._send(self.ws.send_bytes(frame))
        else:
            await self._send(self.ws.send_text(client_json(frame)))

    async def send_all(self, frames: Iterable[Frame]) -> None:
        """Send ``frames`` in order while the client takes them: one gone or too slow ends the sending
        quietly (a reply or a goodbye; its session learns of the loss on its own)."""
        with contextlib.suppress(ClientGone, GatewayError):
            for frame in frames:
                await self.send(frame)

    async def _send(self, sending: Awaitable[None]) -> None:
        if self._writable is not None and self._writable.is_set():
            try:
                await sending  # does not wait: one timer per message less on the hot path
            except Exception as exc:
                raise ClientGone(str(exc)) from None
            return
        try:
            async with asyncio.timeout(self.send_timeout_s):
                await sending
        except TimeoutError:
            raise ClientTooSlow(f"the client did not read for {self.send_timeout_s:g} s") from None
        except Exception as exc:  # WebSocketDisconnect, RuntimeError after close, transport errors
            raise ClientGone(str(exc)) from None

    async def close(self, code: int, reason: str = "") -> None:
        """Close with ``code``; a client that takes not even the close frame in time is dropped."""
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return
        try:
            async with asyncio.timeout(self.send_timeout_s):
                await self.ws.close(code, reason[:120])
        except TimeoutError:
            if abort := (self.ws.scope.get("extensions") or {}).get(ABORT):
                abort()  # else the connection, its slot and its reader would wait for the client for ever
        except Exception:  # noqa: S110 - gone already (a disconnect, a transport error): nothing to close
            pass
