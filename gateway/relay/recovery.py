"""An upstream stream that survives Data Flow failing under it.

:class:`RecoveringStream` keeps the last ``GATEWAY_UPSTREAM_REPLAY_MS`` of audio and, from Data Flow's
final results, how far it is recognised. When its stream fails with a retryable cause (a connection
dropped or retired, a node restarted: ``UpstreamUnavailable``) it opens a new one with the same Start
and settings, replays the audio from the end of the last final result, and goes on, on the session's
timeline, without repeating a result. Attempts are bounded in count and time, with back-off (a first
Start's too: ``first_start``); a refused credential or Start, or a timeout, is never retried. Failures are
counted and logged. ``GATEWAY_UPSTREAM_MAX_STREAM_S`` also moves it after a final result (``rotation``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import FINAL_RESULT, DataflowEvent, DataflowResponse, StartRequest, UpstreamItem
from gateway.errors import UpstreamError, UpstreamUnavailable
from gateway.relay.failures import Count, StreamFailures, not_counted
from gateway.relay.first_start import first_start
from gateway.relay.recovery_policy import AttemptBudget, RecoveryPolicy, RotationClock
from gateway.relay.replay import ReplayBuffer, replay
from gateway.relay.resent import ResentSettings
from gateway.relay.stream import Recovered, StreamOpener, UpstreamStream
from gateway.relay.timeline import Timeline
from gateway.settings import Settings

Send = Callable[[UpstreamStream], Awaitable[None]]

log = logging.getLogger(__name__)


def open_stream(
    opener: StreamOpener, audio: AudioFormat, deadline_s: float, settings: Settings, count: Count = not_counted
) -> UpstreamStream:
    """The stream a session streams to: recovering (``count`` gets each failure), unless recovery is off."""
    policy = RecoveryPolicy.from_settings(settings)
    if policy is None:
        return opener.stream(audio, deadline_s=deadline_s)
    (stream := RecoveringStream(opener, audio, deadline_s, policy)).failures = StreamFailures(count)
    return stream


class RecoveringStream:
    """An :class:`UpstreamStream` over a series of real ones (see the module's docstring)."""

    def __init__(self, opener: StreamOpener, audio: AudioFormat, deadline_s: float, policy: RecoveryPolicy) -> None:
        self._opener, self._audio, self._deadline_s, self._policy = opener, audio, deadline_s, policy
        self.failures = StreamFailures()  # counted and logged: a recovery hides them from the client
        self._inner = opener.stream(audio, deadline_s=deadline_s)
        self._buffer = ReplayBuffer(audio.ms_to_bytes(policy.replay_ms))
        self._request: StartRequest | None = None
        self._settings = ResentSettings(policy.max_settings_bytes)  # a new stream gets them again
        self._timeline = Timeline(audio.channels)
        self._base_bytes = 0  # where the current stream's audio began on the session's timeline
        self._recovery: asyncio.Task[None] | None = None
        self._notice: Recovered | None = None  # for the client, when the reading side gets to it
        self._final_result, self._torn_down = False, asyncio.Event()  # Data Flow said it is over; cancel() came
        self._gave_up: UpstreamError | None = None  # the cause of the last recovery that failed
        self._budget, self._rotation = AttemptBudget(policy), RotationClock(policy.max_stream_s)
        self._ended_input: str | None = None  # "finalize" or "stop" once the client ended its audio
        self._ended_on: UpstreamStream | None = None  # the stream that got it: never twice (session_finalizing)
        self._pauses = self.recoveries = self._swallow_responses = 0  # swallowed: answers to re-sent Updates

    # --- UpstreamStream ------------------------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        return self._inner.session_id

    @property
    def audio_bytes_sent(self) -> int:
        return self._base_bytes + self._inner.audio_bytes_sent

    @property
    def buffered_bytes(self) -> int:
        return self._inner.buffered_bytes

    @property
    def backpressured(self) -> bool:
        return self._recovery is not None or self._inner.backpressured

    @property
    def pauses(self) -> int:
        return self._pauses + self._inner.pauses

    async def start(self, request: StartRequest) -> DataflowResponse:
        self._request = request
        return await first_start(self._inner, self._open_next, request, self._budget, self.failures, self._torn_down)

    def _open_next(self) -> UpstreamStream:
        self._inner = self._opener.stream(self._audio, deadline_s=self._deadline_s)
        return self._inner

    async def send_audio(self, data: bytes) -> None:
        self._buffer.append(data)  # first: a recovery under way replays it
        if self._recovery is not None:
            await self._wait_recovery()
            return
        try:
            await self._inner.send_audio(data)
        except UpstreamError as exc:
            await self._recover_from(exc)

    def ready(self) -> bool:
        return self._recovery is None and self._inner.ready()

    def put_audio(self, data: bytes) -> None:
        self._buffer.append(data)
        self._inner.put_audio(data)

    async def update(self, settings: dict[str, Any]) -> None:
        merged = self._settings.merged(settings)  # refused before anything is kept or sent
        await self._control(lambda stream: stream.update(settings), then=lambda: self._settings.keep(merged))

    async def send_event(self, event: dict[str, Any]) -> None:
        await self._control(lambda stream: stream.send_event(event))

    def unsent_events(self) -> list[tuple[dict[str, Any], int]]:
        return self._inner.unsent_events()

    async def finalize(self) -> None:
        self._ended_input = "finalize"
        await self._control(self._end_input_on)

    async def stop(self) -> None:
        self._ended_input = "stop"
        await self._control(self._end_input_on)

    async def items(self) -> AsyncIterator[UpstreamItem | Recovered]:
        while True:
            if self._notice is not None:
                notice, self._notice = self._notice, None
                yield notice
            inner: UpstreamStream = self._inner
            failure: UpstreamError | None = None
            try:
                async for item in inner.items():
                    if inner is not self._inner:
                        break  # replaced (a recovery noticed by the sending side, a rotation)
                    for out in self._relayed(item):
                        yield out
                    if isinstance(item, DataflowEvent) and item.final and self._rotation_due():
                        await self._recover_from(None)  # at a silence boundary, right after a final result
                else:
                    if inner is self._inner:
                        if self._ended_input is not None or self._final_result:
                            return  # Data Flow finished the session: the normal end
                        failure = UpstreamUnavailable("Data Flow ended the stream before the audio did")
            except UpstreamError as exc:  # kept in a local of this frame: not with this frame in its traceback
                failure = exc.detached() if inner is self._inner else None
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if inner is self._inner or (task is not None and task.cancelling()):
                    raise
                # grpc raises CancelledError from a call the swap cancelled: that stream is done with
            if failure is not None and self._ended_input is not None and self._final_result:
                log.info("an upstream stream ended with an error (%s) after its final result", failure.error_code.value)
                return  # the client has every result: the session's normal end, not a failure to recover
            if failure is not None:
                await self._recover_from(failure)

    def cancel(self) -> None:
        self._torn_down.set()
        if self._recovery is not None:
            self._recovery.cancel()
        self._inner.cancel()

    # --- recovery ------------------------------------------------------------------------------------

    def _rotation_due(self) -> bool:  # not once the input ended: that stream is about to end
        return self._rotation.due() and self._recovery is None and self._ended_input is None

    async def _control(self, send: Send, then: Callable[[], None] = lambda: None) -> None:
        """``send`` on the current stream; ``then`` once it is sent, or before a recovery (which re-sends it)."""
        if self._recovery is not None:
            await self._wait_recovery()
        try:
            await send(self._inner)
        except UpstreamError as exc:
            then()
            await self._recover_from(exc)
            return
        then()

    async def _end_input_on(self, stream: UpstreamStream) -> None:
        if self._ended_on is not stream:  # else a recovery already ended the input of the stream it made
            self._ended_on = stream
            await (stream.stop() if self._ended_input == "stop" else stream.finalize())

    async def _wait_recovery(self) -> None:
        recovery = self._recovery
        assert recovery is not None
        self._pauses += 1
        try:
            await asyncio.shield(recovery)
        except asyncio.CancelledError:
            if not recovery.cancelled() or (task := asyncio.current_task()) is None or task.cancelling():
                raise
            raise UpstreamUnavailable("the upstream stream was closed") from None  # torn down: typed, no trace

    async def _recover_from(self, cause: UpstreamError | None) -> None:
        """Move to a new stream (once, however many sides noticed); raises ``cause`` when that fails."""
        if self._gave_up is not None:
            raise self._gave_up.detached()
        if self._torn_down.is_set():
            raise UpstreamUnavailable("the upstream stream was closed")
        retryable = isinstance(cause, UpstreamUnavailable) and self._policy.attempts > 0
        self.failures.failed(cause, self._inner, recovering=retryable)  # once, however many sides noticed it
        if cause is not None and not retryable:
            raise cause.detached()
        if self._recovery is None:
            held_from = self._buffer.end  # audio after this waits for the new stream (the old has the rest)
            self._recovery = asyncio.create_task(self._reopen(cause, held_from), name="upstream-recovery")
        await self._wait_recovery()

    async def _reopen(self, cause: UpstreamError | None, held_from: int) -> None:
        assert self._request is not None
        began = time.monotonic()
        self._budget.begin(fresh=cause is None)
        while (wait_s := self._budget.next_wait()) is not None:
            await asyncio.sleep(wait_s)
            inner = self._opener.stream(self._audio, deadline_s=self._deadline_s)
            try:
                replayed_from, lost, resent = await self._resume_on(inner, held_from)
            except UpstreamError as exc:
                inner.cancel()
                if cause is None:  # a rotation: one try, and the old stream goes on (a back-off, then again)
                    await self._rotation_failed(held_from, exc)
                    return
                self.failures.reopen_failed(exc)
                if isinstance(exc, UpstreamUnavailable):
                    continue
                self._recovery, self._gave_up = None, exc.detached()
                raise
            except BaseException:
                inner.cancel()
                self._recovery = None
                raise
            old, self._inner, self._recovery = self._inner, inner, None  # no await since the replay caught up
            old.cancel()
            self._swallow_responses += resent
            self._base_bytes, self._timeline.base_ms = replayed_from, self._audio.bytes_to_ms(replayed_from)
            self._budget.recovered()
            self._rotation.opened()
            self.recoveries += 1
            self._notice = Recovered(
                reason="failure" if cause is not None else "rotation",
                gap_ms=round((time.monotonic() - began) * 1000, 1),
                replayed_ms=round(self._audio.bytes_to_ms(self._buffer.end - replayed_from), 1),
                lost_ms=round(self._audio.bytes_to_ms(lost), 1),
                attempts=self._budget.used,
            )
            return
        if cause is not None:
            self._recovery, self._gave_up = None, cause.detached()
            raise cause.detached()
        await self._rotation_failed(held_from, None)

    async def _rotation_failed(self, held_from: int, error: UpstreamError | None) -> None:
        """A rotation that could not be made: the old stream goes on, with the audio held meanwhile."""
        self._rotation.failed()
        self.failures.rotation_failed(error)
        with contextlib.suppress(UpstreamError):  # the old stream failing now is noticed as any failure
            await replay(self._inner, self._buffer, held_from)
        self._recovery = None  # no await since the last read: nothing more is held

    async def _resume_on(self, inner: UpstreamStream, held_from: int) -> tuple[int, int, int]:
        """Start ``inner`` as the session started and replay what is not yet recognised, with the events the
        old stream never wrote at their places. Returns where the replay began, the bytes it should have
        begun earlier with (older than the buffer: lost), and the Updates it re-sent (their answers are not
        the client's)."""
        assert self._request is not None
        await inner.start(self._request)
        resent = int(bool(self._settings.current))
        if resent:
            await inner.update(dict(self._settings.current))
        wanted = self._audio.ms_to_bytes(self._timeline.finished_at())
        start = max(self._buffer.start, wanted)
        # Audio queued after an unsent event had not reached the old stream either: it ends at held_from.
        await replay(inner, self._buffer, start, [(held_from - after, e) for e, after in self._inner.unsent_events()])
        if self._ended_input is not None:
            await self._end_input_on(inner)
        return start, start - wanted, resent

    def _relayed(self, item: UpstreamItem | Recovered) -> Iterator[UpstreamItem | Recovered]:
        """``item`` on the session's timeline, unless the client already had it."""
        if isinstance(item, DataflowResponse) and self._swallow_responses and item.name == "UpdateResponse":
            self._swallow_responses -= 1
            return
        if isinstance(item, DataflowEvent):
            self._final_result = self._final_result or item.name == FINAL_RESULT
            if (placed := self._timeline.placed(item, recovered=self.recoveries > 0)) is not None:
                yield placed
            return
        yield item
