"""How a WebSocket connection's last session ends, and how long a client that closes the socket itself
(AudioHook) is given to do so after the goodbye."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from gateway.adapters.call_results import CallResults
from gateway.relay.items import SessionState
from gateway.relay.session import Session
from gateway.settings import Settings

log = logging.getLogger(__name__)

#: After its goodbye the gateway waits this long for a client that closes the socket itself (AudioHook:
#: ``disconnect`` -> ``close`` -> ``closed``, then the client closes), then closes it.
CLIENT_CLOSE_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class ClientCloses:
    """The goodbye went out; the client closes the socket by ``deadline``, else the gateway does."""

    code: int
    reason: str
    deadline: float

    @classmethod
    def from_now(cls, code: int, reason: str) -> ClientCloses:
        return cls(code, reason, time.monotonic() + CLIENT_CLOSE_WAIT_S)


async def end_session(
    session: Session, sender: asyncio.Task[None] | None, results: CallResults, settings: Settings
) -> None:
    """The connection is over: abort a session still running and give its goodbye a bounded time."""
    await results.hang_up(session)  # a telephony hang-up finalizes (Data Flow finishes, results go out)
    if session.state is SessionState.FINALIZING:  # finalize, then gone: let Data Flow finish (bounded)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.finalize_timeout_s + 1):
                await session.wait_closed()
    if session.closed is None:
        session.abort()  # the client went away or stopped talking: nothing reads what Data Flow sends
    if sender is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.client_send_timeout_s):
                await asyncio.shield(sender)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        if not sender.cancelled() and sender.exception() is not None:
            log.error("session %s: the sender failed", session.id, exc_info=sender.exception())
    await session.aclose()
