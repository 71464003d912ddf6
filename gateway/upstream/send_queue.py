"""What one upstream stream still has to send, in order: audio merged into messages, and control
messages between them.

A grpc.aio write costs about 50 µs of CPU (and as much again in the receiving server) whatever its
size, so audio that queues up while a write is in flight is merged into one message (bounded by
``upstream_coalesce_ms``), and under load each stream holds its audio a little so that the process
as a whole stays near ``upstream_write_rate`` writes per second: a few streams forward every client
frame at once; a thousand hold up to ``upstream_max_write_interval_ms`` of audio each. A held
message goes as soon as it is full, or as soon as a control message queues behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from gateway.audio.convert import rechunk
from gateway.audio.format import AudioFormat
from gateway.dataflow.messages import utf8_size
from gateway.settings import Settings
from gateway.upstream.contract import ContentType

#: Shorter holds are not worth a timer: the loop's clock resolution is 1 ms, so a sub-millisecond
#: sleep costs a whole tick per write (an upload of an hour's audio would wait seconds for nothing).
_LEAST_HOLD_S = 0.001
#: Load-based holds grow in steps of Data Flow's recommended chunk (and the usual client frame).
_MERGE_STEP_S = 0.02
_STEPS_PER_S = 50


class HoldPolicy:
    """How long one stream may hold audio to merge it, given how many streams the process has."""

    def __init__(self, settings: Settings) -> None:
        self._least_s = settings.upstream_write_interval_ms / 1000
        self._most_s = max(self._least_s, settings.upstream_max_write_interval_ms / 1000)
        self._write_rate = settings.upstream_write_rate

    def hold_s(self, active_streams: int) -> float:
        """Each stream's share of the process's write rate, in whole 20 ms steps and at least two.

        A hold near a client's frame period delays frames while merging few (25 ms against 20 ms
        frames merges one write in five; 20 ms lets jitter push every frame up to a frame late),
        while a hold of k frames merges k frames into every write it delays.
        """
        if self._write_rate <= 0:
            return self._least_s
        steps = active_streams * _STEPS_PER_S // self._write_rate  # integers: exact at every boundary
        if steps < 2:
            steps = 0
        return min(self._most_s, max(self._least_s, steps * _MERGE_STEP_S))


Outgoing = tuple[ContentType, bytes | str]


class SendQueue:
    """One stream's outgoing messages; ``next()`` is for its single writer task."""

    def __init__(self, audio: AudioFormat, settings: Settings, hold_s: Callable[[], float]) -> None:
        self._audio = audio
        self._frame_bytes = audio.frame_bytes
        self._merge_bytes = max(audio.frame_bytes, audio.ms_to_bytes(settings.upstream_coalesce_ms))
        self.buffer_limit = max(self._merge_bytes, audio.ms_to_bytes(settings.upstream_buffer_ms))
        self._hold_s = hold_s
        self._items: deque[tuple[ContentType, bytearray | str, float]] = deque()  # with the time queued
        self.pending_audio = 0  # accepted, not yet written
        self.pending_control = 0  # bytes of control messages (events, updates) not yet written
        self.control_limit = settings.upstream_control_buffer_bytes
        self._has_work = asyncio.Event()
        self._holding_for = 0  # while the writer holds partial audio: the byte count that ends the hold
        self._hold_over = asyncio.Event()
        self.has_space = asyncio.Event()
        self.has_space.set()
        self.closed = False  # Finalize or Stop is queued: nothing follows it

    def put_audio(self, data: bytes) -> None:
        """Whole-sample audio, merged into the last queued message while it has room."""
        if len(data) % self._frame_bytes:
            raise ValueError("audio must be whole sample frames")
        now = time.monotonic()
        pieces = rechunk(data, self._frame_bytes, self._merge_bytes) if len(data) > self._merge_bytes else [data]
        for piece in pieces:
            tail = self._items[-1][1] if self._items else None
            if isinstance(tail, bytearray) and len(tail) + len(piece) <= self._merge_bytes:
                tail.extend(piece)
            else:
                self._items.append((ContentType.AUDIO, bytearray(piece), now))
        self.pending_audio += len(data)
        self._has_work.set()
        if self._holding_for and (len(self._items) > 1 or len(self._items[0][1]) >= self._holding_for):
            self._hold_over.set()  # the held message is full: send it now, not at the hold's deadline
        if self.pending_audio >= self.buffer_limit:
            self.has_space.clear()

    def put_text(self, kind: ContentType, text: str) -> None:
        """A control message; its bytes count against ``control_limit`` until written (so a client that
        floods events while Data Flow is slow is paused like one that floods audio)."""
        self._items.append((kind, text, time.monotonic()))
        self.pending_control += utf8_size(text)  # as Data Flow gets it: not characters
        self._has_work.set()
        self._hold_over.set()  # a control message (say, Finalize) does not wait behind held audio
        if self.pending_control >= self.control_limit:
            self.has_space.clear()

    def unsent(self, kind: ContentType) -> list[tuple[str, int]]:
        """The queued messages of ``kind``, oldest first, each with the bytes of audio queued after it."""
        found, after = [], 0
        for item_kind, payload, _ in reversed(self._items):
            if isinstance(payload, bytearray):
                after += len(payload)
            elif item_kind is kind:
                found.append((payload, after))
        return found[::-1]

    async def next(self) -> Outgoing | None:
        """The next message to write, once it is due (audio may be held to merge more into it); None once
        the queue is :attr:`closed` and all of it was written."""
        while not self._items:
            if self.closed:
                return None
            self._has_work.clear()
            await self._has_work.wait()
        await self._hold()
        kind, payload, _ = self._items.popleft()
        return kind, bytes(payload) if isinstance(payload, bytearray) else payload

    def written(self, audio_bytes: int, control_bytes: int = 0) -> None:
        """The writer sent a message carrying ``audio_bytes`` of audio or ``control_bytes`` of control."""
        self.pending_audio -= audio_bytes
        self.pending_control -= control_bytes
        if self.pending_audio < self.buffer_limit and self.pending_control < self.control_limit:
            self.has_space.set()

    def written_text(self, text: str) -> None:
        """The writer sent control message ``text`` (counted as :meth:`put_text` counted it)."""
        self.written(0, utf8_size(text))

    async def _hold(self) -> None:
        """Until the head holds ``hold`` of audio, something queues behind it, or its first bytes have
        waited ``hold``: k merged 20 ms frames wait (k-1)*10 ms on average, not the k*10 ms of a fixed
        write interval."""
        _, head, queued_at = self._items[0]
        if not isinstance(head, bytearray) or len(self._items) > 1 or len(head) >= self._merge_bytes:
            return
        hold = self._hold_s()
        target = min(self._merge_bytes, self._audio.ms_to_bytes(hold * 1000))
        remaining = queued_at + hold - time.monotonic()
        if len(head) >= target or remaining <= _LEAST_HOLD_S:
            return
        self._holding_for = target
        self._hold_over.clear()
        # A timer that ends the wait as a fill or a control message would: no cancellation (and no
        # exception) per held message, as a timeout would cost.
        timer = asyncio.get_running_loop().call_later(remaining, self._hold_over.set)
        try:
            await self._hold_over.wait()
        finally:
            timer.cancel()
            self._holding_for = 0
