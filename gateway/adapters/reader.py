"""The read side of a client's WebSocket: messages in order, and a session started while reading.

Clients send audio right after their start message without waiting for the answer. While Data Flow
answers Start, :meth:`ClientReader.start` keeps reading the socket — so a client that vanishes
cancels the upstream start at once — and holds what arrives (bounded) for the driver to handle, in
order, once the session streams. Past the bound it stops reading: the rest waits in the socket (TCP
flow control), still not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket

from gateway.adapters.dialect import ClientMessage
from gateway.dataflow.messages import StartRequest
from gateway.errors import GatewayError, GoingAway
from gateway.relay.session import Session

#: The reader yields to the event loop after this many client messages. One socket read can hold
#: thousands of tiny frames, all queued at once; without a yield a flood would hold the loop from every
#: other session (and from sending this client's own answers) until it is all handled.
YIELD_EVERY = 32

#: What a held message counts as at least: an empty or tiny frame still costs its
#: object and its place in the queue, and counted as 0 bytes any number of them would be held.
HELD_MESSAGE_MIN_BYTES = 64


def held_size(message: ClientMessage) -> int:
    """What holding ``message`` counts as against a hold's bound."""
    return max(len(message), HELD_MESSAGE_MIN_BYTES)


class HeldMessages(deque[ClientMessage]):
    """Messages read ahead of the driver, in order. ``counted_bytes`` (their held_size) is kept whoever
    appends, so a bound checks it without walking the queue."""

    counted_bytes = 0

    def append(self, message: ClientMessage) -> None:
        super().append(message)
        self.counted_bytes += held_size(message)

    def popleft(self) -> ClientMessage:
        message = super().popleft()
        self.counted_bytes -= held_size(message)
        return message

    def appendleft(self, message: ClientMessage) -> None:
        super().appendleft(message)
        self.counted_bytes += held_size(message)


class ClientReader:
    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self._held = HeldMessages()
        self._pending: asyncio.Future[Any] | None = None
        self._received = 0
        self.disconnected = False
        self.queued = 0  # messages that came through ASGI receive() (not the fast path)
        self.idle = False  # every earlier message is handled and the driver waits for the next (fast path)

    def put_back(self, message: ClientMessage) -> None:
        """``message`` is the next one :meth:`next` returns (the driver handles it later)."""
        self._held.appendleft(message)

    async def next(self) -> ClientMessage | None:
        """The next client message: held ones first, then the socket; None once the client is gone."""
        self._received += 1
        if not self._received % YIELD_EVERY:
            await asyncio.sleep(0)  # a flood of frames must not hold the loop (answers, other sessions)
        if self._held:
            return self._held.popleft()
        if self.disconnected:
            return None
        receiving: Awaitable[Any]
        if self._pending is not None:  # the read the start left waiting
            receiving, self._pending = self._pending, None
        else:
            receiving = self._ws.receive()
        self.idle = True  # everything before is handled: the fast path may take what comes meanwhile
        try:
            return self._decode(await receiving)
        finally:
            self.idle = False

    def _decode(self, message: Any) -> ClientMessage | None:
        if message["type"] == "websocket.disconnect":
            self.disconnected = True
            return None
        self.queued += 1
        data: bytes | None = message.get("bytes")
        if data is not None:
            return data
        text: str = message.get("text") or ""
        return text

    async def start(
        self,
        session: Session,
        request: StartRequest,
        hold_ms: float,
        *,
        hang_up_finishes: bool = False,
        answer: Callable[[ClientMessage], Awaitable[bool]] | None = None,
    ) -> GatewayError | None:
        """Start ``session`` while reading, holding up to ``hold_ms`` of what arrives; the start's error.
        A message ``answer`` takes (answers at once: AudioHook's ping) is done with, not held.

        A client that disconnects meanwhile aborts the session, which cancels the upstream start —
        unless its hanging up is how a call ends (telephony with webhooks): then the start goes on, and
        what it sent is finalized as after any hang-up.
        """
        limit = max(request.audio.ms_to_bytes(hold_ms), 1)
        starting = asyncio.ensure_future(session.start(request, request.audio))
        try:
            while not starting.done():
                if self._pending is None and self._held.counted_bytes < limit and not self.disconnected:
                    self._pending = asyncio.ensure_future(self._ws.receive())
                waiting: set[asyncio.Future[Any]] = {starting}
                if self._pending is not None:
                    waiting.add(self._pending)
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if self._pending is not None and self._pending.done():
                    message = self._decode(self._pending.result())
                    self._pending = None
                    if message is None:
                        if not hang_up_finishes:
                            session.abort()
                    elif answer is None or not await answer(message):
                        self._held.append(message)
        finally:
            if not starting.done():  # we were cancelled ourselves
                starting.cancel()
                with contextlib.suppress(BaseException):
                    await starting
        if starting.cancelled():
            closed = session.closed
            return closed.error if closed is not None and closed.error else GoingAway("the session was closed")
        error = starting.exception()
        if isinstance(error, GatewayError):
            return error
        if error is not None:
            raise error
        return None

    def close(self) -> None:
        """Stop a read still in flight (the connection is over)."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
