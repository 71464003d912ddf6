"""Client audio on its way to Data Flow: held to the rate limit, checked against the audio limits,
converted to the upstream format and counted — by the session's feed, which may wait, or at once on
the WebSocket fast path when nothing would have to wait."""

from __future__ import annotations

import time

from gateway.audio.convert import AudioConverter
from gateway.errors import ErrorCode, InvalidState, LimitError
from gateway.relay.limits import LimitWatch
from gateway.relay.stream import UpstreamStream


class AudioIntake:
    def __init__(self, watch: LimitWatch, converter: AudioConverter, stream: UpstreamStream) -> None:
        self.watch, self.converter, self.stream = watch, converter, stream
        self.bytes_in = 0  # client bytes accepted, in the client's format

    async def pace(self, length: int) -> None:
        """Hold the caller while ``length`` more bytes would outrun the rate limit."""
        await self.watch.pace(self.bytes_in + length)

    async def feed(self, data: bytes) -> LimitError | None:
        """Accept, convert and send ``data`` (waits while Data Flow's buffer is full); the limit it reached.
        Raises the stream's errors (UpstreamError; InvalidState once the input is closed)."""
        before = self.bytes_in
        self.bytes_in += len(data)
        allowed, limit = self.watch.accept(before, len(data))
        converted = self.converter.convert(data if allowed == len(data) else data[:allowed])
        if converted:
            await self.stream.send_audio(converted)
        return limit

    def ready_for(self, most_bytes: int) -> bool:
        """Would a feed of up to ``most_bytes`` neither wait (pacing, Data Flow's buffer) nor meet a limit?"""
        return self.stream.ready() and self.watch.free_for(self.bytes_in + most_bytes, time.monotonic())

    def take(self, data: bytes) -> None:
        """A feed without any wait: only right after :meth:`ready_for` said True."""
        self.bytes_in += len(data)
        converted = self.converter.convert(data)
        if converted:
            self.stream.put_audio(converted)

    def misaligned(self) -> InvalidState | None:
        """What the client is told when its audio ends inside a sample (those bytes are dropped)."""
        pending = self.converter.pending_bytes
        if not pending:
            return None
        message = f"{pending} trailing bytes did not form a whole sample and were dropped"
        return InvalidState(message, code=ErrorCode.MISALIGNED_AUDIO)

    async def end(self, *, stop: bool) -> None:
        """The client's audio is over: send what the converter still holds (not on stop), then end the input."""
        if not stop:
            tail = self.converter.flush()
            if tail:
                await self.stream.send_audio(tail)
        await (self.stream.stop() if stop else self.stream.finalize())
