"""The audio a recovering stream can send again (:mod:`gateway.relay.recovery`), and its sending."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from gateway.relay.stream import UpstreamStream

REPLAY_CHUNK_BYTES = 32 * 1024


class ReplayBuffer:
    """The last ``max_bytes`` of audio sent upstream, addressed by byte offset on the session's timeline."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._chunks: deque[bytes] = deque()
        self.start = 0  # offset of the oldest byte kept
        self.end = 0  # offset after the newest byte

    def append(self, data: bytes) -> None:
        self._chunks.append(data)
        self.end += len(data)
        while self._chunks and self.end - self.start - len(self._chunks[0]) >= self.max_bytes:
            self.start += len(self._chunks.popleft())

    def read(self, offset: int, limit: int) -> bytes:
        """Up to ``limit`` bytes from ``offset`` (at least :attr:`start`), b"" at the end."""
        position = self.start
        for chunk in self._chunks:
            if position + len(chunk) > offset:
                skip = max(0, offset - position)
                return chunk[skip : skip + limit]
            position += len(chunk)
        return b""


async def replay(
    stream: UpstreamStream, buffer: ReplayBuffer, position: int, events: Iterable[tuple[int, dict[str, Any]]] = ()
) -> None:
    """Send ``stream`` the audio of ``buffer`` from ``position`` to its end (as it grows meanwhile), and each
    of ``events`` at its place, a byte offset on the same timeline (one past the end goes last)."""
    waiting = deque(sorted(events, key=lambda placed: placed[0]))  # stable: events of one place keep their order
    while True:
        while waiting and waiting[0][0] <= position:
            await stream.send_event(waiting.popleft()[1])
        limit = min(REPLAY_CHUNK_BYTES, waiting[0][0] - position) if waiting else REPLAY_CHUNK_BYTES
        if not (chunk := buffer.read(position, limit)):
            break
        await stream.send_audio(chunk)
        position += len(chunk)
    for _, event in waiting:
        await stream.send_event(event)
