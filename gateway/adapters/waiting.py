"""A session command the driver awaits, and a client that vanishes meanwhile.

Feeding audio waits while Data Flow's buffer is full (bounded by upstream_response_timeout_s) or a
recovery is under way (bounded by upstream_recovery_window_s). Meanwhile the driver reads nothing and
uvicorn has stopped reading the socket, so a client that vanished would hold its upstream stream and
its slot until the wait ends. Once one command has waited a whole period, the connection looks for
its client every period: with the gateway's protocol (:mod:`gateway.ws_protocol`) it pings it — a
vanished peer answers with a reset, the next ping fails and the protocol says the connection is lost
at once, however much audio is still queued ahead of the disconnect; on any other server (or with
the fast path off) it reads ahead, holding what arrives (bounded, as during a start), until the
disconnect shows. A client that is gone aborts its session, which ends the wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket

from gateway.adapters import commands
from gateway.adapters.dialect import SessionCommand
from gateway.adapters.reader import ClientReader
from gateway.relay.items import SessionState
from gateway.relay.session import Session
from gateway.ws_protocol import ON_LOST, PROBE

#: How long a command waits before the client is looked for, and how often then. Two probes find a
#: vanished peer (the first draws its reset), so it is noticed within about twice this.
PERIOD_S = 0.25


async def run_command(command: SessionCommand, session: Session) -> None:
    if isinstance(command, commands.Audio):
        await session.feed_audio(command.data)
    elif isinstance(command, commands.Finalize):
        await session.finalize()
    elif isinstance(command, commands.Stop):
        await session.stop()
    elif isinstance(command, commands.Update):
        await session.update(command.settings)
    elif isinstance(command, commands.SendEvent):
        await session.send_event(command.event)
    elif isinstance(command, commands.AfterSession):
        await session.wait_closed()  # then the driver reads the message again, with no session running


class ReadAheadReader(ClientReader):
    """A :class:`ClientReader` that can read on while the driver waits, holding what arrives in order."""

    def __init__(self, ws: WebSocket) -> None:
        super().__init__(ws)
        self.on_disconnect: Callable[[], None] | None = None  # a read-ahead found the client gone

    def read_ahead(self, limit_bytes: int) -> None:
        """Start one read unless one is in flight, the client is gone or ``limit_bytes`` are held."""
        if self._pending is not None or self.disconnected or self._held.counted_bytes >= limit_bytes:
            return
        pending = asyncio.ensure_future(self._ws.receive())
        self._pending = pending
        pending.add_done_callback(lambda _: self._arrived(pending, limit_bytes))

    def _arrived(self, pending: asyncio.Future[Any], limit_bytes: int) -> None:
        if self._pending is not pending or pending.cancelled() or pending.exception() is not None:
            return  # the driver took this read over (or closed it): next() has its result or error
        self._pending = None
        message = self._decode(pending.result())
        if message is None:
            if self.on_disconnect is not None:
                self.on_disconnect()
            return
        self._held.append(message)
        self.read_ahead(limit_bytes)


class CommandWait:
    """Runs the driver's session commands; while one waits, finds out whether the client is gone."""

    def __init__(self, ws: WebSocket, reader: ReadAheadReader, hold_ms: float, *, hang_up_finishes: bool) -> None:
        extensions = ws.scope.get("extensions") or {}
        self._probe = extensions.get(PROBE)
        self._watch_lost = extensions.get(ON_LOST)
        self._reader = reader
        self._hold_ms = hold_ms
        self._hang_up_finishes = hang_up_finishes  # its hang-up finalizes: the session must go on
        self._busy: Session | None = None
        self._commands = 0
        self._armed_at = 0
        self._timer: asyncio.TimerHandle | None = None
        self._lost = False  # the connection is gone; messages may still be queued ahead of its end

    def gone(self, read_ahead_bytes: int) -> bool:
        """Whether the client is gone, reading ahead (up to ``read_ahead_bytes`` held) to find out while
        nothing else reads: what it sent meanwhile is held, in order, for the driver."""
        self._reader.read_ahead(read_ahead_bytes)
        return self._lost or self._reader.disconnected

    def open(self) -> None:
        self._reader.on_disconnect = self._gone
        if self._watch_lost is not None:
            self._watch_lost(self._gone)

    def close(self) -> None:
        self._reader.on_disconnect = None  # both hold this connection: no cycle outlives it
        if self._watch_lost is not None:
            self._watch_lost(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def run(self, command: SessionCommand, session: Session) -> None:
        if isinstance(command, commands.AfterSession):  # a sequential dialect's next start, sent as this one ends
            self._reader.put_back(command.message)
        self._commands += 1
        self._busy = session
        if self._timer is None:
            self._arm()
        try:
            await run_command(command, session)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if session.closed is None or (task is not None and task.cancelling()):
                raise
            # Aborted while it waited for a recovery: the recovery was cancelled, not the driver.
        finally:
            self._busy = None

    def _arm(self) -> None:
        self._armed_at = self._commands
        self._timer = asyncio.get_running_loop().call_later(PERIOD_S, self._tick)

    def _tick(self) -> None:
        self._timer = None
        session = self._busy
        if session is None:
            return  # nothing waits: the next command arms it again
        if self._commands == self._armed_at:  # the same command has waited a whole period
            if self._lost:
                self._abort(session)
            elif self._probe is not None:
                self._probe()
            elif session.client_format is not None:
                self._reader.read_ahead(max(session.client_format.ms_to_bytes(self._hold_ms), 1))
        self._arm()

    def _gone(self) -> None:
        """The client is gone. Its session is aborted only if the command then waiting makes no progress
        for a whole period: a client that sent its audio and ``finalize`` and closed at once has those
        messages still queued, and while Data Flow takes the audio the driver goes on to the finalize."""
        self._lost = True

    def _abort(self, session: Session) -> None:
        """Abort ``session`` (its wait ends), as the client's end would, unless the end must finish it."""
        if self._hang_up_finishes or session.closed is not None:
            return
        if session.state is not SessionState.FINALIZING:
            session.abort()
