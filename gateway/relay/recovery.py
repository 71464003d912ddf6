"""An upstream stream that survives Data Flow failing under it.

:class:`RecoveringStream` is what the session streams to. It keeps the audio of the last
``GATEWAY_UPSTREAM_REPLAY_MS`` (:class:`ReplayBuffer`) and, from Data Flow's own final results, how
far the audio is already recognised. When the stream it rides fails with a retryable cause (the
connection dropped or was retired, a Data Flow node restarted: ``UpstreamUnavailable``) it opens a
new one with the same Start, re-sends the last settings update, replays the audio from the end of
the last final result, and goes on: finished utterances are not repeated and the one in flight is
not lost. Event times from a later stream are shifted onto the session's own timeline, and results
the client already had are not sent again. Attempts are bounded in count and time, with back-off;
a cause that a retry cannot cure (a refused credential or Start, a timeout) is never retried.

With ``GATEWAY_UPSTREAM_MAX_STREAM_S`` set, the same move is made on purpose, right after a final
result, before a provider's limit on a stream's length.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import FINAL_RESULT, DataflowEvent, DataflowResponse, StartRequest, UpstreamItem
from gateway.errors import UpstreamError, UpstreamUnavailable
from gateway.relay.replay import ReplayBuffer
from gateway.relay.stream import Recovered, StreamOpener, UpstreamStream
from gateway.settings import Settings

#: Waits before each attempt to reopen (the first at once: a retired connection is no outage).
BACKOFF_S = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
REPLAY_CHUNK_BYTES = 32 * 1024


def open_stream(opener: StreamOpener, audio: AudioFormat, deadline_s: float, settings: Settings) -> UpstreamStream:
    """The stream a session streams to: recovering, unless recovery is turned off."""
    if settings.upstream_replay_ms <= 0 or settings.upstream_recovery_attempts <= 0:
        return opener.stream(audio, deadline_s=deadline_s)
    policy = RecoveryPolicy(
        settings.upstream_replay_ms, settings.upstream_recovery_attempts, settings.upstream_recovery_window_s,
        settings.upstream_max_stream_s,
    )  # fmt: skip
    return RecoveringStream(opener, audio, deadline_s, policy)


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    replay_ms: float  # audio kept for a replay (0: no recovery)
    attempts: int  # reopen attempts per failure
    window_s: float  # time for all of them
    max_stream_s: float | None = None  # rotate to a new stream after this long (at a final result)


class RecoveringStream:
    """An :class:`UpstreamStream` over a series of real ones (see the module's docstring)."""

    def __init__(self, opener: StreamOpener, audio: AudioFormat, deadline_s: float, policy: RecoveryPolicy) -> None:
        self._opener, self._audio, self._deadline_s, self._policy = opener, audio, deadline_s, policy
        self._inner = opener.stream(audio, deadline_s=deadline_s)
        self._buffer = ReplayBuffer(audio.ms_to_bytes(policy.replay_ms))
        self._request: StartRequest | None = None
        self._settings: dict[str, Any] = {}  # every update so far, merged: a new stream gets them again
        self._base_ms = 0.0  # where the current stream's time 0 is on the session's timeline
        self._base_bytes = 0
        self._finished_ms: dict[int, float] = {}  # per channel: the end of the last final result
        self._recovery: asyncio.Task[None] | None = None
        self._notice: Recovered | None = None  # for the client, when the reading side gets to it
        self._final_result = False  # Data Flow said the session is over
        self._recovered_at = -1e9
        self._gave_up: UpstreamError | None = None
        self._chain_began, self._chain_attempts = 0.0, 0
        self._ended_input: str | None = None  # "finalize" or "stop" once the client ended its audio
        self._opened_at = time.monotonic()
        self._swallow_responses = 0  # answers to what a recovery re-sent: the client did not ask
        self._pauses = 0
        self.recoveries = 0

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
        return await self._inner.start(request)  # a first start that fails is reported as it is

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
        self._settings.update(settings)
        await self._control(lambda stream: stream.update(settings))

    async def send_event(self, event: dict[str, Any]) -> None:
        await self._control(lambda stream: stream.send_event(event))

    async def finalize(self) -> None:
        self._ended_input = "finalize"
        await self._control(lambda stream: stream.finalize())

    async def stop(self) -> None:
        self._ended_input = "stop"
        await self._control(lambda stream: stream.stop())

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
            except UpstreamError as exc:
                failure = exc if inner is self._inner else None
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if inner is self._inner or (task is not None and task.cancelling()):
                    raise
                # grpc raises CancelledError from a call the swap cancelled: that stream is done with
            if failure is not None:
                await self._recover_from(failure)

    def cancel(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
        self._inner.cancel()

    # --- recovery ------------------------------------------------------------------------------------

    def _rotation_due(self) -> bool:
        limit = self._policy.max_stream_s
        return limit is not None and self._recovery is None and time.monotonic() - self._opened_at >= limit

    async def _control(self, send: Callable[[UpstreamStream], Awaitable[None]]) -> None:
        if self._recovery is not None:
            await self._wait_recovery()
        try:
            await send(self._inner)
        except UpstreamError as exc:
            await self._recover_from(exc)

    async def _wait_recovery(self) -> None:
        assert self._recovery is not None
        self._pauses += 1
        await asyncio.shield(self._recovery)

    async def _recover_from(self, cause: UpstreamError | None) -> None:
        """Move to a new stream (once, however many sides noticed); raises ``cause`` when that fails."""
        if self._gave_up is not None:
            raise self._gave_up
        if cause is not None and (not isinstance(cause, UpstreamUnavailable) or self._policy.attempts < 1):
            raise cause
        if self._recovery is None:
            self._recovery = asyncio.create_task(self._reopen(cause), name="upstream-recovery")
        await self._wait_recovery()

    async def _reopen(self, cause: UpstreamError | None) -> None:
        assert self._request is not None
        began = time.monotonic()
        # A stream that fails again within the window after a recovery continues that recovery's
        # budget: a Data Flow that keeps failing every session ends it, as without recovery.
        if cause is None or began - self._recovered_at > self._policy.window_s:
            self._chain_began, self._chain_attempts = began, 0
        while self._chain_attempts < min(self._policy.attempts, len(BACKOFF_S)):
            wait_s = BACKOFF_S[self._chain_attempts]
            self._chain_attempts += 1
            attempt = self._chain_attempts
            if time.monotonic() + wait_s - self._chain_began > self._policy.window_s:
                break
            await asyncio.sleep(wait_s)
            inner = self._opener.stream(self._audio, deadline_s=self._deadline_s)
            try:
                replayed_from, lost = await self._resume_on(inner)
            except UpstreamUnavailable:
                inner.cancel()
                continue
            except BaseException:
                inner.cancel()
                raise
            old, self._inner, self._recovery = self._inner, inner, None  # no await since the replay caught up
            old.cancel()
            self._base_bytes, self._base_ms = replayed_from, self._audio.bytes_to_ms(replayed_from)
            self._opened_at = self._recovered_at = time.monotonic()
            self.recoveries += 1
            self._notice = Recovered(
                reason="failure" if cause is not None else "rotation",
                gap_ms=round((time.monotonic() - began) * 1000, 1),
                replayed_ms=round(self._audio.bytes_to_ms(self._buffer.end - replayed_from), 1),
                lost_ms=round(self._audio.bytes_to_ms(lost), 1),
                attempts=attempt,
            )
            return
        self._recovery = None
        if cause is not None:
            self._gave_up = cause
            raise cause
        self._opened_at = time.monotonic()  # a rotation that could not be made: the old stream goes on

    async def _resume_on(self, inner: UpstreamStream) -> tuple[int, int]:
        """Start ``inner`` as the session started and replay what is not yet recognised. Returns where the
        replay began and the bytes it should have begun earlier with (older than the buffer: lost)."""
        assert self._request is not None
        await inner.start(self._request)
        if self._settings:
            await inner.update(dict(self._settings))
            self._swallow_responses += 1
        wanted = self._audio.ms_to_bytes(self._finished_at())
        start = max(self._buffer.start, wanted)
        position = start
        while chunk := self._buffer.read(position, REPLAY_CHUNK_BYTES):
            await inner.send_audio(chunk)
            position += len(chunk)
        if self._ended_input is not None:
            await (inner.stop() if self._ended_input == "stop" else inner.finalize())
        return start, start - wanted

    def _finished_at(self) -> float:
        """Where the audio is recognised up to on the session's timeline: the end of the last final
        result, on the channel that is furthest behind."""
        return min((self._finished_ms.get(c, 0.0) for c in range(self._audio.channels)), default=0.0)

    def _relayed(self, item: UpstreamItem | Recovered) -> Iterator[UpstreamItem | Recovered]:
        """``item`` on the session's timeline, unless the client already had it."""
        if isinstance(item, DataflowResponse) and self._swallow_responses and item.name == "UpdateResponse":
            self._swallow_responses -= 1
            return
        if isinstance(item, DataflowEvent) and item.name == FINAL_RESULT:
            self._final_result = True
        if isinstance(item, DataflowEvent) and item.end_ms >= 0:
            if self._base_ms:
                start = item.start_ms + round(self._base_ms) if item.start_ms >= 0 else item.start_ms
                item = dataclasses.replace(item, start_ms=start, end_ms=item.end_ms + round(self._base_ms))
            finished = self._finished_ms.get(item.channel)
            if self.recoveries and finished is not None and item.end_ms <= finished:
                return  # recognised before the recovery: the replay began a little earlier on another channel
            if item.final:
                self._finished_ms[item.channel] = max(finished or 0.0, float(item.end_ms))
        yield item
