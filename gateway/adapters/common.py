"""What every WebSocket adapter shares: bounded sends, the sender loop, and running a session's
receive and send sides together so either one ending ends the other."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import WebSocket
from starlette.websockets import WebSocketState

from gateway.errors import ClientTooSlow, GatewayError
from gateway.session import Closed, OutItem, Session

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger(__name__)

Render = Callable[[OutItem], Awaitable[None]]

#: A receive loop yields to the event loop after this many client messages. One socket read can hold
#: thousands of tiny frames, all queued at once; without a yield a flood would hold the loop from every
#: other session (and from sending this client's own answers) until it is all handled.
YIELD_EVERY = 32


def gateway_of(ws: WebSocket) -> Gateway:
    gateway: Gateway = ws.app.state.gateway
    return gateway


class ClientGone(Exception):
    """The client's socket is closed or did not take a message within the send budget."""


class ClientSocket:
    """A WebSocket whose every send is bounded by ``client_send_timeout_s``."""

    def __init__(self, ws: WebSocket, send_timeout_s: float) -> None:
        self.ws = ws
        self.send_timeout_s = send_timeout_s

    async def send_json(self, payload: dict[str, Any]) -> None:
        await self._send(self.ws.send_text(json.dumps(payload, separators=(",", ":"))))

    async def send_bytes(self, data: bytes) -> None:
        await self._send(self.ws.send_bytes(data))

    async def _send(self, sending: Awaitable[None]) -> None:
        try:
            async with asyncio.timeout(self.send_timeout_s):
                await sending
        except TimeoutError:
            raise ClientTooSlow(f"the client did not read for {self.send_timeout_s:g} s") from None
        except Exception as exc:  # WebSocketDisconnect, RuntimeError after close, transport errors
            raise ClientGone(str(exc)) from None

    async def close(self, code: int, reason: str = "") -> None:
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.send_timeout_s):
                await self.ws.close(code, reason[:120])


async def send_loop(
    session: Session, socket: ClientSocket, render: Render, finish: Callable[[Closed], Awaitable[None]]
) -> None:
    """Render everything the session produces; on Closed, let ``finish`` say goodbye and close."""
    async for item in session.outbound():
        if isinstance(item, Closed):
            with contextlib.suppress(ClientGone, GatewayError):
                await finish(item)
            await socket.close(item.code, item.reason)
            return
        try:
            await render(item)
        except ClientTooSlow as exc:
            session.abort("client_too_slow", exc)
        except ClientGone:
            session.abort()
        except (ValueError, TypeError, RecursionError) as exc:  # JSON that cannot be written (nested too deep)
            log.warning("session %s: a message could not be rendered (%s)", session.id, type(exc).__name__)
            session.abort("internal_error", GatewayError("a message from Data Flow could not be relayed"))


async def run_session(session: Session, receive: Awaitable[None], send: Awaitable[None]) -> None:
    """Run the receive and send sides; whichever ends first, the other is wound down."""
    receiver = asyncio.ensure_future(receive)
    sender = asyncio.ensure_future(send)
    try:
        await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
        if receiver.done() and not sender.done():
            # The client went away or stopped talking: nothing will read what Data Flow still sends.
            if session.closed is None:
                session.abort()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(session.settings.client_send_timeout_s):
                    await asyncio.shield(sender)
    finally:
        for task in (receiver, sender):
            task.cancel()
        await asyncio.gather(receiver, sender, return_exceptions=True)
        await session.aclose()
        for task in (receiver, sender):
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("session %s task failed", session.id, exc_info=task.exception())
