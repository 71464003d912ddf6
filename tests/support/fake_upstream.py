"""An in-memory upstream for unit tests of the relay core (no gRPC, no sockets).

:class:`FakeOpener` and :class:`FakeStream` implement the Protocols of :mod:`gateway.relay.stream`.
A stream records what the session sends it (the Start, audio, updates, events, finalize/stop,
cancel) and lets the test play Data Flow: push items, end the stream normally or with a typed
error, fail or hold the start, fail every later send, and hold audio to simulate backpressure.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import (
    FINAL_RESULT,
    MILESTONE,
    DataflowEvent,
    DataflowResponse,
    StartRequest,
    UpstreamItem,
)
from gateway.errors import ErrorCode, GatewayError, InvalidState, UpstreamProtocolError, UpstreamUnavailable
from gateway.relay.stream import StreamOpener, UpstreamStream

__all__ = ["FakeOpener", "FakeStream", "event", "final_result", "milestone", "response"]


def event(name: str, channel: int = 0, **data: Any) -> DataflowEvent:
    raw = {"Event": {"Name": name, "Channel": channel, "Data": data}}
    return DataflowEvent(name, channel, 0, 0, None, [], dict(data), raw)


def milestone(text: str, channel: int = 0) -> DataflowEvent:
    return event(MILESTONE, channel, Text=text)


def final_result() -> DataflowEvent:
    return event(FINAL_RESULT)


def response(name: str, *, ok: bool = True, session_id: str | None = None) -> DataflowResponse:
    return DataflowResponse(name, ok, None if ok else "failed", session_id, {"MessageName": name})


@dataclass(frozen=True, slots=True)
class _End:
    error: GatewayError | None


class FakeStream:
    """One upstream stream, played by the test."""

    def __init__(self, opener: FakeOpener, audio: AudioFormat, deadline_s: float) -> None:
        self.audio = audio
        self.deadline_s = deadline_s
        self.start_request: StartRequest | None = None
        self.audio_chunks: list[bytes] = []
        self.updates: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.unsent: list[tuple[dict[str, Any], int]] = []  # what unsent_events says (the test sets it)
        self.finalized = False
        self.stopped = False
        self.cancel_calls = 0
        self.session_id: str | None = None
        self.audio_bytes_sent = 0
        self.buffered_bytes = 0
        self.pauses = 0
        #: Raised by every later send_audio, update, send_event, finalize and stop.
        self.send_error: GatewayError | None = None
        self.start_called = asyncio.Event()
        self.input_ended = asyncio.Event()  # finalize or stop arrived
        self._opener = opener
        self._start_held = opener.hold_start
        self._start_released = False
        self._start_wake = asyncio.Event()
        self._items: asyncio.Queue[UpstreamItem | _End] = asyncio.Queue()
        self._in_flight = False
        self._audio_flowing = asyncio.Event()
        self._audio_flowing.set()

    # --- what the test reads -------------------------------------------------------------------------

    @property
    def audio_received(self) -> bytes:
        return b"".join(self.audio_chunks)

    @property
    def cancelled(self) -> bool:
        return self.cancel_calls > 0

    # --- what the test plays -------------------------------------------------------------------------

    def push(self, *items: UpstreamItem) -> None:
        for item in items:
            self._items.put_nowait(item)

    def end(self, error: GatewayError | None = None) -> None:
        """Data Flow ends the stream: normally, or with ``error`` raised from ``items()``."""
        self._items.put_nowait(_End(error))

    def release_start(self) -> None:
        """Answer a held start (even if the stream was cancelled meanwhile: the answer was on its way)."""
        self._start_released = True
        self._start_wake.set()

    def hold_audio(self) -> None:
        """Data Flow stops taking audio: the next ``send_audio`` buffers and waits until :meth:`release_audio`."""
        self._audio_flowing.clear()

    def release_audio(self) -> None:
        self.audio_bytes_sent += self.buffered_bytes
        self.buffered_bytes = 0
        self._audio_flowing.set()

    async def delivered(self, timeout_s: float = 2.0) -> None:
        """Wait until the session has taken every pushed item and come back for the next."""
        async with asyncio.timeout(timeout_s):
            while not self._items.empty() or self._in_flight:
                await asyncio.sleep(0.001)

    # --- UpstreamStream ------------------------------------------------------------------------------

    @property
    def backpressured(self) -> bool:
        # As in DataflowStream: the buffer is full only while a send waits for room.
        return self.buffered_bytes > 0

    async def start(self, request: StartRequest) -> DataflowResponse:
        self.start_request = request
        self.start_called.set()
        if self._start_held:
            await self._start_wake.wait()
            if not self._start_released:
                raise UpstreamUnavailable("the upstream stream was cancelled while starting")
        if self._opener.start_error is not None:
            raise self._opener.start_error
        self.session_id = self._opener.session_id
        return response("StartResponse", session_id=self.session_id)

    async def send_audio(self, data: bytes) -> None:
        self._check_writable()
        if len(data) % self.audio.frame_bytes:
            raise ValueError("audio must be whole sample frames")
        self.audio_chunks.append(data)
        if self._audio_flowing.is_set():
            self.audio_bytes_sent += len(data)
            return
        self.buffered_bytes += len(data)
        self.pauses += 1
        await self._audio_flowing.wait()
        self._check_writable()

    def ready(self) -> bool:
        try:
            self._check_writable()
        except GatewayError:
            return False
        return self._audio_flowing.is_set()

    def put_audio(self, data: bytes) -> None:
        assert self.ready(), "put_audio without ready()"
        if len(data) % self.audio.frame_bytes:
            raise ValueError("audio must be whole sample frames")
        self.audio_chunks.append(data)
        self.audio_bytes_sent += len(data)

    async def update(self, settings: dict[str, Any]) -> None:
        self._check_writable()
        self.updates.append(settings)

    async def send_event(self, event: dict[str, Any]) -> None:
        self._check_writable()
        self.events.append(event)

    def unsent_events(self) -> list[tuple[dict[str, Any], int]]:
        return list(self.unsent)

    async def finalize(self) -> None:
        self._check_writable()
        self.finalized = True
        self.input_ended.set()

    async def stop(self) -> None:
        self._check_writable()
        self.stopped = True
        self.input_ended.set()

    async def items(self) -> AsyncIterator[UpstreamItem]:
        while True:
            item = await self._items.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            self._in_flight = True
            try:
                yield item
            finally:
                self._in_flight = False

    def cancel(self) -> None:
        self.cancel_calls += 1
        if self.cancel_calls == 1:
            self._start_wake.set()  # a held start fails, unless it was released
            self._audio_flowing.set()  # a sender waiting on backpressure wakes and fails
            self.end()

    def _check_writable(self) -> None:
        if self.send_error is not None:
            raise self.send_error
        if self.cancelled:
            raise UpstreamUnavailable("the upstream stream was cancelled")
        if self.session_id is None:
            raise UpstreamProtocolError("the upstream stream is not started")
        if self.finalized or self.stopped:
            raise InvalidState("the session is finalizing; nothing more can be sent", code=ErrorCode.SESSION_FINALIZING)


class FakeOpener:
    """Opens :class:`FakeStream` s; set ``start_error`` or ``hold_start`` before the session starts."""

    def __init__(self, *, session_id: str = "df-session-1") -> None:
        self.session_id = session_id
        self.start_error: GatewayError | None = None
        self.hold_start = False
        self.streams: list[FakeStream] = []

    def stream(self, audio: AudioFormat, *, deadline_s: float) -> FakeStream:
        stream = FakeStream(self, audio, deadline_s)
        self.streams.append(stream)
        return stream

    @property
    def last(self) -> FakeStream:
        assert self.streams, "no stream was opened"
        return self.streams[-1]


def _implements_the_protocols(opener: FakeOpener, stream: FakeStream) -> tuple[StreamOpener, UpstreamStream]:
    return opener, stream  # mypy checks the fakes against the Protocols here
