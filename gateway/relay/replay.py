"""The audio a recovering stream can send again (:mod:`gateway.relay.recovery`)."""

from __future__ import annotations

from collections import deque


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
