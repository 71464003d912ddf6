"""What Data Flow sends before its StartResponse, held until Start is answered: bounded.

The items go to the client's outbox once the session starts, so they are held to the bounds of that
outbox (GATEWAY_CLIENT_OUTBOX_BYTES, GATEWAY_CLIENT_EVENT_QUEUE): no more than a client could be
handed. Past them Data Flow is misbehaving (a hostile one sent 1 MiB events before answering and grew
one session by 1.6 GB in 8 s), and the start fails with upstream_protocol_error."""

from __future__ import annotations

from collections import deque

from gateway.dataflow.messages import UpstreamItem
from gateway.errors import UpstreamProtocolError


class EarlyItems:
    """Items in arrival order, with the bytes they came in (``bytes``), at most ``max_bytes`` and
    ``max_count``; everything up to those bounds is kept."""

    def __init__(self, max_bytes: int, max_count: int) -> None:
        self.max_bytes, self.max_count = max_bytes, max_count
        self.bytes = 0
        self._items: deque[tuple[UpstreamItem, int]] = deque()

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: UpstreamItem, size: int) -> None:
        """Hold ``item`` (``size`` bytes on the wire); past a bound, drop all held and raise."""
        if len(self._items) >= self.max_count or self.bytes + size > self.max_bytes:
            count, held = len(self._items) + 1, self.bytes + size
            self.clear()  # freed now, not when the session lets go of its stream
            raise UpstreamProtocolError(
                f"Data Flow sent {count} messages ({held} bytes) before answering Start: over what a session "
                f"holds for its client ({self.max_count} messages, {self.max_bytes} bytes; "
                "GATEWAY_CLIENT_EVENT_QUEUE, GATEWAY_CLIENT_OUTBOX_BYTES)"
            )
        self._items.append((item, size))
        self.bytes += size

    def popleft(self) -> UpstreamItem:
        item, size = self._items.popleft()
        self.bytes -= size
        return item

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0
