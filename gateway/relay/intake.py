"""Client audio on its way to Data Flow: held to the rate limit, checked against the audio limits,
converted to the upstream format and counted — by the session's feed, which may wait, or at once on
the WebSocket fast path when nothing would have to wait."""

from __future__ import annotations

import time

from gateway.audio.convert import AudioConverter
from gateway.errors import ErrorCode, InvalidState, LimitError
from gateway.relay.limits import LimitWatch
from gateway.relay.stream import UpstreamStream

#: On the pacing clock (``GATEWAY_MAX_AUDIO_RATE_X``) a message the gateway handles alone costs time too
#: (messages for Data Flow are bounded by its control buffer): a binary one that feeds no audio (audio
#: while AudioHook is paused: it went unpaced, 6 GB in 6 s) its length as audio, a text one (ignored, as a
#: Twilio mark: 75 000 a second took 76 % of a core; answered, as a ping) this much audio time, and 1 ms
#: more per TEXT_BYTES_PER_MS. At 2 ms, 1 500 answered pings a second per session: 20 sessions of one key
#: took a core and other tenants' events waited seconds. At 20, 150 a second at 3x (a client streaming in
#: real time has room for 100 a second beside its audio: real clients send a few).
MESSAGE_FLOOR_MS = 20
TEXT_BYTES_PER_MS = 1024
#: A message that feeds audio costs at least this much audio time: a message costs ~12 us of CPU whatever
#: it holds, and one-sample frames within the rate limit (24 000 a second at 8 kHz and 3x) kept a third of
#: a core busy. Real clients send 2.7 ms (128 samples at 48 kHz) or more.
AUDIO_FLOOR_MS = 1


class AudioIntake:
    def __init__(self, watch: LimitWatch, converter: AudioConverter, stream: UpstreamStream) -> None:
        self.watch, self.converter, self.stream = watch, converter, stream
        self.bytes_in = 0  # client bytes accepted, in the client's format
        self.overhead = 0  # pacing bytes charged beyond them (messages that fed no audio)
        self.floor_bytes = max(converter.src.ms_to_bytes(MESSAGE_FLOOR_MS), 1)
        self.audio_floor_bytes = max(converter.src.ms_to_bytes(AUDIO_FLOOR_MS), 1)
        self._text_bytes = converter.src.bytes_per_second / 1000 / TEXT_BYTES_PER_MS  # per character

    def cost(self, message: str | bytes, audio_bytes: int) -> int:
        """Pacing bytes a client message costs beyond the ``audio_bytes`` of audio it fed."""
        if audio_bytes:
            return max(self.audio_floor_bytes - audio_bytes, 0)
        if isinstance(message, str):
            return self.floor_bytes + int(len(message) * self._text_bytes)
        return len(message)

    async def pace(self, length: int, *, audio: bool = False) -> None:
        """Hold the caller while ``length`` more bytes would outrun the rate limit (``audio``: they feed it)."""
        await self.watch.pace(self.bytes_in + self.overhead + length, audio=audio)

    async def pace_audio(self, length: int) -> None:
        """:meth:`pace` for one message's ``length`` bytes of audio, charged at least AUDIO_FLOOR_MS."""
        short = max(self.audio_floor_bytes - length, 0)
        await self.pace(short + length, audio=True)
        self.overhead += short

    async def charge(self, message: str | bytes) -> None:
        """Count the cost of a client message that fed no audio, holding the caller while it outruns the limit."""
        if cost := self.cost(message, 0):
            await self.pace(cost)
            self.overhead += cost

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
        """Would a message feeding up to ``most_bytes`` (cost included) neither wait (pacing, Data Flow's
        buffer) nor meet a limit?"""
        total = self.bytes_in + self.overhead + most_bytes
        return self.stream.ready() and self.watch.free_for(total, time.monotonic())

    def take(self, data: bytes, message: str | bytes) -> None:
        """A feed without any wait, its message's cost charged: only right after :meth:`ready_for` said True."""
        self.overhead += self.cost(message, len(data))
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
