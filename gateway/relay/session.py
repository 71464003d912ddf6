"""The relay core: one client paired with one upstream Data Flow stream (which survives a failure:
:mod:`gateway.relay.recovery`). States (:class:`SessionState`): ``new -> starting -> streaming ->
finalizing -> closed``. Drivers (WebSocket dialects, uploads) call start, feed_audio (or, on the fast
path, ready_for + take_audio), update, send_event, finalize, stop and abort, and render ``outbound()``.
Every way a session ends goes through ``_finish`` (reason, close code, teardown, accounting once).
It knows no FastAPI and no gRPC: the upstream is a :class:`~gateway.relay.stream.StreamOpener`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from gateway.audio.convert import AudioConverter
from gateway.audio.format import DATAFLOW_ENCODINGS, AudioFormat, upstream_format_for
from gateway.dataflow.messages import FINAL_RESULT, DataflowEvent, StartRequest
from gateway.errors import (
    ErrorCode,
    GatewayError,
    GoingAway,
    InvalidState,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.observability import GatewayMetrics
from gateway.relay.accounting import account_end, log_fields
from gateway.relay.finalize_wait import FinalizeWait
from gateway.relay.intake import AudioIntake
from gateway.relay.items import Closed, Flow, Notice, OutItem, SessionState, Started
from gateway.relay.limits import LimitWatch, SessionLimits
from gateway.relay.outbox import Outbox
from gateway.relay.outbox_budget import OutboxBudget
from gateway.relay.recovery import open_stream
from gateway.relay.stream import StreamOpener, UpstreamStream
from gateway.settings import Settings

log = logging.getLogger(__name__)


class Session:
    def __init__(self, upstream: StreamOpener, settings: Settings, limits: SessionLimits | None = None, *,
                 metrics: GatewayMetrics, dialect: str, key: str | None = None,
                 flow_reports: bool = True, budget: OutboxBudget | None = None) -> None:  # fmt: skip
        self.id = uuid.uuid4().hex
        self.settings = settings
        self.limits = limits or SessionLimits(settings.max_session_s)
        self.dialect = dialect
        self.key = key
        self.flow_reports = flow_reports  # periodic Flow items: only for dialects that render them
        self.state = SessionState.NEW
        self.project = ""
        self.opened_at = time.monotonic()
        self._upstream = upstream
        self.metrics = metrics
        self._watch = LimitWatch(self.limits, settings.idle_timeout_s, self.opened_at)
        self.stream: UpstreamStream | None = None
        self._intake: AudioIntake | None = None
        self.client_format: AudioFormat | None = None
        self._upstream_format: AudioFormat | None = None
        self.outbox = Outbox(settings.client_event_queue, metrics, settings.client_outbox_bytes, budget, self.abort)
        self._tasks: list[asyncio.Task[None]] = []
        self._end_reason: str | None = None
        self._end_error: GatewayError | None = None
        self._saw_final_result = self._said_finalizing = False
        self._finalize_wait = FinalizeWait(settings.finalize_timeout_s)
        self._last_activity = self._streaming_at = self.opened_at

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self, request: StartRequest, client_format: AudioFormat) -> Started:
        """Open the upstream stream. Raises the upstream's typed error (the session is then closed)."""
        if self.state is not SessionState.NEW:
            raise InvalidState("the session has already been started", code=ErrorCode.ALREADY_STARTED)
        self.state = SessionState.STARTING
        s = self.settings
        encoding = DATAFLOW_ENCODINGS[s.upstream_encoding]
        upstream_format = upstream_format_for(client_format, encoding, s.upstream_sample_rate_hz)
        self.client_format, self._upstream_format = client_format, upstream_format
        request.audio = upstream_format
        self.project = request.project
        deadline = self.limits.max_session_s + s.finalize_timeout_s + 30.0
        self.stream = open_stream(self._upstream, upstream_format, deadline, s, self.metrics.upstream_stream_failed)
        self._intake = AudioIntake(self._watch, AudioConverter(client_format, upstream_format), self.stream)
        began = time.monotonic()
        try:
            response = await self.stream.start(request)
        except BaseException as exc:
            self._finish("start_failed", exc if isinstance(exc, GatewayError) else None)
            raise
        if self.state is SessionState.CLOSED:  # aborted (client gone, drain) while Data Flow was answering
            self.stream.cancel()
            raise self._end_error.detached() if self._end_error else GoingAway("the session was closed while starting")
        self.state = SessionState.STREAMING
        now = self._streaming_at = time.monotonic()
        self._watch.streaming(client_format, now)
        self.metrics.start_latency.observe(now - began)
        self.metrics.sessions_started.labels(dialect=self.dialect).inc()
        log.info("session started", extra=log_fields(self))
        started = Started(self.id, response.session_id, client_format, upstream_format, response)
        self._emit(started)
        tasks = (self._pump_upstream(), "upstream"), (self._tick(), "ticker")
        self._tasks = [asyncio.create_task(work, name=f"session-{self.id}-{kind}") for work, kind in tasks]
        return started

    async def feed_audio(self, data: bytes) -> None:
        """Client audio in the client's format, any byte count. Waits while Data Flow is slow."""
        intake = self._intake
        if self.state is not SessionState.STREAMING or intake is None:
            self._refuse_audio()
            return
        await intake.pace_audio(len(data))
        if self.state is not SessionState.STREAMING:  # ended (a limit, the client, a drain) while held
            return
        self._last_activity = time.monotonic()
        try:
            limit = await intake.feed(data)
        except UpstreamError as exc:
            self._finish("upstream_error", exc)
            return
        except InvalidState:  # a limit closed the input while this chunk waited for Data Flow
            return
        if limit is not None and self.state is SessionState.STREAMING:
            await self.end_with(limit)

    async def pace_message(self, message: str | bytes) -> None:
        """Charge a client message that fed no audio and nothing for Data Flow to the rate limit (relay.intake)."""
        if self.state is SessionState.STREAMING and self._intake is not None:
            await self._intake.charge(message)

    def ready_for(self, most_bytes: int) -> bool:
        """May :meth:`take_audio` take a message of up to ``most_bytes`` at once (fast path)?"""
        intake = self._intake
        return self.state is SessionState.STREAMING and intake is not None and intake.ready_for(most_bytes)

    def take_audio(self, data: bytes, message: str | bytes) -> None:
        """:meth:`feed_audio` and :meth:`pace_message` without a wait: only right after :meth:`ready_for`."""
        assert self._intake is not None
        self._last_activity = time.monotonic()
        self._intake.take(data, message)

    def _refuse_audio(self) -> None:
        if self.state is SessionState.FINALIZING:  # said once; after a limit its closing error explains it
            if self._end_error is None and not self._said_finalizing:
                self._said_finalizing = True
                raise InvalidState("audio after finalize/stop is dropped", code=ErrorCode.SESSION_FINALIZING)
            return
        if self.state is not SessionState.CLOSED:
            raise InvalidState("send a start message before audio", code=ErrorCode.AUDIO_BEFORE_START)

    async def update(self, settings: dict[str, Any]) -> None:
        await self._control(lambda stream: stream.update(settings))

    async def send_event(self, event: dict[str, Any]) -> None:
        await self._control(lambda stream: stream.send_event(event))

    async def finalize(self) -> None:
        await self._end_input(stop=False)

    async def stop(self) -> None:
        await self._end_input(stop=True)

    def touch(self) -> None:  # a client message the dialect acted on counts as activity (idle timeout)
        self._last_activity = time.monotonic()

    def notify(self, error: GatewayError) -> None:  # a non-fatal error for the client
        self._emit(Notice(error))

    def reply(self, payload: dict[str, Any]) -> None:  # a dialect-built message, in order with everything else
        self._emit(payload)

    def abort(self, reason: str = "client_disconnected", error: GatewayError | None = None) -> None:
        # Ends now without waiting for Data Flow (client gone, drain budget spent, slow client).
        self._finish(reason, error, drop_backlog=error is not None)

    def go_away(self) -> None:
        self.abort("going_away", GoingAway("this gateway replica is shutting down; reconnect to continue"))

    @property
    def closed(self) -> Closed | None:
        return self.outbox.closed

    def outbound(self) -> AsyncIterator[OutItem]:  # everything for the client, in order, then exactly one Closed
        return self.outbox.items()

    async def wait_closed(self) -> Closed:
        return await self.outbox.wait_closed()

    @property
    def bytes_in(self) -> int:  # client audio accepted so far, in the client's format
        return self._intake.bytes_in if self._intake is not None else 0

    def flow(self) -> Flow:
        return Flow.measure(self.client_format, self._upstream_format, self.bytes_in, self.stream, self._watch.pacing)

    async def aclose(self) -> None:
        """Abort if still open, let go of what the client never took, wait for the tasks to end (no leaks)."""
        self.abort()
        self.outbox.abandon()
        for task in self._tasks:
            if task is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _streaming_stream(self) -> UpstreamStream:
        if self.state is not SessionState.STREAMING:
            raise InvalidState(f"not possible while the session is {self.state}", code=ErrorCode.INVALID_STATE)
        assert self.stream is not None
        return self.stream

    async def _control(self, action: Callable[[UpstreamStream], Awaitable[None]]) -> None:
        stream = self._streaming_stream()
        self.touch()
        try:
            await action(stream)
        except UpstreamError as exc:  # anything else (a message too big) is the client's, and said to it
            self._finish("upstream_error", exc)

    async def _end_input(self, *, stop: bool) -> None:
        self._streaming_stream()
        assert self._intake is not None
        self.touch()
        if (misaligned := self._intake.misaligned()) is not None:
            self.notify(misaligned)
        try:
            await self._intake.end(stop=stop)
        except GatewayError as exc:
            self._finish("upstream_error", exc)
            return
        self._end_reason = self._end_reason or ("stopped" if stop else "finalized")
        self.state = SessionState.FINALIZING
        self._finalize_wait.begin(self.flow(), time.monotonic() - self._streaming_at)

    def _emit(self, item: OutItem) -> None:
        self.outbox.put(item)  # refused after the close; a client that does not read is ended by the outbox

    async def _pump_upstream(self) -> None:
        assert self.stream is not None
        try:
            async for item in self.stream.items():
                if not await self.outbox.room_for(item, self.settings.client_send_timeout_s):
                    return  # closed meanwhile (the client read nothing for that long: ended as too slow)
                self._saw_final_result |= isinstance(item, DataflowEvent) and item.name == FINAL_RESULT
                self._finalize_wait.heard(item, finalizing=self.state is SessionState.FINALIZING)
                self._emit(item)
        except GatewayError as exc:  # after the input ended and the final result came the client lacks nothing
            if not (self.state is SessionState.FINALIZING and self._saw_final_result):
                self._finish("upstream_error", exc)
                return
        if self.state is SessionState.FINALIZING or self._saw_final_result:
            self._finish(self._end_reason or "completed", self._end_error)
        else:
            self._finish("upstream_error", UpstreamUnavailable("Data Flow ended the session without a final result"))

    async def _tick(self) -> None:
        interval = self.settings.ack_interval_ms / 1000
        while self.outbox.closed is None:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if self.state is SessionState.STREAMING:
                if self.flow_reports:
                    self._emit(self.flow())
                limit = self._watch.periodic(now, self._last_activity)
                if limit is not None:
                    await self.end_with(limit)
            elif self.state is SessionState.FINALIZING and now >= self._finalize_wait.deadline:
                if self._saw_final_result:
                    self._finish(self._end_reason or "finalized", self._end_error)
                else:  # each message from Data Flow starts the wait again: only a silent one is given up on
                    self._finish("upstream_error", UpstreamTimeout(self._finalize_wait.silence(now)))

    async def end_with(self, error: GatewayError) -> None:
        """A limit, or a client message that ends the session (one its dialect cannot take): what Data Flow
        still has is delivered (finalize), then the session closes with the error's code. (A client's error
        had aborted it: the results still to come were dropped, a Twilio call's webhook got none.)"""
        if self.state in (SessionState.STREAMING, SessionState.FINALIZING) and self._end_error is None:
            self._end_reason, self._end_error = error.error_code.value, error
        if self.state is SessionState.STREAMING:
            await self._end_input(stop=False)

    def _finish(self, reason: str, error: GatewayError | None = None, *, drop_backlog: bool = False) -> None:
        if self.outbox.closed is not None:
            return
        self.state = SessionState.CLOSED
        code = 1000 if error is None else error.ws_close_code
        audio_ms = round(self.client_format.bytes_to_ms(self.bytes_in), 1) if self.client_format else 0.0
        self._end_error = error = error.detached() if error else None  # its traceback's frames hold this session
        self.outbox.close(Closed(reason, code, audio_ms, error), drop_backlog=drop_backlog)
        if self.stream is not None:
            self.stream.cancel()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        account_end(self, reason, error)
