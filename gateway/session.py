"""The relay core: one client paired with one upstream Data Flow stream.

States: ``new -> starting -> streaming -> finalizing -> closed``. Adapters drive a Session with
neutral calls (start, feed_audio, update, send_event, finalize, stop, abort) and render what
``outbound()`` yields into their dialect. Every way a session can end goes through ``_finish``,
which picks the reason and close code, releases the slot and tears the upstream stream down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from gateway.audio import DATAFLOW_ENCODINGS, AudioConverter, AudioFormat
from gateway.dataflow_json import FINAL_RESULT, DataflowEvent, StartRequest
from gateway.errors import (
    ClientTooSlow,
    GatewayError,
    GoingAway,
    InvalidMessage,
    LimitReached,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.outbox import Outbox
from gateway.registry import Lease
from gateway.session_types import Closed, Flow, Notice, OutItem, SessionLimits, Started
from gateway.settings import Settings
from gateway.upstream.client import DataflowStream, UpstreamClient

# The output items are re-exported so adapters import everything session-related from here.
__all__ = ["Closed", "Flow", "Notice", "OutItem", "Session", "SessionLimits", "Started"]

log = logging.getLogger(__name__)


class Session:
    def __init__(
        self, upstream: UpstreamClient, settings: Settings, lease: Lease, limits: SessionLimits | None = None
    ) -> None:
        self.id = uuid.uuid4().hex
        self.settings = settings
        self.limits = limits or SessionLimits(settings.max_session_s)
        self.dialect = lease.dialect
        self.state = "new"
        self._upstream = upstream
        self._lease = lease
        self._metrics = lease.metrics
        lease.attach(self)
        self._stream: DataflowStream | None = None
        self._converter: AudioConverter | None = None
        self._client_format: AudioFormat | None = None
        self._upstream_format: AudioFormat | None = None
        self._outbox = Outbox(settings.client_event_queue, self._metrics)
        self._tasks: list[asyncio.Task[None]] = []
        self._end_reason: str | None = None
        self._end_error: GatewayError | None = None
        self._saw_final_result = False
        self._said_finalizing = False
        self._finalize_deadline = 0.0
        self.opened_at = time.monotonic()
        self._last_activity = self.opened_at
        self.bytes_in = 0
        self._bytes_budgeted = 0
        self._streaming_since = 0.0
        self.backpressure_pauses = 0
        self._was_paused = False
        self.project = ""

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self, request: StartRequest, client_format: AudioFormat) -> Started:
        """Open the upstream stream. Raises the upstream's typed error (the session is then closed)."""
        if self.state != "new":
            raise InvalidMessage("the session has already been started", code="already_started")
        self.state = "starting"
        s = self.settings
        # Telephone-band audio is never upsampled: it would double the bytes and add nothing.
        rate = 8000 if client_format.sample_rate <= 8000 else s.upstream_sample_rate_hz
        upstream_format = AudioFormat(DATAFLOW_ENCODINGS[s.upstream_encoding], rate, client_format.channels)
        self._converter = AudioConverter(client_format, upstream_format)
        self._client_format, self._upstream_format = client_format, upstream_format
        request.audio = upstream_format
        self.project = request.project
        deadline = self.limits.max_session_s + s.finalize_timeout_s + 30.0
        self._stream = self._upstream.stream(upstream_format, deadline_s=deadline)
        began = time.monotonic()
        try:
            response = await self._stream.start(request)
        except BaseException as exc:
            self._finish("start_failed", exc if isinstance(exc, GatewayError) else None)
            raise
        if self.state == "closed":  # aborted (client gone, drain) while Data Flow was answering
            self._stream.cancel()
            raise self._end_error or GoingAway("the session was closed while starting")
        self.state = "streaming"
        self._streaming_since = time.monotonic()
        self._metrics.start_latency.observe(time.monotonic() - began)
        self._metrics.sessions_started.labels(dialect=self.dialect).inc()
        log.info("session started", extra=self._log_fields())
        started = Started(self.id, response.session_id, client_format, upstream_format, response)
        self._emit(started)
        self._tasks = [
            asyncio.create_task(self._pump_upstream(), name=f"session-{self.id}-upstream"),
            asyncio.create_task(self._tick(), name=f"session-{self.id}-ticker"),
        ]
        return started

    async def feed_audio(self, data: bytes) -> None:
        """Client audio in the client's format, any byte count. Waits while Data Flow is slow."""
        if self.state != "streaming":
            if self.state == "finalizing":
                # Said once; after a limit the closing error explains it, so nothing is said.
                if self._end_error is None and not self._said_finalizing:
                    self._said_finalizing = True
                    raise InvalidMessage("audio after finalize/stop is dropped", code="session_finalizing")
                return
            if self.state == "closed":
                return
            raise InvalidMessage("send a start message before audio", code="audio_before_start")
        assert self._converter is not None and self._stream is not None
        now = self._last_activity = time.monotonic()
        self.bytes_in += len(data)
        rate_x = self.limits.max_rate_x
        if rate_x is not None and self._client_format is not None:
            ahead_ms = self._client_format.bytes_to_ms(self.bytes_in) - (now - self._streaming_since) * 1000 * rate_x
            if ahead_ms > self.limits.rate_burst_ms:
                await self._limit("audio_too_fast", f"audio arrives faster than {rate_x:g}x real time")
                return
        converted = self._converter.convert(data)
        if not converted:
            return
        paused = self._stream.backpressured
        if paused and not self._was_paused:
            self.backpressure_pauses += 1
        self._was_paused = paused
        try:
            await self._stream.send_audio(converted)
        except GatewayError as exc:
            self._finish("upstream_error", exc)

    async def update(self, settings: dict[str, Any]) -> None:
        await self._control(lambda stream: stream.update(settings))

    async def send_event(self, event: dict[str, Any]) -> None:
        await self._control(lambda stream: stream.send_event(event))

    async def finalize(self) -> None:
        await self._end_input(stop=False)

    async def stop(self) -> None:
        await self._end_input(stop=True)

    def touch(self) -> None:
        """Any client message counts as activity for the idle timeout."""
        self._last_activity = time.monotonic()

    def notify(self, error: GatewayError) -> None:
        """Queue a non-fatal error for the client."""
        self._emit(Notice(error))

    def reply(self, payload: dict[str, Any]) -> None:
        """Queue an adapter-built message so it goes out in order with everything else."""
        self._emit(payload)

    def abort(self, reason: str = "client_disconnected", error: GatewayError | None = None) -> None:
        """End now without waiting for Data Flow (client gone, drain budget spent, slow client)."""
        self._finish(reason, error, drop_backlog=error is not None)

    def go_away(self) -> None:
        self.abort("going_away", GoingAway("this gateway replica is shutting down; reconnect to continue"))

    @property
    def closed(self) -> Closed | None:
        return self._outbox.closed

    def outbound(self) -> AsyncIterator[OutItem]:
        """Everything for the client, in order, ending with exactly one Closed."""
        return self._outbox.items()

    async def wait_closed(self) -> Closed:
        return await self._outbox.wait_closed()

    # --- internals ---------------------------------------------------------------------------------

    async def _control(self, action: Any) -> None:
        if self.state != "streaming":
            raise InvalidMessage(f"not possible while the session is {self.state}", code="invalid_state")
        assert self._stream is not None
        self.touch()
        try:
            await action(self._stream)
        except GatewayError as exc:
            self._finish("upstream_error", exc)

    async def _end_input(self, *, stop: bool) -> None:
        if self.state != "streaming":
            raise InvalidMessage(f"not possible while the session is {self.state}", code="invalid_state")
        assert self._converter is not None and self._stream is not None
        self.touch()
        pending = self._converter.pending_bytes
        if pending:
            self.notify(InvalidMessage(f"{pending} trailing bytes did not form a whole sample and were dropped",
                                       code="misaligned_audio"))  # fmt: skip
        try:
            if not stop:
                tail = self._converter.flush()
                if tail:
                    await self._stream.send_audio(tail)
            await (self._stream.stop() if stop else self._stream.finalize())
        except GatewayError as exc:
            self._finish("upstream_error", exc)
            return
        self._end_reason = self._end_reason or ("stopped" if stop else "finalized")
        self.state = "finalizing"
        self._finalize_deadline = time.monotonic() + self.settings.finalize_timeout_s

    def _emit(self, item: OutItem) -> None:
        if self._outbox.closed is None and not self._outbox.put(item):
            self._finish("client_too_slow", ClientTooSlow("the client is not reading its events"), drop_backlog=True)

    async def _pump_upstream(self) -> None:
        assert self._stream is not None
        try:
            async for item in self._stream.items():
                if isinstance(item, DataflowEvent) and item.name == FINAL_RESULT:
                    self._saw_final_result = True
                self._emit(item)
        except GatewayError as exc:
            self._finish("upstream_error", exc)
            return
        if self.state == "finalizing" or self._saw_final_result:
            self._finish(self._end_reason or "completed", self._end_error)
        else:
            self._finish("upstream_error", UpstreamUnavailable("Data Flow ended the session without a final result"))

    async def _tick(self) -> None:
        interval = self.settings.ack_interval_ms / 1000
        while self._outbox.closed is None:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if self.state == "streaming":
                self._emit(self.flow())
                if not self._spend_budget():
                    await self._limit("audio_budget_spent", "the caller's audio budget for the last minute is spent")
                elif now - self.opened_at >= self.limits.max_session_s:
                    await self._limit(
                        "max_duration", f"maximum session duration of {self.limits.max_session_s:g} s reached"
                    )
                elif now - self._last_activity >= self.settings.idle_timeout_s:
                    await self._limit("idle_timeout", f"no audio or message for {self.settings.idle_timeout_s:g} s")
            elif self.state == "finalizing" and now >= self._finalize_deadline:
                if self._saw_final_result:
                    self._finish(self._end_reason or "finalized", self._end_error)
                else:
                    timeout = self.settings.finalize_timeout_s
                    self._finish(
                        "upstream_error", UpstreamTimeout(f"no final result from Data Flow within {timeout:g} s")
                    )

    def _spend_budget(self) -> bool:
        spend, fmt = self.limits.spend_audio, self._client_format
        if spend is None or fmt is None:
            return True
        new_bytes, self._bytes_budgeted = self.bytes_in - self._bytes_budgeted, self.bytes_in
        return spend(new_bytes / fmt.bytes_per_second)

    async def _limit(self, reason: str, message: str) -> None:
        """A policy limit: deliver what Data Flow still has (finalize), then close with 1008."""
        self._end_reason, self._end_error = reason, LimitReached(message, code=reason)
        await self._end_input(stop=False)

    def flow(self) -> Flow:
        client, upstream = self._client_format, self._upstream_format
        stream = self._stream
        if client is None or upstream is None or stream is None:
            return Flow(0.0, 0.0, 0.0, False)
        return Flow(
            audio_ms=round(client.bytes_to_ms(self.bytes_in), 1),
            sent_ms=round(upstream.bytes_to_ms(stream.audio_bytes_sent), 1),
            buffered_ms=round(upstream.bytes_to_ms(stream.buffered_bytes), 1),
            paused=stream.backpressured,
        )

    def _finish(self, reason: str, error: GatewayError | None = None, *, drop_backlog: bool = False) -> None:
        if self._outbox.closed is not None:
            return
        self.state = "closed"
        code = 1000 if error is None else error.ws_close_code
        audio_ms = round(self._client_format.bytes_to_ms(self.bytes_in), 1) if self._client_format else 0.0
        self._outbox.close(Closed(reason, code, audio_ms, error), drop_backlog=drop_backlog)
        self._end_error = error
        if self._stream is not None:
            self._stream.cancel()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._lease.release()
        self._account(reason, error)

    def _account(self, outcome: str, error: GatewayError | None) -> None:
        """Metrics and the session's one end-of-life log line (never per frame)."""
        fmt = self._client_format
        audio_s = self.bytes_in / fmt.bytes_per_second if fmt is not None else 0.0
        upstream = error if isinstance(error, UpstreamError) else None
        self._metrics.session_ended(self.dialect, outcome, self.bytes_in, audio_s, self.backpressure_pauses, upstream)
        fields = self._log_fields()
        fields.update(
            outcome=outcome,
            duration_s=round(time.monotonic() - self.opened_at, 3),
            audio_s=round(audio_s, 3),
            error_code=error.error_code if error else None,
        )
        log.info("session ended", extra=fields)

    def _log_fields(self) -> dict[str, Any]:
        stream = self._stream
        return {
            "session_id": self.id,
            "dataflow_session_id": stream.session_id if stream is not None else None,
            "dialect": self.dialect,
            "key": self._lease.key,
            "project": self.project,
        }

    async def aclose(self) -> None:
        """Abort if still open and wait for the session's tasks to end (no leaks)."""
        self.abort()
        for task in self._tasks:
            if task is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._lease.detach()
