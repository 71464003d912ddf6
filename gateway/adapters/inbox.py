"""A client's incoming WebSocket messages, kept in order while a session is starting.

Legacy clients send audio right after their start message without waiting for the answer. While
Data Flow answers Start, the inbox keeps reading the socket — so a client that vanishes cancels
the upstream start at once — and holds what arrives (bounded) for the adapter to handle, in
order, once the session streams. Past the bound it stops reading: the rest waits in the socket
(TCP flow control), still not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from fastapi import WebSocket
from starlette.types import Message as AsgiMessage

from gateway.adapters.common import YIELD_EVERY
from gateway.audio import AudioFormat
from gateway.dataflow_json import StartRequest
from gateway.errors import GatewayError, GoingAway
from gateway.session import Session, Started

Message = dict[str, Any]


class ClientInbox:
    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self._held: deque[Message] = deque()
        self._pending: asyncio.Future[AsgiMessage] | None = None
        self.disconnected = False
        self._received = 0

    async def receive(self) -> Message:
        """The next client message: held ones first, then the socket."""
        self._received += 1
        if not self._received % YIELD_EVERY:
            await asyncio.sleep(0)  # a flood of frames must not hold the loop (answers, other sessions)
        if self._held:
            message = self._held.popleft()
        elif self._pending is not None:
            pending, self._pending = self._pending, None
            message = dict(await pending)
        else:
            message = dict(await self._ws.receive())
        if message["type"] == "websocket.disconnect":
            self.disconnected = True
        return message

    async def start(
        self, session: Session, request: StartRequest, client_format: AudioFormat, hold_ms: float
    ) -> Started | GatewayError:
        """Start ``session`` while holding up to ``hold_ms`` of client audio; the start error if it failed.

        If the client disconnects meanwhile, the session is aborted (cancelling the upstream start).
        """
        limit = max(client_format.ms_to_bytes(hold_ms), 1)
        held_bytes = 0
        starting = asyncio.ensure_future(session.start(request, client_format))
        try:
            while not starting.done():
                if self._pending is None and held_bytes < limit and not self.disconnected:
                    self._pending = asyncio.ensure_future(self._ws.receive())
                waiting: set[asyncio.Future[Any]] = {starting}
                if self._pending is not None:
                    waiting.add(self._pending)
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if self._pending is not None and self._pending.done():
                    message = dict(self._pending.result())
                    self._pending = None
                    self._held.append(message)
                    held_bytes += len(message.get("bytes") or b"") + len(message.get("text") or "")
                    if message["type"] == "websocket.disconnect":
                        self.disconnected = True
                        session.abort()
        finally:
            if not starting.done():  # we were cancelled ourselves
                starting.cancel()
                with contextlib.suppress(BaseException):
                    await starting
        if starting.cancelled():
            # An abort (client gone, drain) cancels the gRPC call under session.start().
            closed = session.closed
            return closed.error if closed is not None and closed.error else GoingAway("the session was closed")
        error = starting.exception()
        if isinstance(error, GatewayError):
            return error
        if error is not None:
            raise error
        return starting.result()

    def close(self) -> None:
        """Stop a read still in flight (the connection is over)."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
