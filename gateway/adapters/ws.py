"""The one WebSocket driver: all I/O and policy every dialect shares (a dialect only parses and renders). It
admits the caller or refuses with a real HTTP status before ``accept()``; holds a registry slot; applies the
start, idle and longest-connection timeouts; starts each session while reading; reads messages into it
(:mod:`fast_audio`, :mod:`waiting`), each paced (its rate limit, else :mod:`unpaced`); says goodbye."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket

from gateway.adapters import commands, fast_audio
from gateway.adapters.call_results import NO_RESULTS, CallResults
from gateway.adapters.dialect import ClientClosesSocket, Command, Dialect, held_audio
from gateway.adapters.ending import ClientCloses, end_session
from gateway.adapters.reader import ClientReader
from gateway.adapters.socket import ClientSocket, Frame
from gateway.adapters.start_refusals import count_refused_start
from gateway.adapters.start_turns import wait_turn
from gateway.adapters.unpaced import OutOfSessionPacer, answers_while_starting, paced_here
from gateway.adapters.waiting import CommandWait, ReadAheadReader
from gateway.auth import Principal
from gateway.errors import ClientGone, ClientTooSlow, GatewayError, GoingAway
from gateway.relay.items import Closed, SessionState
from gateway.relay.limits import connection_deadline
from gateway.relay.registry import Lease, shutting_down
from gateway.relay.session import Session
from gateway.security import offered_subprotocols

if TYPE_CHECKING:
    from gateway.service import Gateway  # the runtime import would bring gRPC in (service -> simulator)

log = logging.getLogger(__name__)


class Connection:
    """One WebSocket connection in one dialect: ``await Connection(ws, dialect, service).run()``."""

    def __init__(self, ws: WebSocket, dialect: Dialect, service: Gateway, results: CallResults = NO_RESULTS) -> None:
        self.ws, self.results = ws, results  # results: also to a webhook (Twilio, Vonage)
        self.dialect, self.service, self.settings = dialect, service, service.settings
        self.socket = ClientSocket(ws, self.settings.client_send_timeout_s)
        self.principal: Principal | None = None
        self.lease: Lease | None = None
        self.session: Session | None = None
        self.sender: asyncio.Task[None] | None = None
        self.started_any = self.ended = False  # ended: a goodbye or refusal closed the socket (read nothing more)
        self.reader: ClientReader = (reader := ReadAheadReader(ws))
        self.waiting = CommandWait(ws, reader, self.settings.pre_start_audio_ms, hang_up_finishes=results.finishes_call)
        self.opened_at = self.last_activity = time.monotonic()
        self._wake, self._going_away = asyncio.Event(), False  # on a wake the watchdog re-reads the state
        self._closing: ClientCloses | None = None  # the goodbye went out; the client closes the socket
        self.unpaced = OutOfSessionPacer(self.settings.session_start_rate)
        self.control_cap = self.settings.max_control_message_bytes

    async def run(self) -> None:
        gate = self.service.gate
        try:
            self.principal = gate.identify(self.ws.scope, self.ws.headers, in_band=self.dialect.credentials_in_band)
            if self.settings.ws_drain_refuses_handshake:  # a 503 that a proxy can retry on another replica
                self.service.registry.check_open()
        except GatewayError as exc:
            await self.ws.send_denial_response(gate.denial(exc))
            return
        await self.ws.accept(subprotocol=self.dialect.subprotocol(offered_subprotocols(self.ws.headers)))
        watchdog: asyncio.Task[None] | None = None
        unregister = fast_audio.register(self.ws.scope, self, self.service.metrics)
        self.waiting.open()
        try:
            try:  # without a credential yet (it may come in the start message): a waiting place, no slot
                at_once = self.dialect.refuse_full_at_once
                self._take_slot(self.principal, count_denial=at_once, waiting=self.principal is None)
            except GatewayError as exc:
                if at_once:
                    await self._refuse(exc)
                else:  # refused at its start if still full; till then a place without a slot keeps it drainable
                    try:
                        self.lease = self.service.gate.defer(self.dialect.name, self.ws.scope, self)
                    except GatewayError as past_cap:  # no place a drain could reach: refused now, not at its start
                        await self._refuse(past_cap)
            if not self.ended:  # (after a refusal: while its client closes the socket)
                watchdog = asyncio.create_task(self._watch(), name=f"ws-{self.dialect.name}-watchdog")
                await self._read()
        finally:
            unregister()
            self.waiting.close()
            if watchdog is not None:
                watchdog.cancel()
            self.reader.close()
            await self._end_session()
            if self.lease is not None:
                self.lease.release()

    async def _read(self) -> None:
        while not self.ended:
            message = await self.reader.next()
            if message is None:
                return
            self.last_activity = time.monotonic()
            if (session := self.session) is None or session.state is not SessionState.STREAMING:
                await self.unpaced.charge(message)  # nothing else paces it
            if self._closing is not None and isinstance(self.dialect, ClientClosesSocket):
                await self._reply_now(commands.Reply(tuple(self.dialect.after_goodbye(message))))
                continue
            if session is not None and session.closed is None:
                command = self.dialect.streaming(message)
                if isinstance(message, str) and command is not None:  # one it ignores (a Twilio mark) is not
                    session.touch()
                await self._apply(command, session)
                if paced_here(message, command, self.control_cap):
                    await session.pace_message(message)
                continue
            if session is not None:
                if not self.dialect.sequential:
                    return  # its one session is over: the sender says goodbye and closes
                await self._reap()  # the last session's goodbye goes out first
            if self.ended:
                return
            command = self.dialect.waiting(message)
            if isinstance(command, commands.Begin):
                await self._begin(command)
            elif isinstance(command, commands.Reply):
                await self._reply_now(command)
            elif isinstance(command, commands.Refuse):
                await self._refuse(command.error, start=True)

    async def _apply(self, command: Command, session: Session) -> None:
        if command is None or isinstance(command, commands.Begin):
            return
        if isinstance(command, commands.Reply):
            for frame in (f for f in command.frames if isinstance(f, dict)):
                session.reply(frame)
            return
        if isinstance(command, commands.ENDS_INPUT) and (held := held_audio(self.dialect)):
            await self._apply(commands.Audio(held), session)
        if isinstance(command, commands.Refuse):
            await session.end_with(command.error)
            return
        try:
            await self.waiting.run(command, session)
        except GatewayError as exc:
            await self._apply(self.dialect.failed(command, exc), session)

    def _take_slot(self, principal: Principal | None, *, count_denial: bool = True, waiting: bool = False) -> None:
        self.lease = self.service.gate.reserve(self.dialect.name, principal, count_denial=count_denial,
                                               waiting_at=self.ws.scope if waiting else None)  # fmt: skip
        self.lease.drainable = self

    async def _begin(self, command: commands.Begin) -> None:
        gate, request = self.service.gate, command.request
        try:
            if self._going_away:  # sent away by a drain as this start was read: no session starts now
                raise shutting_down()
            principal = self.principal
            if principal is None:  # a browser that could only send its token in the start message
                principal = gate.authenticate_in_band(command.credential, self.ws.headers.get("origin"), self.ws.scope)
            if self.lease is None:  # the replica was full at accept: try again, now that the start is read
                self._take_slot(principal)
            elif self.lease.key is None:
                gate.bind(self.lease, principal)
            self.principal = principal
            limits = gate.session_limits(principal, live=True)
            wait_s = max(self.unpaced.start_turn(), gate.start_turn(principal))  # the connection's and key's rates
            self.last_activity = time.monotonic() + wait_s  # the watchdog's timeouts count from the start's turn
            if not await wait_turn(wait_s, self.waiting, lambda: self._going_away or self.ended or bool(self._closing)):
                raise shutting_down()  # gone, timed out or sent away meanwhile: told only to a client still there
            hold = gate.admit_session(principal, request.project)  # last: a single-use token is now reserved
        except GatewayError as exc:
            await self._refuse(exc)
            return
        session = self.service.new_session(limits, self.dialect.name, principal.key, self.dialect.reports_flow)
        self.session = session
        self._wake.set()
        await self._reply_now(commands.Reply(command.reply))  # before Data Flow answers, if the dialect says so
        answer = answers_while_starting(self.dialect, self.unpaced, self._reply_now)  # AudioHook's pings
        with hold:  # the token is spent once Data Flow accepted the session, else free again (before a refusal)
            result = await self.reader.start(session, request, self.settings.pre_start_audio_ms,
                                             hang_up_finishes=self.results.finishes_call, answer=answer)  # fmt: skip
            if result is None:
                hold.commit()
        if isinstance(result, GatewayError):
            if not self.reader.disconnected:
                await self._refuse(result, start_failed=True)
            return
        self.started_any = True
        self.service.tell_drain(session)  # a drain began before this session did
        self.sender = asyncio.create_task(self._send(session), name=f"ws-{self.dialect.name}-{session.id}")

    async def _send(self, session: Session) -> None:  # render its items; on Closed say goodbye (and close)
        try:
            async for item in session.outbound():
                self.results.observe(item)
                if isinstance(item, Closed):
                    await self._goodbye(item)
                    return
                try:
                    for frame in self.dialect.render(item):
                        await self.socket.send(frame)
                except ClientTooSlow as exc:
                    session.abort("client_too_slow", exc)
                except ClientGone:  # after finalize the audio is declared complete: Data Flow still finishes it
                    if session.state is not SessionState.FINALIZING:
                        session.abort()
                except (ValueError, TypeError, RecursionError) as exc:  # JSON that cannot be written
                    log.warning("session %s: a message could not be rendered (%s)", session.id, type(exc).__name__)
                    session.abort("internal_error", GatewayError("a message from Data Flow could not be relayed"))
        finally:
            self.last_activity = time.monotonic()  # the idle timeout between sessions counts from here
            self._wake.set()

    async def _goodbye(self, closed: Closed) -> None:
        goodbye = self.dialect.goodbye(closed)
        if goodbye.close or self._going_away:
            await self._close(closed.code, closed.reason, goodbye.frames)
        else:
            await self._reply_now(commands.Reply(goodbye.frames))

    async def _close(self, code: int, reason: str, last: tuple[Frame, ...]) -> None:
        """Send the last frames and close, or (marked first) give a client that closes itself a bounded time."""
        if isinstance(self.dialect, ClientClosesSocket) and not self._going_away:
            self._closing = ClientCloses.from_now(code, reason)
            self._wake.set()
            await self._reply_now(commands.Reply(last))
        else:
            self.ended = True
            await self._reply_now(commands.Reply(last))
            await self.socket.close(code, reason)

    async def _reap(self) -> None:  # the last session fully over: its goodbye sent, its tasks gone
        if self.sender is not None:
            await self.sender
            self.sender = None
        if self.session is not None:
            await self.session.aclose()
            self.session = None

    async def _end_session(self) -> None:
        session, sender, self.sender = self.session, self.sender, None  # a cancelled sender's traceback holds self
        if session is not None:
            await end_session(session, sender, self.results, self.settings)

    async def _reply_now(self, reply: commands.Reply) -> None:
        await self.socket.send_all(reply.frames)

    async def _refuse(self, error: GatewayError, *, start_failed: bool = False, start: bool = False) -> None:
        if not self.ended and self._closing is None:  # refuses a start (start: counted) or ends a sessionless one
            if start:
                count_refused_start(self.service.registry, error)
            frames = tuple(self.dialect.refusal(error, start_failed=start_failed))
            await self._close(error.ws_close_code, error.error_code, frames)
        if self.lease is not None:  # no session holds the slot now: free at once for the client's retry
            self.lease.release()

    async def _watch(self) -> None:
        """Timeouts while no session runs (start, idle between sessions, the connection's longest), a drain."""
        s = self.settings
        while not self.ended:
            if self.session is not None and (self.session.closed is None or (self.sender and not self.sender.done())):
                self._wake.clear()
                await self._wake.wait()
                continue
            if (closing := self._closing) is not None:
                remaining = closing.deadline - time.monotonic()
                if remaining <= 0:  # the client did not close the socket after the goodbye: we do
                    self.ended = True
                    await self.socket.close(closing.code, closing.reason)
                    return
            elif self._going_away:
                await self._refuse(GoingAway("this gateway replica is shutting down; reconnect to continue"))
                continue
            else:  # a sequential dialect's socket lasts the conversation (AudioCodes: "might remain open" unused)
                gap_s = (s.between_recognitions_s or s.max_session_s) if self.dialect.sequential else None
                limit, deadline = connection_deadline(
                    self.opened_at, self.last_activity if self.started_any else None,
                    start_s=gap_s or s.start_timeout_s, idle_s=gap_s or s.idle_timeout_s, max_s=s.max_session_s,
                )  # fmt: skip
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    await self._refuse(limit, start=True)
                    continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wake.wait()

    # --- drain (registry.Drainable) -----------------------------------------------------------------

    def notify(self, error: GatewayError) -> None:  # a session still starting is told once it has (_begin)
        if self.session is not None and self.session.closed is None and self.sender is not None:
            self.session.notify(error)

    def go_away(self) -> None:
        self._going_away = True
        if self.session is not None and self.session.closed is None:
            self.session.go_away()
        self._wake.set()
